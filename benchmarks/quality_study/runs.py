"""One run of the study: its identity (:class:`RunSpec`), its ``repgeo distill`` configuration, training through
:func:`repgeo.recipes.student.distill_student`, scoring and final geometry; and the log of finished runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Prepared, regime_folder
from .regimes import Preset


@dataclass(frozen=True)
class RunSpec:
    regime: str
    method: str  # one of METHODS
    seed: int
    alpha: float = 0.0  # relative α (feature methods)
    pooling: str = "mean"
    schedule: str = "constant"
    stage: str = "final"  # "sweep" | "final" | "ablation"

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def run_config(preset: Preset, p: Prepared, spec: RunSpec, out: Path, cache: Path) -> dict[str, Any]:
    """The ``repgeo distill`` configuration (a dict) of run ``spec``."""
    from repgeo.recipes.student import short_run_trainer

    r = p.regime
    metric = spec.method.split("+", 1)[1] if "+" in spec.method else None
    data: dict[str, Any] = {"train": str(p.files["train"]), "eval": str(p.files["dev"]), "max_length": r.max_length}
    if p.labels is not None:
        data["labels"] = p.labels
    return {
        "task": "instruction" if r.family == "causal" else "classification", "output_dir": str(out),
        "seed": spec.seed, "teacher": {"path": str(p.teacher_path)}, "student": {"path": str(p.student_path)},
        "data": data,
        "loss": {"metric": metric or "procrustes", "alpha": spec.alpha if metric else 0.0, "alpha_relative": True,
                 "alpha_schedule": spec.schedule, "w_task": 1.0,
                 "w_kd": 0.0 if spec.method == "ft" else 1.0, "temperature": preset.temperature,
                 "pooling": spec.pooling, "layer_map": "uniform"},
        "trainer": short_run_trainer(r.student_steps, preset.lr, r.batch or preset.batch,
                                     logging_steps=max(1, r.student_steps // 5)),
        "geometry": {"enabled": False},  # measured once at the end by the regime's probe (.geometry)
        "cache": {"enabled": spec.method != "ft", "path": str(cache)},
    }


def run_one(preset: Preset, p: Prepared, spec: RunSpec, work: Path) -> dict[str, Any]:
    """Train one student (:func:`repgeo.recipes.student.distill_student`); its dev and test score (``dev_acc`` /
    ``test_acc``: the regime's primary score; all scores under ``scores``), the feature loss's initial value and
    α, seconds per training step and the final mapped-layer geometry (:mod:`.geometry`: bias-aware estimators on
    the regime's probe, described under ``geometry_probe``)."""
    from repgeo.recipes.student import distill_student

    folder = regime_folder(work, p.regime)
    out = folder / "runs" / spec.key
    suffix = f"{spec.pooling}" + ("-features" if "+" in spec.method else "-logits")
    done = distill_student(run_config(preset, p, spec, out, folder / f"teacher_cache_{suffix}.pt"))
    splits = ("dev",) if spec.stage == "sweep" else p.eval_splits  # the sweep never looks at the test split
    scores = {name: p.score(done.model, name) for name in splits}
    geometry, probe = p.probe.measure(done.teacher, done.model, done.layer_map)
    return {**dataclasses.asdict(spec), "key": spec.key, "dev_acc": scores["dev"][p.primary],
            "test_acc": scores["test"][p.primary] if "test" in scores else float("nan"), "scores": scores,
            "alpha_eff": done.alpha_eff, "feature_loss_init": done.feature_loss_init,
            "sec_per_step": done.train_seconds / max(1, done.steps),
            "final_loss": next((h["loss"] for h in reversed(done.history) if "loss" in h), float("nan")),
            "geometry": geometry, "geometry_probe": probe}


class RunLog:
    """Finished runs, one JSON line each, appended and flushed (an interrupted study resumes from it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if not path.is_file():
            return
        text = path.read_text()
        cut = False
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                cut = True
                continue
            self.rows[row["key"]] = row
        if cut or (text and not text.endswith("\n")):  # rewrite without it, atomically, before appending
            from repgeo.files import atomic_write_bytes

            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.rows.values()).encode())

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
