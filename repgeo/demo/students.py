"""The demo's students: one distillation run per method on the same data, split, seed and student
initialisation, through :func:`repgeo.recipes.student.distill_student` (the ``repgeo distill`` engine).

Methods: ``kd`` (task cross-entropy + logit KD, no feature loss) and ``proj_mse``, ``cka``, ``procrustes``,
``fg`` (the same + ``alpha_eff`` × feature loss on mean-pooled mapped layers). Equal α is not equal weight
(the losses differ several-fold at initialisation), so each feature loss is scaled by its value at
initialisation: ``alpha_eff = alpha / L_feat(init)`` (the runner's ``loss.alpha_relative``), which
makes every feature term start at ``alpha``. The teacher's logits and features on the training set are computed
once (the runner's teacher cache) and shared by every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import transformers
from transformers.trainer_callback import TrainerCallback

from repgeo.recipes.classifier import encode, label_ids, linear_probe_init, predict
from repgeo.recipes.student import distill_student, short_run_trainer

from .settings import FEATURE_METHODS


@dataclass
class StudentRun:
    """One distilled student."""

    name: str  # e.g. "procrustes" or "procrustes (narrow)"
    method: str
    student: str  # "wide" or "narrow"
    model: Any
    accuracy: float
    predictions: np.ndarray
    layer_map: dict[int, int]
    seconds: float
    alpha_eff: float = 0.0
    initial_feature_loss: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)  # Trainer log history (loss terms)
    geometry: pd.DataFrame | None = None  # step, pair, metric, value on the probe set
    out_dir: Path | None = None


class _Progress(TrainerCallback):
    """A compact progress bar (the Trainer's own prints every log dict)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.desc, disable=not self.enabled)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            post = {"loss": f"{logs['loss']:.3f}"}
            if "loss_feature" in logs:
                post["feat"] = f"{logs['loss_feature']:.3g}"
            self.bar.set_postfix(post)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class _GeometryEvery(TrainerCallback):
    """Measure the mapped-layer geometry on the held-out probe set every ``every`` steps (and at step 0)."""

    def __init__(self, every: int) -> None:
        self.every, self.trainer = every, None

    def _measure(self, state: Any) -> None:
        t = self.trainer
        if t is not None and t.geometry is not None:
            t.geometry.measure(t.teacher, t.accelerator.unwrap_model(t.model), step=state.global_step)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._measure(state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(state)


def run_config(settings: Any, method: str, *, teacher_path: Path, student_path: Path, train_path: Path,
               test_path: Path, labels: list[Any], out_dir: Path, cache_path: Path) -> dict[str, Any]:
    """The ``repgeo distill`` configuration (as a dict) of one demo run."""
    student: dict[str, Any] = {"path": str(student_path), "freeze_embeddings": settings.freeze_embeddings}
    feature = method in FEATURE_METHODS
    return {
        "task": "classification",
        "output_dir": str(out_dir),
        "seed": settings.seed,
        "teacher": {"path": str(teacher_path)},
        "student": student,
        "data": {"train": str(train_path), "eval": str(test_path), "text_field": "text", "label_field": "label",
                 "labels": [str(x) for x in labels], "max_length": settings.max_length},
        "loss": {"metric": method if feature else "procrustes", "alpha": settings.alpha if feature else 0.0,
                 "alpha_relative": True,
                 "w_task": 1.0, "w_kd": 1.0, "temperature": settings.temperature, "pooling": settings.pooling,
                 "layer_map": "uniform"},
        "trainer": short_run_trainer(settings.student_steps, settings.student_lr, settings.student_batch,
                                     logging_steps=max(1, min(10, settings.student_steps // 10))),
        "geometry": {"enabled": True, "metrics": list(settings.audit_metrics), "probe_size": settings.probe_size},
        "cache": {"enabled": True, "path": str(cache_path)},
    }


def derive_kd_cache(feature_cache: Path, kd_cache: Path) -> None:
    """The KD-only run needs the teacher's logits only: take them from the feature run's cache (same teacher,
    data and settings), so the teacher is not run again. If the runner's cache format differs, it simply
    rebuilds the cache."""
    from repgeo.distill import TeacherCache

    if kd_cache.is_file() or not feature_cache.is_file():
        return
    full = TeacherCache.load(feature_cache)
    if full is None or full.logits is None:
        return
    meta = {**full.meta, "teacher_layers": []}
    TeacherCache(full.logits, None, meta).save(kd_cache)


def run_student(settings: Any, method: str, *, narrow: bool, teacher_path: Path, student_path: Path,
                train_path: Path, test_path: Path,
                labels: list[Any], test_ids: list[list[int]], test_labels: Any, runs_dir: Path, cache_dir: Path,
                progress: bool = True, log: Any = print) -> StudentRun:
    """Distil one student with ``method`` (:func:`repgeo.recipes.student.distill_student`); evaluate it on the
    test set; return it with its histories."""
    t0 = time.perf_counter()
    suffix = "narrow" if narrow else "wide"
    name = f"{method} (narrow)" if narrow else method
    out = runs_dir / f"{method}-{suffix}"
    feature = method in FEATURE_METHODS
    cache_path = cache_dir / f"teacher_{'features' if feature else 'logits'}.pt"
    if not feature:
        derive_kd_cache(cache_dir / "teacher_features.pt", cache_path)
    if feature and not cache_path.is_file():
        log("teacher cache: running the teacher once over the training set (logits + mapped-layer features)")
    config = run_config(settings, method, teacher_path=teacher_path, student_path=student_path,
                        train_path=train_path, test_path=test_path, labels=labels, out_dir=out, cache_path=cache_path)
    geo = _GeometryEvery(settings.geometry_every)
    done = distill_student(config, callbacks=[geo, _Progress(f"student {name}", progress)],
                           on_built=lambda trainer: setattr(geo, "trainer", trainer))
    geo.trainer = None
    pred = predict(done.model, test_ids, done.tokenizer.pad_token_id, batch_size=64)
    acc = float((pred == label_ids(test_labels, labels)).mean())
    geometry = pd.DataFrame(done.geometry.history) if done.geometry is not None else None
    if done.geometry is not None:
        done.geometry.write(out)
    return StudentRun(name, method, suffix, done.model, acc, pred, done.layer_map, time.perf_counter() - t0,
                      done.alpha_eff, done.feature_loss_init, done.history, geometry, out)


def init_student(teacher: Any, data: Any, settings: Any, folder: Path, *, narrow: bool = False) -> tuple[Any, Path]:
    """The untrained student every run of one width starts from, saved in ``folder``: teacher blocks
    0, k, 2k, ... (``narrow``: the same depth at ``narrow_width``, freshly initialised), its classification head
    re-fitted by a linear probe on its own features (the teacher's head reads another layer), so every method
    starts from the same, sensible student."""
    from repgeo.distill import derive_student

    model = derive_student(teacher.model, keep_every=settings.keep_every,
                           hidden_size=settings.narrow_width if narrow else None, seed=settings.seed)
    if settings.probe_init:
        n = min(len(data.train), settings.probe_init)
        ids = encode(teacher.tokenizer, data.train["text"][:n], settings.max_length)
        linear_probe_init(model, ids, label_ids(data.train["label"][:n], data.labels), teacher.tokenizer.pad_token_id,
                          seed=settings.seed)
    model.eval()
    model.save_pretrained(folder)
    teacher.tokenizer.save_pretrained(folder)  # the runner loads a student folder's tokenizer and checks it
    return model, folder


def silence_transformers() -> None:
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover
        pass
