"""The first study's report (``benchmarks/results/distill_quality.md``): renders its stored JSON (``--preset cpu
--report``); the v2 protocol's report is :mod:`.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .regimes import GEOMETRIC

METHODS = ("ft", "kd", "kd+proj_mse", "kd+cka", "kd+procrustes", "kd+fg")  # the first study's methods


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"# Distillation quality — preset `{res['preset']}`", "",
             f"Command: `{command}` ({res['seconds'] / 60:.0f} min, {res['threads']} thread(s), {res['device']}).",
             "", "Test score, mean ± std over seeds (n = seeds): accuracy for the encoder regimes; for the instruct "
             "regimes ROUGE-L (or exact match) on held-out examples of the training tasks, and on a held-out task. "
             "Teacher and untrained student for reference.", ""]
    regimes = list(res["summary"])
    lines.append("| method | " + " | ".join(regimes) + " |")
    lines.append("|---" * (len(regimes) + 1) + "|")
    for m in METHODS:
        cells = []
        for g in regimes:
            s = res["summary"][g]["methods"].get(m)
            cells.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} (n={s['n']})" if s else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for who in ("teacher", "student_init"):
        lines.append(f"| *{who.replace('_', ' ')}* | "
                     + " | ".join(f"{100 * res['regimes'][g][who]['test']:.1f}" for g in regimes) + " |")
    lines += ["", "Paired differences in test score (points, geometric − reference) across seeds; comparisons where "
              "every seed scored the same for both methods are left out:", "",
              "| regime | comparison | diff | 95 % CI | p (t) | p (Wilcoxon) | d_z |", "|---|---|---|---|---|---|---|"]
    for g in regimes:
        best = res["summary"][g]["best_non_geometric"]
        for name, t in res["summary"][g]["tests"].items():
            if t["diff"] == 0 and t["ci_low"] == t["ci_high"] == 0:  # every seed scored alike: nothing to test
                continue
            ref = name.split(" vs ")[1]
            tag = " (best non-geometric)" if ref == best else ""
            lines.append(f"| {g} | {name}{tag} | {100 * t['diff']:+.2f} | [{100 * t['ci_low']:+.2f}, "
                         f"{100 * t['ci_high']:+.2f}] | {t['p_t']:.3g} | {t['p_wilcoxon']:.3g} | {t['d_z']:+.2f} |")
    if res["alpha_sweep"]:
        grid = next(iter(res["alpha_sweep"].values()))
        lines += ["", "α sweep (relative α; mean dev accuracy of the first regime; chosen α in bold):", "",
                  "| loss | " + " | ".join(f"α = {float(a):g}" for a in grid) + " |", "|---" * (1 + len(grid)) + "|"]
        for m, by_a in res["alpha_sweep"].items():
            cells = [(f"**{100 * v:.1f}**" if float(a) == res["alpha_chosen"][m] else f"{100 * v:.1f}")
                     for a, v in by_a.items()]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    else:
        lines += ["", f"α (relative, not swept): {res['alpha_chosen']}"]
    if res["ablations"]:
        lines += ["", "Ablations on the first regime (vs the same loss, pooled features, constant α; same seeds):", "",
                  "| variant | test acc | base | diff | p (t) |", "|---|---|---|---|---|"]
        for name, a in res["ablations"].items():
            lines.append(f"| {name} | {100 * a['mean']:.1f} | {100 * a['base_mean']:.1f} | {100 * a['diff']:+.2f} | "
                         f"{a['p_t']:.3g} |")
    return "\n".join(lines + _cost_and_geometry(res, regimes)) + "\n"


def _cost_and_geometry(res: dict[str, Any], regimes: list[str]) -> list[str]:
    """Per regime: seconds per step and the final geometry at the last mapped pair, with the probe it was measured
    on (rows, texts, widths: results written before the bias-aware probe have no such line)."""
    probed = any(res["summary"][g].get("geometry_probe") for g in regimes)
    how = ("(mean over seeds; bias-aware estimators on token rows grouped by text, "
           "`benchmarks/quality_study/geometry.py`)" if probed else "on the dev probe set (mean over seeds)")
    lines = ["", "Cost (median seconds per training step, teacher cached) and final geometry between the last mapped "
             f"layers {how}:", ""]
    for g in regimes:
        if " · " in g:  # a score view of a causal regime: same runs, same cost and geometry
            continue
        s = res["summary"][g]
        geo_keys = sorted({k for d in s["geometry"].values() for k in d})
        top = max((k.split("/")[1] for k in geo_keys), key=_pair_order)  # e.g. "s10_t30" after "s9_t27"
        last = [k for k in geo_keys if k.split("/")[1] == top]
        lines += [f"**{g}**", ""]
        probe = s.get("geometry_probe")
        if probe:
            p, q = probe["widths"].get(top, ["?", "?"])
            lines += [f"Probe: n = {probe['rows']} token rows of {probe['texts']} texts ({', '.join(probe['splits'])}; "
                      f"needed >= {probe['rows_needed']}), width teacher {p} / student {q} at {top}.", ""]
        lines += ["| method | s/step | " + " | ".join(last) + " |", "|---" * (2 + len(last)) + "|"]
        for m in METHODS:
            if m in s["sec_per_step"]:
                lines.append(f"| {m} | {s['sec_per_step'][m]:.3f} | "
                             + " | ".join(f"{s['geometry'][m].get(k, float('nan')):.3f}" for k in last) + " |")
        lines.append("")
    return lines


def _pair_order(pair: str) -> tuple[int, ...]:
    """``"s3_t6"`` -> ``(3, 6)``: mapped layer pairs in numeric order."""
    return tuple(int(part[1:]) for part in pair.split("_"))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(res["summary"])
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.6), squeeze=False)
    df = pd.DataFrame([r for r in res["runs"] if r["stage"] == "final"])
    for ax, g in zip(axes[0], regimes, strict=True):
        sub = df[df["regime"] == g]
        for i, m in enumerate(METHODS):
            acc = 100 * sub[sub["method"] == m]["test_acc"].to_numpy()
            if len(acc):
                color = "C3" if m.split("+")[-1] in GEOMETRIC else "C0"
                ax.scatter(np.full(len(acc), i) + np.linspace(-0.15, 0.15, len(acc)), acc, s=9, color=color, alpha=0.6)
                ax.errorbar(i, acc.mean(), yerr=acc.std(ddof=1) if len(acc) > 1 else 0, fmt="_", color="k",
                            capsize=4, markersize=14)
        ax.axhline(100 * res["regimes"][g]["teacher"]["test"], color="grey", ls="--", lw=1, label="teacher")
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=40, ha="right", fontsize=8)
        ax.set_title(g, fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
