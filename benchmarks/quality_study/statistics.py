"""Statistics of the study: paired tests across seeds, per-regime summaries, score views and ablations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .regimes import GEOMETRIC


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``a - b`` across seeds: mean, 95 % t-interval, paired t-test and Wilcoxon p-values, Cohen's d_z."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    out = {"n": n, "diff": mean, "ci_low": float("nan"), "ci_high": float("nan"), "p_t": float("nan"),
           "p_wilcoxon": float("nan"), "d_z": float("nan")}
    if n > 1 and sd > 0:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half, p_t=float(stats.ttest_rel(a, b).pvalue), d_z=mean / sd)
    elif n > 1:  # identical differences: no spread
        out.update(ci_low=mean, ci_high=mean, p_t=1.0 if mean == 0 else 0.0)
    if n > 1 and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def summarize(rows: list[dict[str, Any]], stage: str = "final") -> dict[str, Any]:
    """Per regime: mean ± std per method, and paired comparisons of each geometric loss."""
    df = pd.DataFrame([r for r in rows if r["stage"] == stage])
    out: dict[str, Any] = {}
    for regime, g in df.groupby("regime", sort=False):
        table = g.groupby("method")["test_acc"].agg(["mean", "std", "count"])
        dev = g.groupby("method")["dev_acc"].mean()
        wide = g.pivot_table(index="seed", columns="method", values="test_acc")
        baselines = [m for m in ("ft", "kd", "kd+proj_mse", "kd+cka") if m in table.index]
        best = max(baselines, key=lambda m: table.loc[m, "mean"]) if baselines else None
        tests = {}
        for geo in (f"kd+{m}" for m in GEOMETRIC):
            if geo not in wide:
                continue
            for ref in dict.fromkeys([best, "kd+proj_mse", "kd+cka"]):
                if ref is None or ref not in wide:
                    continue
                both = wide[[geo, ref]].dropna()
                tests[f"{geo} vs {ref}"] = paired(both[geo].to_numpy(), both[ref].to_numpy())
        out[regime] = {
            "methods": {m: {"mean": float(t["mean"]), "std": float(t["std"]) if t["count"] > 1 else float("nan"),
                            "n": int(t["count"]), "dev_mean": float(dev[m])} for m, t in table.iterrows()},
            "best_non_geometric": best, "tests": tests,
            "sec_per_step": g.groupby("method")["sec_per_step"].median().to_dict(),
            "geometry": _mean_geometry(g),
            "geometry_probe": next((p for p in g.get("geometry_probe", []) if isinstance(p, dict)), None),
        }
    return out


def _mean_geometry(g: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for method, gg in g.groupby("method"):
        keys = sorted({k for d in gg["geometry"] for k in d})
        out[method] = {k: float(np.mean([d[k] for d in gg["geometry"] if k in d])) for k in keys}
    return out


#: examples of the training tasks.
CAUSAL_VIEWS = ((" · exact match", "test", "exact_match"), (" · held-out task", "heldout", "rougeL"),
                (" · held-out task EM", "heldout", "exact_match"))


def score_views(rows: list[dict[str, Any]], refs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """For causal regimes, copies of the final runs whose ``test_acc`` is another score (:data:`CAUSAL_VIEWS`),
    under the regime name + suffix, with the teacher / untrained-student references for those columns."""
    views, view_refs = [], {}
    for row in rows:
        for suffix, split, key in CAUSAL_VIEWS:
            if row["stage"] == "final" and key in row.get("scores", {}).get(split, {}):
                views.append({**row, "regime": row["regime"] + suffix, "test_acc": row["scores"][split][key]})
                ref = refs[row["regime"]]["scores"]
                view_refs[row["regime"] + suffix] = {
                    who: {"test": ref[who][split][key]} for who in ("teacher", "student_init")}
    return views, view_refs


def ablations(rows: list[dict[str, Any]], regime: str, chosen: dict[str, float]) -> dict[str, Any]:
    """Each ablation against the same loss with pooled features and constant α, on the same seeds."""
    base = {(r["method"], r["seed"]): r["test_acc"] for r in rows
            if r["regime"] == regime and r["stage"] == "final"}
    out = {}
    variants: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["stage"] == "ablation" and r["regime"] == regime:
            variants.setdefault(f"{r['method']} {r['pooling']}/{r['schedule']}", {})[r["seed"]] = r["test_acc"]
    for name, by_seed in variants.items():
        method = name.split()[0]
        seeds = [s for s in by_seed if (method, s) in base]
        if seeds:
            a = np.array([by_seed[s] for s in seeds])
            b = np.array([base[(method, s)] for s in seeds])
            out[name] = {"mean": float(a.mean()), "base_mean": float(b.mean()), **paired(a, b)}
    return out
