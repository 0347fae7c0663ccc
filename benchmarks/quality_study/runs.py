"""One run of the study: its identity (:class:`RunSpec`), its ``repgeo distill`` configuration, training through
:func:`repgeo.recipes.student.distill_student`, scoring and final geometry; and the log of finished runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Prepared, regime_folder
from .plateau import Plateau, PlateauStop
from .regimes import Preset, Regime

#: the stages whose runs are scored on the test split (every earlier one decides on dev alone)
TEST_STAGES = ("main", "confirm")


@dataclass(frozen=True)
class RunSpec:
    """One run: ``stage`` ``"sweep"`` (α grid, dev only), ``"pilot"`` (extra seeds at the chosen α, dev only),
    ``"main"`` (dev and test, final geometry) or ``"confirm"`` (fresh seeds, dev and test). ``method``: ``ft``
    (task loss), ``kd`` (+ forward KL on the logits, T = preset temperature), ``rkd`` (reverse KL instead,
    ``loss.kd: reverse``), ``<kd|rkd>+<loss>`` (+ α × the feature loss, relative α)."""

    regime: str
    method: str
    seed: int
    alpha: float = 0.0  # relative α (feature methods)
    stage: str = "main"
    setup: str = ""  # :func:`setup_key` of the regime and preset: a changed preset does not reuse old runs
    lr: float = 0.0  # the student's learning rate (the ``lr`` stage's choice); 0: the preset's ``lr``

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def feature(self) -> str | None:
        """The feature loss (``loss.metric``), or None."""
        return self.method.split("+", 1)[1] if "+" in self.method else None


#: regime fields that only feed ``--plan``'s estimates: changing them keeps the recorded runs
ESTIMATE_FIELDS = ("sec_per_step", "teacher_sec_per_step", "run_overhead", "geometry_seconds")


def setup_key(r: Regime, preset: Preset) -> str:
    """A hash of everything a run of regime ``r`` depends on besides its :class:`RunSpec` (sizes, models,
    training settings), so that a run recorded under other settings is not taken for this one."""
    fields = {k: v for k, v in dataclasses.asdict(r).items() if k not in ESTIMATE_FIELDS}
    train = {k: getattr(preset, k) for k in ("batch", "lr", "teacher_lr", "causal_teacher_lr", "temperature")}
    if preset.lr_grid:
        train["lr_grid"] = list(preset.lr_grid)
    return hashlib.sha256(json.dumps([fields, train], sort_keys=True).encode()).hexdigest()[:12]


def epoch_steps(r: Regime, preset: Preset) -> int:
    """Optimiser steps in one epoch of regime ``r``."""
    return math.ceil(r.n_train / (r.batch or preset.batch))


def run_config(preset: Preset, p: Prepared, spec: RunSpec, out: Path, cache: Path) -> dict[str, Any]:
    """The ``repgeo distill`` configuration (a dict) of run ``spec``: up to ``max_epochs`` epochs at a constant
    learning rate after a warm-up of a tenth of an epoch (the plateau callback stops it, :mod:`.plateau`)."""
    from repgeo.recipes.student import short_run_trainer

    r = p.regime
    metric = spec.feature
    data: dict[str, Any] = {"train": str(p.files["train"]), "max_length": r.max_length}
    if p.labels is not None:
        data["labels"] = p.labels
    per_epoch = epoch_steps(r, preset)
    lr, batch = spec.lr or preset.lr, r.batch or preset.batch
    trainer = {**short_run_trainer(1, lr, batch, logging_steps=max(1, per_epoch // 2)),
               "max_steps": -1, "num_train_epochs": r.max_epochs, "lr_scheduler_type": "constant_with_warmup",
               "warmup_steps": max(1, per_epoch // 10), "eval_strategy": "no"}
    loss: dict[str, Any] = {
        "metric": metric or "procrustes", "alpha": spec.alpha if metric else 0.0, "alpha_relative": True,
        "w_task": 1.0, "w_kd": 0.0 if spec.method == "ft" else 1.0, "temperature": preset.temperature,
        "pooling": "mean", "layer_map": "uniform"}
    if spec.method.startswith("rkd"):
        loss["kd"] = "reverse"
    return {
        "task": "instruction" if r.family == "causal" else "classification", "output_dir": str(out),
        "seed": spec.seed, "teacher": {"path": str(p.teacher_path)}, "student": {"path": str(p.student_path)},
        "data": data, "loss": loss, "trainer": trainer,
        "geometry": {"enabled": False},  # measured once at the end by the regime's probe (.geometry)
        "cache": {"enabled": spec.method != "ft", "path": str(cache)},
    }


def run_one(preset: Preset, p: Prepared, spec: RunSpec, work: Path) -> dict[str, Any]:
    """Train one student to its dev plateau (:func:`repgeo.recipes.student.distill_student` with
    :class:`~.plateau.PlateauStop`); its dev score (and in the main stage its test score, and on the first
    ``min_seeds`` seeds its final geometry: :mod:`.geometry`), the dev curve and steps to the plateau, the
    feature loss's initial value and α, and the seconds per training step (training time less the per-epoch dev
    scoring, over the steps run)."""
    import time

    from repgeo.recipes.student import distill_student

    folder = regime_folder(work, p.regime)
    out = folder / "runs" / spec.key
    kind = "features" if spec.feature else "logits"
    stop = PlateauStop(lambda model: p.score(model, "dev")[p.primary], Plateau(p.regime.patience, p.regime.max_epochs))
    t0 = time.perf_counter()
    done = distill_student(run_config(preset, p, spec, out, folder / f"teacher_cache_mean-{kind}.pt"),
                           callbacks=[stop])
    splits = ("dev", "test") if spec.stage in TEST_STAGES else ("dev",)  # only these stages look at the test split
    scores = {name: p.score(done.model, name) for name in splits}
    row = {**dataclasses.asdict(spec), "key": spec.key, "teacher": p.teacher_fingerprint,
           "dev_acc": scores["dev"][p.primary],
           "test_acc": scores["test"][p.primary] if "test" in scores else float("nan"), "scores": scores,
           "alpha_eff": done.alpha_eff, "feature_loss_init": done.feature_loss_init, "steps": done.steps,
           "steps_to_plateau": stop.best["step"], "epochs": len(stop.curve), "curve": stop.curve,
           "sec_per_step": (done.train_seconds - stop.eval_seconds) / max(1, done.steps),
           "final_loss": next((h["loss"] for h in reversed(done.history) if "loss" in h), float("nan"))}
    if spec.stage == "main" and spec.seed < preset.min_seeds and p.probe is not None:  # geometry: first seeds
        row["geometry"], row["geometry_probe"] = p.probe.measure(done.teacher, done.model, done.layer_map)
    row["run_seconds"] = time.perf_counter() - t0
    return row


class RunLog:
    """Finished runs, one JSON line each, appended and flushed (an interrupted study resumes from it). A line cut
    by an interruption is dropped and, with ``repair`` (the process that will append), the file rewritten without
    it; a reader (``repair=False``: a report or plan beside a running study) never writes."""

    def __init__(self, path: Path, *, repair: bool = True) -> None:
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
        if repair and (cut or (text and not text.endswith("\n"))):  # rewrite without it, atomically, before appending
            from repgeo.files import atomic_write_bytes

            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.rows.values()).encode())

    def add(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line: a single ``write`` on an append-only descriptor under an exclusive
        ``flock``, then ``fsync`` -- worker processes (:mod:`.pool`) append to the same log."""
        import fcntl

        self.rows[row["key"]] = row
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = (json.dumps(row) + "\n").encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
