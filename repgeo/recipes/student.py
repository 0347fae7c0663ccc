"""One student distilled through the ``repgeo distill`` engine, for code that runs many (the demo, the studies).

:func:`distill_student` validates a run configuration, builds the trainer
(:func:`repgeo.distill.build_trainer`: teacher cache, relative α calibration, geometry probe), writes the
resolved ``config.yaml`` into the run folder, trains quietly (no per-log prints, no Trainer progress bar) and
returns the trained student with what the caller reports: the layer map, the effective α and the feature loss
at initialisation (``alpha_eff = alpha / L_feat(init)`` with ``loss.alpha_relative``), the Trainer's log
history, the geometry probe and the training time. The trainer itself is released before returning.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DistilledStudent:
    """What :func:`distill_student` returns. ``alpha_eff`` is 0 and ``feature_loss_init`` NaN without a feature
    loss; ``tokenizer`` is the teacher's (the run's ``processing_class``); ``geometry`` is the run's
    :class:`~repgeo.distill.GeometryProbe` (None when disabled)."""

    model: Any
    teacher: Any
    tokenizer: Any
    layer_map: dict[int, int]
    alpha_eff: float
    feature_loss_init: float
    steps: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    geometry: Any | None = None
    output_dir: Path | None = None


def short_run_trainer(steps: int, lr: float, batch: int, *, logging_steps: int) -> dict[str, Any]:
    """The ``trainer:`` section of a short, quiet run (the demo's and the study's students): ``steps`` of AdamW at
    ``lr`` (torch's fused AdamW: the same update in one kernel) with 10 % linear warm-up, weight decay 0.01,
    batches of ``batch`` texts of similar lengths; no checkpoints, no progress bar, no reporting."""
    return {"max_steps": steps, "learning_rate": lr, "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": 64, "warmup_steps": max(1, steps // 10), "weight_decay": 0.01,
            "logging_steps": logging_steps, "save_strategy": "no", "disable_tqdm": True,
            "dataloader_pin_memory": False, "report_to": "none", "train_sampling_strategy": "group_by_length",
            "optim": "adamw_torch_fused"}


def distill_student(config: Any, *, callbacks: list[Any] | None = None,
                    on_built: Callable[[Any], None] | None = None) -> DistilledStudent:
    """Train one student from ``config`` (a dict for :func:`repgeo.distill.config_from_dict`, or a
    :class:`~repgeo.distill.RunConfig`). ``callbacks`` are Trainer callbacks; ``on_built(trainer)`` runs once the
    trainer is built, before training (e.g. to hand a callback the trainer)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from repgeo.distill import RunConfig, build_trainer, config_from_dict, save_config

    cfg = config if isinstance(config, RunConfig) else config_from_dict(config)
    trainer, layer_map = build_trainer(cfg, callbacks=callbacks, verbose=False)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if on_built is not None:
        on_built(trainer)
    out = Path(cfg.output_dir)
    save_config(cfg, out / "config.yaml")
    alpha_eff, l0 = 0.0, float("nan")
    if trainer.feature_loss is not None:  # calibrated by the runner with loss.alpha_relative
        alpha_eff = trainer.alpha_info.get("alpha_eff", cfg.loss.alpha)
        l0 = trainer.alpha_info.get("feature_loss_init", float("nan"))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    result = DistilledStudent(model, trainer.teacher, trainer.processing_class, dict(layer_map), alpha_eff, l0,
                              trainer.state.global_step, seconds, list(trainer.state.log_history), trainer.geometry,
                              out)
    del trainer
    gc.collect()
    return result
