"""The protocol: α sweep on the first regime, final runs of every regime and method, ablations; the result dict."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import Prepared, prepare
from .regimes import FEATURE_METHODS, METHODS, PRESETS, Preset, Regime
from .runs import RunLog, RunSpec, run_one
from .statistics import ablations, score_views, summarize


def study(preset_name: str, work: Path, log: Any = print, limit_regimes: int | None = None) -> dict[str, Any]:
    """Run the study in the work folder ``work``, holding its lock (a second study into the same folder is refused
    with ``FolderLockedError``; a killed one leaves no stale lock)."""
    from repgeo.files import FolderLock

    work.mkdir(parents=True, exist_ok=True)
    with FolderLock(work, "quality study"):
        return _study(preset_name, work, log, limit_regimes)


def _study(preset_name: str, work: Path, log: Any = print, limit_regimes: int | None = None) -> dict[str, Any]:
    import torch

    from repgeo.demo.students import silence_transformers

    preset = PRESETS[preset_name]
    silence_transformers()
    work.mkdir(parents=True, exist_ok=True)
    runs = RunLog(work / "runs.jsonl")
    t_start = time.perf_counter()

    def do(p: Prepared, spec: RunSpec) -> dict[str, Any]:
        if spec.key not in runs.rows:
            row = run_one(preset, p, spec, work)
            runs.add(row)
            log(f"  {spec.stage} {spec.method} seed {spec.seed} α {spec.alpha} {spec.pooling}/{spec.schedule}: "
                f"dev {row['dev_acc']:.3f}" + ("" if spec.stage == "sweep" else f" test {row['test_acc']:.3f}")
                + f" ({row['sec_per_step']:.2f} s/step)")
        return runs.rows[spec.key]

    regimes = preset.regimes[:limit_regimes]
    prepared: dict[str, Prepared] = {}
    teachers = {}
    first = regimes[0]
    p0 = prepared[first.name] = prepare(preset, first, work, log)
    # 1. α sweep on the first regime's dev split: same grid and seeds for every feature loss
    chosen: dict[str, float] = {}
    sweep: dict[str, dict[float, float]] = {}
    for m in FEATURE_METHODS:
        if len(preset.alpha_grid) == 1:  # nothing to choose
            chosen[m] = preset.alpha_grid[0]
            continue
        sweep[m] = {}
        for a in preset.alpha_grid:
            accs = [do(p0, RunSpec(first.name, f"kd+{m}", s, a, stage="sweep"))["dev_acc"]
                    for s in range(100, 100 + preset.sweep_seeds)]
            sweep[m][a] = float(np.mean(accs))
        chosen[m] = max(sweep[m], key=lambda a: (sweep[m][a], -abs(math.log(a))))
        log(f"α sweep {m}: " + ", ".join(f"{a:g}: {v:.3f}" for a, v in sweep[m].items()) + f" -> α = {chosen[m]:g}")
    # 2. final runs, every regime, every method
    for r in regimes:
        p = prepared.get(r.name) or prepare(preset, r, work, log)
        prepared[r.name] = p
        teachers[r.name] = {"teacher": {k: v[p.primary] for k, v in p.teacher_scores.items()},
                            "student_init": {k: v[p.primary] for k, v in p.student_init_scores.items()},
                            "scores": {"teacher": p.teacher_scores, "student_init": p.student_init_scores},
                            "primary": p.primary, "labels": len(p.labels) if p.labels else None, "n": p.n,
                            "teacher_seconds": p.teacher_seconds}
        for seed in range(r.seeds):
            for method in METHODS:
                alpha = chosen[method.split("+", 1)[1]] if "+" in method else 0.0
                do(p, RunSpec(r.name, method, seed, alpha))
    # 3. ablations on the first regime: token-level features, decaying α
    for metric, pooling, schedule in preset.ablations:
        for seed in range(preset.ablation_seeds):
            do(p0, RunSpec(first.name, f"kd+{metric}", seed, chosen[metric], pooling, schedule, stage="ablation"))
    rows = list(runs.rows.values())
    wanted = {r.name for r in regimes}
    rows = [r for r in rows if r["regime"] in wanted]
    views, view_refs = score_views(rows, teachers)
    return {"preset": preset_name, "settings": _preset_dict(preset, regimes), "alpha_sweep": sweep,
            "alpha_chosen": chosen, "regimes": {**teachers, **view_refs}, "summary": summarize(rows + views),
            "ablations": ablations(rows, first.name, chosen), "runs": rows,
            "seconds": time.perf_counter() - t_start, "threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _preset_dict(preset: Preset, regimes: list[Regime]) -> dict[str, Any]:
    d = dataclasses.asdict(preset)
    d["regimes"] = [dataclasses.asdict(r) | {"name": r.name} for r in regimes]
    return d
