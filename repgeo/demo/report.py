"""The demo's report folder and printed table.

Files: ``report.md`` (summary), ``accuracy.csv``, ``geometry.csv`` (mapped layer pairs), ``audit.csv`` (every
cell of every student), ``certificates.csv``, ``training_curves.csv``, ``geometry_curves.csv``, ``stages.csv``,
``settings.json``; figures ``heatmap_<metric>.png`` (one panel per student, shared colour scale),
``training_curves.png``, ``geometry_curves.png`` and ``counterexamples/*.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from repgeo.recipes.classifier import label_ids
from repgeo.recipes.scoring import accuracy_se, paired_difference

TABLE_METRICS = ("procrustes", "cka", "fg", "proj_mse")


def _hs(i: int) -> str:
    return f"hidden_states.{i}"


def accuracy_table(result: Any) -> pd.DataFrame:
    """One row per model: test accuracy, its binomial SE, and the paired difference to the KD-only student of the
    same width with its paired SE (the two were evaluated on the same test examples)."""
    y = label_ids(result.data.test["label"], result.data.labels)
    n = len(y)
    rows = [{"model": "teacher", "student": "", "method": "", "test_accuracy": result.teacher.accuracy,
             "se": accuracy_se(result.teacher.accuracy, n)}]
    if result.init_accuracy is not None:
        rows.append({"model": "init", "student": "wide", "method": "none (untrained student)",
                     "test_accuracy": result.init_accuracy, "se": accuracy_se(result.init_accuracy, n)})
    kd = {r.student: r for r in result.runs if r.method == "kd"}
    for r in result.runs:
        row = {"model": r.name, "student": r.student, "method": r.method, "test_accuracy": r.accuracy,
               "se": accuracy_se(r.accuracy, n), "alpha_eff": r.alpha_eff,
               "initial_feature_loss": r.initial_feature_loss, "seconds": r.seconds}
        base = kd.get(r.student)
        if base is not None and base is not r and n > 1:
            diff = paired_difference(r.predictions, base.predictions, y)
            row["delta_vs_kd"], row["delta_se"] = diff.delta, diff.se
        rows.append(row)
    return pd.DataFrame(rows)


def mapped_geometry(result: Any) -> pd.DataFrame:
    """Audit rows of the mapped (student layer, teacher layer) pairs, for every student."""
    if result.audit is None or not result.runs:
        return pd.DataFrame()
    maps = {r.name: r.layer_map for r in result.runs}
    maps.setdefault("init", result.runs[0].layer_map)
    parts = []
    for name, lm in maps.items():
        for s, t in lm.items():
            sub = result.audit[(result.audit["student"] == name) & (result.audit["student_layer"] == _hs(s))
                               & (result.audit["teacher_layer"] == _hs(t))]
            parts.append(sub.assign(pair=f"s{s}_t{t}"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _last_pair(result: Any) -> str:
    lm = result.runs[0].layer_map if result.runs else {}
    return f"s{max(lm)}_t{lm[max(lm)]}" if lm else ""


def _geometry_lookup(geo: pd.DataFrame, name: str, pair: str, metric: str, column: str = "value") -> float:
    sub = geo[(geo["student"] == name) & (geo["pair"] == pair) & (geo["metric"] == metric)]
    return float(sub[column].iloc[0]) if len(sub) and column in sub else math.nan


def _with_floor(value: float, floor: float) -> str:
    """``0.6200 (0.9100)``: a value and, in brackets, its null floor (blank when there is none)."""
    return f"{value:.4f}" + (f" ({floor:.4f})" if math.isfinite(floor) else "")


def format_table(result: Any) -> str:
    """The printed summary: accuracy per method, its gain over the student's initialisation (± paired SE), and
    the final geometry of the last mapped layer pair, each value
    with its null floor in brackets (the same estimator with the texts shuffled between teacher and student)."""
    acc = accuracy_table(result)
    geo = mapped_geometry(result)
    pair = _last_pair(result)
    present = set(result.audit["metric"]) if result.audit is not None else set()
    metrics = [m for m in TABLE_METRICS if m in present]
    w = 17
    head = f"{'model':22s} {'test acc':>8s} {'±SE':>6s} {'Δ vs init':>14s}" + "".join(f" {m:>{w}s}" for m in metrics)
    lines = [head, "-" * len(head)]
    gains = {} if result.vs_init is None else {r.model: (r.delta, r.se) for r in result.vs_init.itertuples()}
    for r in acc.itertuples():
        delta = f"{gains[r.model][0]:+.3f}±{gains[r.model][1]:.3f}" if r.model in gains else ""
        cells = [_with_floor(*(_geometry_lookup(geo, r.model, pair, m, c) for c in ("value", "floor")))
                 if r.model != "teacher" else "" for m in metrics]
        vals = "".join(f" {c:>{w}s}" for c in cells)
        lines.append(f"{r.model:22s} {r.test_accuracy:8.3f} {r.se:6.3f} {delta:>14s}{vals}")
    return "\n".join(lines)


def _estimator_note(geo: pd.DataFrame) -> str:
    """Which estimator the geometry table used, and the sample-size warning when a cell is flagged."""
    from repgeo.audit.diagnostics import warning_line

    est = set(geo["estimator"]) if "estimator" in geo else {"plugin"}
    text = ("bias-corrected (cross-fitted Procrustes, U-statistic FG, debiased CKA, held-out cross-fitted "
            "projection-MSE)." if est == {"corrected"} else
            "plug-in (biased when texts are not ≫ features; proj_mse is 0 whenever texts ≤ student width)."
            if est == {"plugin"} else f"mixed ({', '.join(sorted(est))}).")
    warning = warning_line(geo) if len(geo) else None
    return text + (f" {warning}." if warning else "")


def notes(result: Any) -> list[str]:
    """Plain-language reading of the numbers (noise level, chance, what moved)."""
    n = len(result.data.test)
    acc = accuracy_table(result)
    out = [f"chance (always the most frequent training label) = {result.data.chance:.3f} on {n} test examples"]
    runs = acc[acc["method"].isin([r.method for r in result.runs])]
    if "delta_se" in acc and runs["delta_se"].notna().any():
        se = float(runs["delta_se"].dropna().max())
        d = runs.dropna(subset=["delta_vs_kd"])
        resolved = d[(d["delta_vs_kd"].abs() > 2 * d["delta_se"])]
        spread = float(runs["test_accuracy"].max() - runs["test_accuracy"].min())
        verdict = ("no method differs from KD-only by more than 2 paired SE: at this size the accuracy differences "
                   "are noise" if resolved.empty else
                   "differs from KD-only by more than 2 paired SE: " + ", ".join(
                       f"{r.model} ({r.delta_vs_kd:+.3f})" for r in resolved.itertuples()))
        out.append(f"students span {spread:.3f} in accuracy; one accuracy has SE ≈ {runs['se'].max():.3f} and a "
                   f"paired difference SE ≈ {se:.3f}; {verdict}")
    geo = mapped_geometry(result)
    pair = _last_pair(result)
    students = set(geo["student"]) if len(geo) else set()
    if students & {"kd", "init"}:
        parts = []
        for m in ("cka", "procrustes"):
            if m not in set(geo["metric"]):
                continue
            best = {r.name: _geometry_lookup(geo, r.name, pair, m) for r in result.runs if r.student == "wide"}
            floor = _geometry_lookup(geo, "init", pair, m, "floor")
            ref = [f"kd {_geometry_lookup(geo, 'kd', pair, m):.3f}"] if "kd" in students else []
            if "init" in students:
                ref.append(f"init {_geometry_lookup(geo, 'init', pair, m):.3f}"
                           + (f", its floor {floor:.3f}" if math.isfinite(floor) else ""))
            parts.append(f"{m} at {pair}: " + ", ".join(f"{k} {v:.3f}" for k, v in best.items())
                         + f" ({'; '.join(ref)})")
        out.append("geometry of the last mapped pair on held-out texts — " + "; ".join(parts))
    if result.certificates is not None:
        c = result.certificates
        out.append(f"counterexample certificates: {int(c['passed'].sum())}/{len(c)} claims pass "
                   f"({c['counterexample'].nunique()} constructions)")
    return out


# -------------------------------------------------------------------------------------------------- figures


def _training_frame(result: Any) -> pd.DataFrame:
    rows = []
    for r in result.runs:
        for h in r.history:
            if "loss" in h and "step" in h:
                rows.append({"model": r.name, "step": h["step"], **{k: h[k] for k in
                             ("loss", "loss_task", "loss_kd", "loss_feature") if k in h}})
    frame = pd.DataFrame(rows)
    if len(frame) and "loss_feature" in frame:
        l0 = {r.name: r.initial_feature_loss for r in result.runs}
        frame["loss_feature_rel"] = frame["loss_feature"] / frame["model"].map(l0)
    return frame


def _geometry_frame(result: Any) -> pd.DataFrame:
    parts = [r.geometry.assign(model=r.name) for r in result.runs if r.geometry is not None and len(r.geometry)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plot_training(result: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    frame = _training_frame(result)
    panels = [("teacher fine-tune: CE", None), ("loss_task", "student: task CE"), ("loss_kd", "student: KD"),
              ("loss_feature_rel", "student: feature loss / its initial value")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    ax = axes[0][0]
    curve = pd.DataFrame(result.teacher.curve)
    if len(curve):
        w = max(1, len(curve) // 15)
        ax.plot(curve["step"], curve["loss"], alpha=0.3, color="tab:gray")
        ax.plot(curve["step"], curve["loss"].rolling(w, min_periods=1).mean(), color="black")
    else:
        ax.text(0.5, 0.5, "no fine-tuning curve", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(panels[0][0], fontsize=10)
    ax.set_xlabel("step")
    for ax, (col, title) in zip(axes[0][1:], panels[1:], strict=True):
        if len(frame) and col in frame:
            for name, g in frame.groupby("model", sort=False):
                if g[col].notna().any():
                    ax.plot(g["step"], g[col], marker=".", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    if len(frame):
        axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_geometry_curves(result: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    frame = _geometry_frame(result)
    pair = _last_pair(result)
    metrics = [m for m in TABLE_METRICS if len(frame) and m in set(frame["metric"])] or ["procrustes"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        if len(frame):
            sub = frame[(frame["metric"] == m) & (frame["pair"] == pair)]
            for name, g in sub.groupby("model", sort=False):
                ax.plot(g["step"], g["value"], marker="o", ms=3, label=name)
        ax.set_title(f"{m} ({pair}, held-out probe)", fontsize=10)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_heatmaps(result: Any, metric: str, path: Path) -> Path:
    """One heatmap panel per student (teacher layers × student layers), one colour scale for all."""
    import matplotlib.pyplot as plt

    from repgeo.audit import plot_heatmap

    audit = result.audit
    names = list(dict.fromkeys(audit["student"]))
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows), squeeze=False)
    sub_all = audit[audit["metric"] == metric]
    lo, hi = float(sub_all["value"].min()), float(sub_all["value"].max())
    for ax, name in zip(axes.flat, names, strict=False):
        sub = audit[audit["student"] == name].drop(columns="student")
        sub.attrs = dict(audit.attrs)
        plot_heatmap(sub, metric, ax=ax)
        if ax.images:
            ax.images[0].set_clim(lo, hi)
        ax.set_title(name, fontsize=10)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{metric}: teacher layer × student layer, {result.audit_texts} held-out texts", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------------- report


def _md_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(result: Any, *, figures: bool = True) -> dict[str, Path]:
    """Write the report folder (see the module docstring); returns the paths by name."""
    out = Path(result.out)
    out.mkdir(parents=True, exist_ok=True)
    s = result.settings
    paths: dict[str, Path] = {}
    acc = accuracy_table(result)
    geo = mapped_geometry(result)
    paths["accuracy"] = out / "accuracy.csv"
    acc.to_csv(paths["accuracy"], index=False)
    if len(geo):
        paths["geometry"] = out / "geometry.csv"
        geo.to_csv(paths["geometry"], index=False)
    if result.audit is not None:
        paths["audit"] = out / "audit.csv"
        result.audit.to_csv(paths["audit"], index=False)
    if result.certificates is not None:
        paths["certificates"] = out / "certificates.csv"
        result.certificates.to_csv(paths["certificates"], index=False)
    tr = _training_frame(result)
    paths["training_curves_csv"] = out / "training_curves.csv"
    tr.to_csv(paths["training_curves_csv"], index=False)
    gc = _geometry_frame(result)
    paths["geometry_curves_csv"] = out / "geometry_curves.csv"
    gc.to_csv(paths["geometry_curves_csv"], index=False)
    paths["stages"] = out / "stages.csv"
    pd.DataFrame([{"stage": st.name, "wall_s": st.wall, "cpu_s": st.cpu, "note": st.note} for st in result.stages]
                 ).to_csv(paths["stages"], index=False)
    paths["settings"] = out / "settings.json"
    paths["settings"].write_text(json.dumps({**s.to_dict(), "methods": list(s.methods),
                                             "audit_metrics": list(s.audit_metrics)}, indent=1, default=str) + "\n")
    if figures:
        import matplotlib

        matplotlib.use("Agg", force=False)
        paths["training_curves"] = plot_training(result, out / "training_curves.png")
        paths["geometry_curves"] = plot_geometry_curves(result, out / "geometry_curves.png")
        if result.audit is not None:
            for m in s.audit_metrics:
                paths[f"heatmap_{m}"] = plot_heatmaps(result, m, out / f"heatmap_{m}.png")
    paths["report"] = out / "report.md"
    paths["report"].write_text(_markdown(result, acc, geo))
    return paths


def _markdown(result: Any, acc: pd.DataFrame, geo: pd.DataFrame) -> str:
    s = result.settings
    d = result.data
    lm = result.runs[0].layer_map if result.runs else {}
    lines = [
        "# repgeo demo",
        "",
        f"Teacher **{result.teacher_name}** fine-tuned for the task, distilled into students of "
        f"{len(lm)} blocks (teacher blocks 0, {s.keep_every}, … at the teacher's width"
        + (f"; and a freshly initialised {s.narrow_width}-wide student" if s.narrow_width else "")
        + f") with each feature loss; audited layer by layer on held-out texts. Preset `{s.preset}`, seed {s.seed}, "
        f"{result.threads} torch thread(s) on {result.device}, total **{result.total_seconds:.0f} s**.",
        "",
        f"- data: {d.source}; {len(d.train)} training / {len(d.test)} held-out test examples (stratified split of "
        f"{d.n_available}), labels {[str(x) for x in d.labels]}, texts cut to {s.max_length} tokens",
        f"- teacher: {'loaded from the cache' if result.teacher.cached else 'fine-tuned'} "
        f"(`{result.teacher.path}`), {s.teacher_steps} steps × batch {s.teacher_batch}, lr {s.teacher_lr}, "
        f"trained part: {s.teacher_train}",
        f"- students: {s.student_steps} steps × batch {s.student_batch}, lr {s.student_lr}; loss = CE + "
        f"T²·KL (T = {s.temperature}) + α_eff · feature loss on {s.pooling}-pooled layer pairs "
        + ", ".join(f"s{a}→t{b}" for a, b in lm.items())
        + f"; α_eff = {s.alpha} / (feature loss at initialisation), so every feature term starts at {s.alpha}",
        "",
        "## Notes",
        "",
        *[f"- {x}" for x in notes(result)],
        "",
        "## Held-out accuracy",
        "",
    ]
    cols = [c for c in ("model", "test_accuracy", "se", "delta_vs_kd", "delta_se", "alpha_eff",
                        "initial_feature_loss", "seconds") if c in acc]
    lines += [_md_table(acc[cols]), "",
              "`se`: binomial standard error; `delta_vs_kd` ± `delta_se`: paired difference to the KD-only student "
              "(same test examples). File: `accuracy.csv`.", ""]
    lines += ["## Geometry at the mapped layer pairs", "",
              f"Teacher vs student, {s.pooling}-pooled, on {result.audit_texts} held-out texts; 95 % jackknife "
              f"intervals ({s.n_folds} folds of texts). procrustes, fg, proj_mse: lower = more alike; cka: higher. "
              "Estimators: " + _estimator_note(geo) + " Each cell reads `value [interval] (floor f)`: the floor is "
              "the same estimator with the texts shuffled between teacher and student — a value near its floor "
              "says nothing about alignment. How to read these numbers: `docs/reading-an-audit.md`.", ""]
    if len(geo):
        g = geo.copy()
        floors = g["floor"] if "floor" in g else pd.Series(math.nan, index=g.index)
        g["cell"] = [(f"{v:.4f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) else f"{v:.4f}")
                     + (f" (floor {f:.3f})" if math.isfinite(f) else "")
                     for v, lo, hi, f in zip(g["value"], g["ci_low"], g["ci_high"], floors, strict=True)]
        wide = g.pivot_table(index=["student", "pair"], columns="metric", values="cell", aggfunc="first", sort=False)
        wide = wide[[m for m in TABLE_METRICS if m in wide.columns]].reset_index()
        lines += [_md_table(wide), "", "Every cell of every student: `audit.csv`; mapped pairs: `geometry.csv`.", ""]
        lines += [f"![{m} heatmaps](heatmap_{m}.png)" for m in s.audit_metrics] + [""]
    lines += ["## Training curves", "", "![training curves](training_curves.png)", "",
              "![geometry during training](geometry_curves.png)", "",
              "Files: `training_curves.csv` (loss terms), `geometry_curves.csv` (probe-set geometry every "
              f"{s.geometry_every} steps), per-run folders in `runs/`.", ""]
    if result.certificates is not None:
        c = result.certificates
        summary = c.groupby(["counterexample", "title"], sort=False)["passed"].agg(["size", "sum"]).reset_index()
        summary.columns = ["counterexample", "title", "claims", "passed"]
        lines += ["## Counterexample certificates", "",
                  f"{int(c['passed'].sum())} of {len(c)} claims pass. Each construction is a teacher/student pair "
                  "on which a popular loss reads (near) zero while the geometry differs; see "
                  "`certificates.csv` and `counterexamples/`.", "", _md_table(summary), ""]
    lines += ["## Time", "", _md_table(pd.DataFrame(
        [{"stage": st.name, "wall s": st.wall, "cpu s": st.cpu, "note": st.note} for st in result.stages]),
        ".1f"), "", f"Total: {result.total_seconds:.1f} s wall.", ""]
    return "\n".join(lines)


def print_summary(result: Any, file: Any = None) -> None:
    import sys

    f = file or sys.stdout
    pair = _last_pair(result)
    print(f"\nrepgeo demo: held-out accuracy ({len(result.data.test)} test examples) and geometry of the last mapped "
          f"layer pair {pair} ({result.audit_texts} held-out texts)\n", file=f)
    print(format_table(result), file=f)
    print("", file=f)
    for x in notes(result):
        print(f"- {x}", file=f)
    print("\ntime: " + ", ".join(f"{st.name} {st.wall:.0f} s" for st in result.stages)
          + f"; total {result.total_seconds:.0f} s", file=f)
    print(f"report: {Path(result.out) / 'report.md'}", file=f)


