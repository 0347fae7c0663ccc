"""``DistillationArguments``: ``transformers.TrainingArguments`` plus the distillation settings, as TRL's configs do.

Use it as the ``args`` of :class:`~repgeo.distill.trainer.DistillationTrainer`; the trainer reads ``alpha``,
``w_task``, ``w_kd``, ``temperature``, ``kd``, ``feature_tokens`` and ``projector_lr`` from it (a keyword given to the
trainer itself wins) and, when no ``feature_loss`` is given and ``alpha > 0``, builds the
:class:`~repgeo.distill.feature_loss.FeatureLoss` from ``metric``, ``layer_map``, ``pooling``, ``center``,
``normalize`` and ``projector``::

    args = DistillationArguments(output_dir="runs/x", max_steps=200, metric="procrustes", alpha=1.0,
                                 temperature=2.0, layer_map="uniform", pooling="mean")
    trainer = DistillationTrainer(student, teacher, task=ClassificationTask(tokenizer, DataConfig()),
                                  args=args, train_dataset=dataset)

The meaning of each setting is that of the ``loss:`` section of a run configuration
(:mod:`repgeo.distill.schema`); a YAML run builds its ``args`` with
:func:`repgeo.distill.config.training_arguments`, so both paths train with the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import transformers


@dataclass
class DistillationArguments(transformers.TrainingArguments):
    """``TrainingArguments`` with the distillation loss settings (see the module docstring)."""

    alpha: float = field(default=1.0, metadata={"help": "weight of the feature loss (0: none)"})
    w_task: float = field(default=1.0, metadata={"help": "weight of the task loss (cross-entropy)"})
    w_kd: float = field(default=1.0, metadata={"help": "weight of the logit KD term T^2 KL(teacher_T || student_T)"})
    temperature: float = field(default=2.0, metadata={"help": "KD temperature T (> 0)"})
    kd: str = field(default="forward", metadata={
        "help": "forward: KL(teacher_T || student_T); reverse: KL(student_T || teacher_T) (token-level MiniLLM-style)"})
    metric: str = field(default="procrustes", metadata={
        "help": "feature-loss metric (repgeo.metrics.available()) or pkd (Patient-KD)"})
    layer_map: Any = field(default="uniform", metadata={
        "help": "uniform | last | skip | {student_layer: teacher_layer}"})
    pooling: str = field(default="mean", metadata={"help": "cls | mean | last | tokens"})
    center: bool = field(default=True, metadata={"help": "center features before the metric"})
    normalize: str | None = field(default="frobenius", metadata={"help": "frobenius | rows | None"})
    projector: str = field(default="learned", metadata={"help": "learned | closed_form (projection-MSE)"})
    projector_lr: float | None = field(default=None, metadata={
        "help": "learning rate of the feature loss's projectors (default: learning_rate)"})
    feature_tokens: str = field(default="all", metadata={
        "help": "all | response (instruction task: the feature loss on response tokens only)"})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "kept False: the task's examples carry example_index (teacher cache), which the model does not take"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        for name in ("alpha", "w_task", "w_kd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        from repgeo.metrics import get

        from .schema import KD_DIRECTIONS, LOSS_ONLY_METRICS

        if self.metric not in LOSS_ONLY_METRICS:
            try:
                get(self.metric)
            except ValueError as exc:  # "unknown metric 'x'; available: ...; did you mean 'y'?"
                raise ValueError(f"metric: {exc} (or the loss {', '.join(LOSS_ONLY_METRICS)})") from None
        for name, allowed in (("pooling", ("cls", "mean", "last", "tokens")), ("feature_tokens", ("all", "response")),
                              ("projector", ("learned", "closed_form")), ("kd", KD_DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


#: the settings the trainer reads from ``DistillationArguments`` (and their defaults for plain ``TrainingArguments``)
TRAINER_SETTINGS = ("alpha", "w_task", "w_kd", "temperature", "feature_tokens", "projector_lr", "kd")


def setting(args: Any, name: str, given: Any) -> Any:
    """``given`` when not None, else ``args.<name>`` for :class:`DistillationArguments`, else the default."""
    if given is not None:
        return given
    if isinstance(args, DistillationArguments):
        return getattr(args, name)
    return DistillationArguments.__dataclass_fields__[name].default
