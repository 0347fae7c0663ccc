"""Plots and the written report of an audit table (matplotlib; no display needed)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repgeo.metrics import get

from .diagnostics import warning_line

__all__ = ["plot_heatmap", "plot_profile", "write_report"]


def _order(df: pd.DataFrame, column: str, attr: str) -> list[str]:
    listed = df.attrs.get(attr)
    present = list(dict.fromkeys(df[column]))
    if listed:
        return [x for x in listed if x in set(present)] + [x for x in present if x not in set(listed)]
    return present


def _select(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    sub = df[df["metric"] == metric]
    if sub.empty:
        raise ValueError(f"metric {metric!r} is not in the table; it holds {sorted(set(df['metric']))}")
    return sub


def _short(name: str) -> str:
    return name.replace("hidden_states.", "hs.")


def plot_heatmap(df: pd.DataFrame, metric: str, *, ax: Any = None, annotate: bool | None = None) -> Any:
    """Heatmap of ``metric`` over (teacher layer: rows, student layer: columns); returns the Axes.

    Colours run from worse (light) to better (dark) whatever the metric's direction; cells whose permutation
    p-value is >= 0.05 are marked with ``·`` after the value. Where the table has null floors (column
    ``floor``), each annotation shows the floor in brackets under the value and cells not beyond their floor
    (no more alike than with the stimuli shuffled) are hatched. ``annotate`` defaults to True up to 12 × 12
    cells.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sub = _select(df, metric)
    rows, cols = _order(sub, "teacher_layer", "teacher_layers"), _order(sub, "student_layer", "student_layers")
    grid = sub.pivot(index="teacher_layer", columns="student_layer", values="value").reindex(index=rows, columns=cols)
    pvals = sub.pivot(index="teacher_layer", columns="student_layer", values="p_value").reindex(index=rows,
                                                                                                columns=cols)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols) + 1.5, 1.0 + 0.55 * len(rows)))
    similarity = get(metric).kind == "similarity"
    cmap = "viridis" if similarity else "viridis_r"
    im = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, aspect="auto")
    ax.figure.colorbar(im, ax=ax, label=f"{metric} ({'higher' if similarity else 'lower'} = more alike)")
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
    ax.set_xlabel("student layer")
    ax.set_ylabel("teacher layer")
    ax.set_title(f"{metric}: teacher × student")
    if annotate is None:
        annotate = len(rows) <= 12 and len(cols) <= 12
    values = grid.to_numpy(dtype=float)
    floors = np.full_like(values, np.nan)
    if "floor" in sub:
        floors = (sub.pivot(index="teacher_layer", columns="student_layer", values="floor")
                  .reindex(index=rows, columns=cols).to_numpy(dtype=float))
    beyond = (values > floors) if similarity else (values < floors)
    for i, j in zip(*np.nonzero(np.isfinite(floors) & ~beyond), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="gray", lw=0))
    if np.isfinite(floors).any():
        ax.set_title(f"{metric}: teacher × student (hatched: not beyond the null floor)", fontsize=9)
    if annotate:
        lo, hi = np.nanmin(values), np.nanmax(values)
        mid = (lo + hi) / 2
        for i in range(len(rows)):
            for j in range(len(cols)):
                v, p, f = values[i, j], pvals.iat[i, j], floors[i, j]
                mark = "·" if (p is not None and not math.isnan(p) and p >= 0.05) else ""
                dark = (v > mid) if not similarity else (v < mid)
                text = f"{v:.2f}{mark}" + (f"\n({f:.2f})" if math.isfinite(f) else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if not math.isfinite(f) else 7,
                        color="white" if dark else "black")
    ax.figure.tight_layout()
    return ax


def plot_profile(df: pd.DataFrame, metric: str, *, ax: Any = None) -> Any:
    """``metric`` along the teacher's depth (x: teacher layer), one line per student layer, with the
    confidence band where the table has one and the null floor as a dashed line of the same colour; returns the
    Axes."""
    import matplotlib.pyplot as plt

    sub = _select(df, metric)
    rows, cols = _order(sub, "teacher_layer", "teacher_layers"), _order(sub, "student_layer", "student_layers")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.5))
    x = np.arange(len(rows))
    for s in cols:
        part = sub[sub["student_layer"] == s].set_index("teacher_layer").reindex(rows)
        (line,) = ax.plot(x, part["value"].to_numpy(float), marker="o", label=_short(s))
        lo, hi = part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
        if "floor" in part and np.isfinite(part["floor"].to_numpy(float)).any():
            ax.plot(x, part["floor"].to_numpy(float), ls="--", lw=1, color=line.get_color(),
                    label=f"{_short(s)} floor")
    ax.set_xticks(x, [_short(r) for r in rows], rotation=45, ha="right")
    ax.set_xlabel("teacher layer")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} along the teacher's depth")
    ax.legend(title="student layer", fontsize=8)
    ax.figure.tight_layout()
    return ax


def _best(sub: pd.DataFrame, metric: str) -> pd.DataFrame:
    similarity = get(metric).kind == "similarity"
    idx = sub.groupby("student_layer", sort=False)["value"].idxmax() if similarity else \
        sub.groupby("student_layer", sort=False)["value"].idxmin()
    return sub.loc[idx]


def write_report(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``audit.csv``, ``heatmap_<metric>.png`` per metric and ``report.md`` into ``out_dir``; returns the
    paths by name."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"csv": out / "audit.csv"}
    df.to_csv(paths["csv"], index=False)
    metrics = list(dict.fromkeys(df["metric"]))
    for m in metrics:
        ax = plot_heatmap(df, m)
        p = out / f"heatmap_{m}.png"
        ax.figure.savefig(p, dpi=120)
        plt.close(ax.figure)
        paths[f"heatmap_{m}"] = p
    a = df.attrs
    lines = [
        "# repgeo audit",
        "",
        f"- teacher: `{a.get('teacher_model', '?')}`; student: `{a.get('student_model', '?')}`",
        f"- stimuli: {a.get('n_stimuli', '?')} (rows: {a.get('n_rows', '?')}), pooling `{a.get('pooling', '?')}`, "
        f"mode `{a.get('mode', '?')}`",
        f"- uncertainty: {a.get('uncertainty', '?')}, level {a.get('ci', '?')}",
        f"- estimator: {a.get('estimator', '?')}; floor = the same estimator with the stimulus pairing broken "
        f"(mean of {a.get('n_floor', '?')} permutations)",
    ]
    if "p" in df:
        lines.append(f"- widths: teacher {sorted(set(df['p']))}, student {sorted(set(df['q']))}; effective rank "
                     f"(participation ratio) teacher {df['eff_rank_t'].min():.1f}–{df['eff_rank_t'].max():.1f}, "
                     f"student {df['eff_rank_s'].min():.1f}–{df['eff_rank_s'].max():.1f}")
    warning = warning_line(df)
    if warning:
        lines.append(f"- **{warning}**")
    if a.get("truncated") is not None:
        lines.append(f"- texts cut to {a.get('max_length')} tokens: {len(a.get('truncated', []))}"
                     + (f" (indices {a['truncated'][:20]})" if a.get("truncated") else ""))
    if a.get("dropped_empty"):
        lines.append(f"- empty texts dropped: {len(a['dropped_empty'])} (indices {a['dropped_empty'][:20]})")
    lines += ["", "## Best-matching teacher layer for each student layer", ""]
    for m in metrics:
        best = _best(df[df["metric"] == m], m)
        lines.append(f"**{m}** ({get(m).kind}):")
        lines.append("")
        lines.append("| student layer | teacher layer | value | floor | CI | p | n | flag |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for _, r in best.iterrows():
            floor = getattr(r, "floor", math.nan)
            lines.append(f"| {r.student_layer} | {r.teacher_layer} | {r.value:.4f} | "
                         f"{'' if math.isnan(floor) else format(floor, '.4f')} | "
                         f"[{r.ci_low:.4f}, {r.ci_high:.4f}] | {r.p_value:.3g} | {r.n} | {getattr(r, 'flag', '')} |")
        lines.append("")
        lines.append(f"![{m}](heatmap_{m}.png)")
        lines.append("")
    lines.append("Full table: `audit.csv`.")
    paths["report"] = out / "report.md"
    paths["report"].write_text("\n".join(lines) + "\n")
    return paths
