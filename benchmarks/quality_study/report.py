"""The v2 study's report: a one-paragraph summary, the markdown tables and the plot (``distill_quality_v2*``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .regimes import GEOMETRIC


def _pts(x: float, signed: bool = False) -> str:
    return "—" if x is None or np.isnan(x) else (f"{100 * x:+.2f}" if signed else f"{100 * x:.1f}")


def summary_paragraph(res: dict[str, Any]) -> str:
    """What was found, in one paragraph: per regime, each primary comparison's difference, CI, Holm p and verdict,
    the seeds it rests on, and how long the students trained."""
    if not res["summary"]:
        return "Results pending: no main-stage run has finished yet."
    parts = []
    for g, s in res["summary"].items():
        power = s.get("power") or {}
        tests = "; ".join(
            f"{name.replace(' vs ', ' − ')} {_pts(t['diff'], True)} points [{_pts(t['ci_low'], True)}, "
            f"{_pts(t['ci_high'], True)}] (family-wise upper end {_pts(t['ci_high_family'], True)}), "
            f"Holm p = {t['p_holm']:.3g}: **{t['verdict']}**"
            for name, t in s["tests"].items())
        steps = np.median([m["steps_to_plateau"] for m in s["methods"].values()])
        parts.append(f"On {g} (comparator chosen on dev: {s['comparator']}; {power.get('seeds', '?')} seeds from a "
                     f"pilot paired SD of {_pts(power.get('paired_sd', float('nan')))} points), {tests or 'no test'}. "
                     f"Students reached their dev plateau after a median {steps:.0f} steps.")
    for g, s in (res.get("confirmation") or {}).items():
        tests = "; ".join(f"{name.replace(' vs ', ' − ')} {_pts(t['diff'], True)} points "
                          f"[{_pts(t['ci_low'], True)}, {_pts(t['ci_high'], True)}], {t['n']} seeds: "
                          f"**{t['verdict']}**" for name, t in s["tests"].items())
        parts.append(f"Confirmation on fresh seeds ({g}): {tests}.")
    return " ".join(parts)


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"# Distillation quality v2 — preset `{res['preset']}`", "",
             f"Command: `{command}` ({res['threads']} thread(s), {res['device']}). Protocol: "
             "`benchmarks/quality_study/__init__.py`.", "", "## Summary", "", summary_paragraph(res), ""]
    regimes = list(res["summary"])
    if regimes:
        lines += _score_table(res, regimes)
        lines += _tests(res, regimes) + _power_check(res, regimes) + _confirmation(res)
    lines += _decisions(res)
    for g in regimes:
        lines += _details(res, g)
    return "\n".join(lines) + "\n"


def _score_table(res: dict[str, Any], regimes: list[str]) -> list[str]:
    methods = list(dict.fromkeys(m for g in regimes for m in res["summary"][g]["methods"]))
    lines = ["## Test score", "", "Mean ± SD over seeds (n), in % (accuracy; ROUGE-L for instruction regimes); "
             "teacher and untrained student for reference.", "",
             "| method | " + " | ".join(regimes) + " |", "|---" * (len(regimes) + 1) + "|"]
    for m in methods:
        cells = []
        for g in regimes:
            s = res["summary"][g]["methods"].get(m)
            cells.append(f"{_pts(s['mean'])} ± {_pts(s['std'])} (n={s['n']})" if s else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for who in ("teacher", "student_init"):
        cells = []
        for g in regimes:
            ref = res["decisions"].get(g, {}).get("references", {})
            scores = ref.get(who, {})
            if who == "teacher":  # the teacher the main-stage runs learnt from, when it was recorded
                used = {x.get("teacher") for x in res["runs"] if x["regime"] == g and x["stage"] == "main"}
                found = [t["scores"] for t in res.get("teachers", []) if t["regime"] == g and t["fingerprint"] in used]
                scores = found[0] if len(found) == 1 else scores
            cells.append(_pts(scores.get("test", {}).get(ref.get("primary", "acc"), float("nan"))))
        lines.append(f"| *{who.replace('_', ' ')}* | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _tests(res: dict[str, Any], regimes: list[str]) -> list[str]:
    lines = ["## Paired tests (test split, points)", "", "Primary: each geometric loss vs the comparator chosen on "
             "dev, Holm-adjusted over every primary comparison of the preset; *family upper*: the upper end of the "
             "Bonferroni interval the verdict reads (the m primary intervals hold together at 95 %). Secondary: "
             "unadjusted, exploratory.",
             "", "| regime | comparison | diff | 95 % CI | family upper | p (t) | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for g in regimes:
        s = res["summary"][g]
        for name, t in s["tests"].items():
            lines.append(f"| {g} | **{name}** | {_pts(t['diff'], True)} | [{_pts(t['ci_low'], True)}, "
                         f"{_pts(t['ci_high'], True)}] | {_pts(t['ci_high_family'], True)} | {t['p_t']:.3g} | "
                         f"{t['p_holm']:.3g} | {t['verdict']} |")
        for name, t in s["secondary"].items():
            lines.append(f"| {g} | {name} | {_pts(t['diff'], True)} | [{_pts(t['ci_low'], True)}, "
                         f"{_pts(t['ci_high'], True)}] | — | {t['p_t']:.3g} | — | (secondary) |")
    return [*lines, ""]


def _power_check(res: dict[str, Any], regimes: list[str]) -> list[str]:
    """The power decision against what the main stage observed: the paired SD the pilot estimated (dev), the
    paired SDs of the main runs on dev and on test, and the seeds the observed test SD would have needed."""
    lines = ["## Power check", "", "The seed count was decided from the pilot's paired SD on dev; the verdict reads "
             "paired differences on test. Below: both SDs over the main runs (points) and the seeds 80 % power at "
             "1 point would need at the observed test SD (same level and family) — a check of the decision, not a "
             "new one.", "",
             "| regime | comparison | seeds | pilot SD (dev) | SD dev | SD test | seeds needed at SD test |",
             "|---|---|---|---|---|---|---|"]
    for g in regimes:
        s = res["summary"][g]
        pilot = (s.get("power") or {}).get("paired_sd", float("nan"))
        for name, t in s["tests"].items():
            need = t.get("seeds_needed_observed")
            lines.append(f"| {g} | {name} | {t['n']} | {_pts(pilot)} | {_pts(t.get('sd_dev', float('nan')))} | "
                         f"{_pts(t['sd'])} | {need if need is not None else '—'} |")
    return [*lines, ""]


def _confirmation(res: dict[str, Any]) -> list[str]:
    """The confirmation stage: its decision per regime and, once its runs exist, its own paired tests."""
    decided = {g: d["confirm_power"] for g, d in res["decisions"].items() if "confirm_power" in d}
    if not decided:
        return []
    lines = ["## Confirmation on fresh seeds", "",
             "Decided once the main stage's primary seeds were complete: where a primary verdict was inconclusive, "
             "the primary methods run again on fresh seeds, as many as 80 % power at 1 point needs at the upper "
             "confidence limit of the main stage's paired test SD; analysed alone (Holm over the same family), so "
             "it is a new test, not a second look at the main stage's data.", ""]
    conf = res.get("confirmation") or {}
    for g, c in decided.items():
        if not c["seeds"]:
            lines.append(f"- {g}: none (" + ("every primary verdict was conclusive" if not c["inconclusive"]
                                             else "the preset allows none") + ")")
            continue
        done = min((t["n"] for t in conf.get(g, {}).get("tests", {}).values()), default=0)
        lines.append(f"- {g}: {c['seeds']} seeds from {c['seed0']} ({', '.join(c['inconclusive'])} inconclusive; "
                     f"paired test SD {_pts(c['paired_sd_test'])} points, upper limit "
                     f"{_pts(c['paired_sd_test_upper'])}; {c['seeds_needed']} needed"
                     + (", capped" if c["capped"] else "") + f"); {done} of {c['seeds']} done")
    if conf:
        lines += ["", "| regime | comparison | seeds | diff | 95 % CI | family upper | p (Holm) | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for g, s in conf.items():
            for name, t in s["tests"].items():
                lines.append(f"| {g} | **{name}** | {t['n']} | {_pts(t['diff'], True)} | [{_pts(t['ci_low'], True)}, "
                             f"{_pts(t['ci_high'], True)}] | {_pts(t['ci_high_family'], True)} | {t['p_holm']:.3g} | "
                             f"{t['verdict']} |")
    return [*lines, ""]


def _decisions(res: dict[str, Any]) -> list[str]:
    lines = ["## Decisions made on dev (before any test score)", ""]
    for g, d in res["decisions"].items():
        lines += [f"**{g}**", ""]
        if "lr" in d:
            grid = ", ".join(f"{k}: {_pts(v)}" for k, v in d["lr"]["means"].items())
            lines.append(f"- learning rate (KD): dev {{{grid}}} → **{d['lr']['lr']:g}**"
                         + ("" if d["lr"]["interior"] else " (edge: extension limit reached)"))
        for m, a in d.get("alpha", {}).items():
            grid = ", ".join(f"{float(k):g}: {_pts(v)}" for k, v in a["means"].items())
            lines.append(f"- α {m}: dev {{{grid}}} → **{a['alpha']:g}**"
                         + ("" if a["interior"] else " (edge: extension limit reached)"))
        if "comparator" in d:
            dev = ", ".join(f"{m} {_pts(v)}" for m, v in d["comparator"]["dev"].items())
            lines.append(f"- comparator: **{d['comparator']['method']}** (dev: {dev})")
        if "power" in d:
            p = d["power"]
            upper = (f", sized at its {100 * p['sd_confidence']:.0f} % upper confidence limit "
                     f"{_pts(p['paired_sd_upper'])}" if "paired_sd_upper" in p else ", sized at that estimate")
            lines.append(f"- power: paired SD {_pts(p['paired_sd'])} points over {p['pairs']} seeds (dev){upper}; "
                         f"{p['comparisons']} primary comparisons, level {p['level']:g}/{p['comparisons']}; "
                         f"{p['seeds_needed']} seeds needed for {100 * p['power']:.0f} % power at "
                         f"{100 * p['delta']:g} point → **{p['seeds']}** run" + (" (capped)" if p["capped"] else ""))
        lines.append("")
    return lines


def _details(res: dict[str, Any], g: str) -> list[str]:
    s = res["summary"][g]
    geo = s["geometry"]
    keys = sorted({k for d in geo.values() for k in d})
    top = max((k.split("/")[1] for k in keys), key=_pair_order, default=None)
    last = [k for k in keys if k.split("/")[1] == top]
    probe = s.get("geometry_probe")
    lines = [f"### {g}: training, cost and final geometry", ""]
    teachers = Counter(x.get("teacher", "not recorded") for x in res["runs"] if x["regime"] == g
                       and x["stage"] == "main")
    if teachers:
        lines += ["Teacher of the main-stage runs (weights fingerprint: runs): "
                  + ", ".join(f"`{t}`: {n}" for t, n in teachers.items())
                  + (" — more than one: the teacher was fine-tuned again between sessions" if len(teachers) > 1
                     else ""), ""]
    if probe:
        lines += [probe_sentence(probe, top), ""]
    lines += ["| method | α | dev | steps to plateau | epochs | s/step | " + " | ".join(last) + " |",
              "|---" * (6 + len(last)) + "|"]
    for m, t in s["methods"].items():
        lines.append(f"| {m} | {t['alpha']:g} | {_pts(t['dev_mean'])} | {t['steps_to_plateau']:.0f} | "
                     f"{t['epochs']:.1f} | {t['sec_per_step']:.3f} | "
                     + " | ".join(f"{geo.get(m, {}).get(k, float('nan')):.3f}" for k in last) + " |")
    return [*lines, ""]


def probe_sentence(probe: dict[str, Any], pair: str) -> str:
    """How many rows the geometry probe had against the rule ``max(4 x width, 1000)``, said plainly when short."""
    rows, need, unit = probe["rows"], probe["rows_needed"], probe.get("unit", "token")
    where = ", ".join(probe["splits"])
    if rows >= need:
        enough = f"the rule asks ≥ {need}"
    else:
        width = need // 4
        enough = (f"every text of those splits, {need - rows} short of the rule's {need} "
                  f"({rows / width:.2f} rows per feature of the widest layer, {width}, against 4)")
    return (f"Geometry probe: {rows} {unit} rows of {probe['texts']} texts ({where}; {enough}); bias-aware "
            f"estimators at {pair}.")


def _pair_order(pair: str) -> tuple[int, ...]:
    return tuple(int(part[1:]) for part in pair.split("_"))


def plot(res: dict[str, Any], path: Path) -> None:
    """Test score per method and seed (geometric losses in red), the comparator's mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(res["summary"]) or ["(pending)"]
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.6 * len(regimes), 3.8), squeeze=False)
    df = pd.DataFrame([r for r in res["runs"] if r["stage"] == "main"])
    for ax, g in zip(axes[0], regimes, strict=True):
        if g not in res["summary"]:
            ax.set_title("results pending", fontsize=9)
            continue
        methods = list(res["summary"][g]["methods"])
        sub = df[df["regime"] == g]
        for i, m in enumerate(methods):
            acc = 100 * sub[sub["method"] == m]["test_acc"].to_numpy()
            color = "C3" if m.split("+")[-1] in GEOMETRIC else "C0"
            ax.scatter(np.full(len(acc), i) + np.linspace(-0.15, 0.15, len(acc)), acc, s=9, color=color, alpha=0.6)
            ax.errorbar(i, acc.mean(), yerr=acc.std(ddof=1) if len(acc) > 1 else 0, fmt="_", color="k", capsize=4)
        comparator = res["summary"][g]["comparator"]
        if comparator in res["summary"][g]["methods"]:
            ax.axhline(100 * res["summary"][g]["methods"][comparator]["mean"], color="grey", ls="--", lw=1,
                       label=f"comparator ({comparator})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
        ax.set_title(g, fontsize=9)
        ax.set_ylabel("test score (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
