"""Statistics of the study: paired tests across seeds, per-regime summaries, score views and ablations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .regimes import GEOMETRIC


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``a - b`` across seeds: mean, SD, 95 % t-interval, paired t-test and Wilcoxon p-values, Cohen's d_z."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    out = {"n": n, "diff": mean, "sd": sd, "ci_low": float("nan"), "ci_high": float("nan"), "p_t": float("nan"),
           "p_wilcoxon": float("nan"), "d_z": float("nan")}
    if n > 1 and sd > 0:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half, p_t=float(stats.ttest_rel(a, b).pvalue), d_z=mean / sd)
    elif n > 1:  # identical differences: no spread
        out.update(ci_low=mean, ci_high=mean, p_t=1.0 if mean == 0 else 0.0)
    if n > 1 and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


SECONDARY_REFS = ("kd+proj_mse", "kd+cka", "kd+pkd")


def family_upper(t: dict[str, float], level: float, comparisons: int) -> float:
    """Upper end of the two-sided ``1 - level / comparisons`` t-interval of a :func:`paired` result (Bonferroni:
    the ``comparisons`` intervals hold together with probability >= ``1 - level``); NaN below two seeds."""
    from scipy import stats

    n, sd = t["n"], t["sd"]
    if n < 2 or math.isnan(sd):
        return float("nan")
    return t["diff"] + float(stats.t.ppf(1 - level / (2 * comparisons), n - 1)) * sd / math.sqrt(n)


def summarize(rows: list[dict[str, Any]], decisions: dict[str, Any], *, delta: float = 0.01,
              level: float = 0.05, stage: str = "main") -> dict[str, Any]:
    """Per regime, from the main stage's runs: per method the test score's mean ± SD, the dev mean, steps to the
    plateau (median), epochs (mean), seconds per step (median) and mean final geometry; the **primary**
    comparisons (each geometric loss vs the comparator recorded in ``decisions``), Holm-adjusted together over
    every regime, each with the upper end of its family-wise interval (:func:`family_upper`) and its verdict
    (:func:`~.power.verdict`); and secondary comparisons (vs projection-MSE,
    CKA and Patient-KD, unadjusted p, exploratory). ``stage="confirm"``: the same analysis of the confirmation's
    fresh seeds alone."""
    from .power import holm, verdict

    df = pd.DataFrame([r for r in rows if r["stage"] == stage])
    out: dict[str, Any] = {}
    primary: list[tuple[str, str]] = []
    for regime, g in (df.groupby("regime", sort=False) if len(df) else []):
        wide = g.pivot_table(index="seed", columns="method", values="test_acc")
        wide_dev = g.pivot_table(index="seed", columns="method", values="dev_acc")
        comparator = decisions.get(regime, {}).get("comparator", {}).get("method")
        tests, secondary = {}, {}
        for geo in (f"kd+{m}" for m in GEOMETRIC if f"kd+{m}" in wide):
            for ref in dict.fromkeys([comparator, *SECONDARY_REFS]):
                if ref is None or ref not in wide or ref == geo:
                    continue
                both = wide[[geo, ref]].dropna()
                t = paired(both[geo].to_numpy(), both[ref].to_numpy())
                if ref == comparator:
                    dev = wide_dev.loc[both.index, [geo, ref]].dropna()
                    t["sd_dev"] = paired(dev[geo].to_numpy(), dev[ref].to_numpy())["sd"]
                    tests[f"{geo} vs {ref}"] = t
                    primary.append((regime, f"{geo} vs {ref}"))
                else:
                    secondary[f"{geo} vs {ref}"] = t
        out[regime] = {"methods": _method_table(g), "comparator": comparator, "tests": tests,
                       "secondary": secondary, "geometry": _mean_geometry(g),
                       "geometry_probe": next((p for p in g.get("geometry_probe", []) if isinstance(p, dict)), None),
                       "power": decisions.get(regime, {}).get("power")}
    adjusted = holm([out[g]["tests"][name]["p_t"] for g, name in primary])
    for (g, name), p_adj in zip(primary, adjusted, strict=True):
        t = out[g]["tests"][name]
        t["p_holm"] = p_adj
        t["ci_high_family"] = family_upper(t, level, len(primary))
        t["verdict"] = verdict(t["diff"], t["ci_high_family"], p_adj, delta=delta, level=level)
        t["seeds_needed_observed"] = _seeds_needed(t["sd"], delta, level, len(primary))
    return out


def _seeds_needed(sd: float, delta: float, level: float, comparisons: int) -> int | None:
    """Seeds the primary test would need for 80 % power at ``delta`` had the pilot seen the paired SD ``sd``
    observed on the test split (a check of the power decision, not a new decision: None when not computable)."""
    from .power import seeds_for_power

    if not sd > 0:
        return None
    try:
        return seeds_for_power(sd, delta=delta, level=level, comparisons=comparisons)
    except ValueError:
        return None


def _method_table(g: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for method, gg in g.groupby("method", sort=False):
        test = gg["test_acc"].to_numpy(float)
        out[method] = {"mean": float(test.mean()), "std": float(test.std(ddof=1)) if len(test) > 1 else float("nan"),
                       "n": len(test), "dev_mean": float(gg["dev_acc"].mean()),
                       "steps_to_plateau": float(gg["steps_to_plateau"].median()),
                       "epochs": float(gg["epochs"].mean()), "sec_per_step": float(gg["sec_per_step"].median()),
                       "alpha": float(gg["alpha"].iloc[0])}
        em = [r.get("test", {}).get("exact_match") for r in gg["scores"]]
        if all(x is not None for x in em):
            out[method]["exact_match"] = float(np.mean(em))
    return out


def _mean_geometry(g: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    if "geometry" not in g:
        return out
    for method, gg in g.groupby("method"):
        found = [d for d in gg["geometry"] if isinstance(d, dict)]
        keys = sorted({k for d in found for k in d})
        out[method] = {k: float(np.mean([d[k] for d in found if k in d])) for k in keys}
    return out
