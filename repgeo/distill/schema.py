"""Run configuration schema: the dataclasses a YAML file is validated into (by :mod:`repgeo.distill.config`).

Example (every section but ``task``, ``output_dir``, ``teacher.path`` and ``data.train`` -- or ``data.dataset`` --
is optional)::

    task: classification            # or: instruction
    output_dir: runs/bert-procrustes
    seed: 0
    teacher: {path: models/bert-teacher}
    student: {keep_every: 2}        # or {path: models/student}, or {num_layers: 2, hidden_size: 192}
    data: {train: data/train.csv, eval: data/dev.csv, text_field: text, label_field: label, max_length: 128}
    # or a Hugging Face dataset (a hub name, or a folder written by save_to_disk), split by name:
    # data: {dataset: imdb, dataset_config: null, train_split: train, eval_split: test}
    loss:
      metric: procrustes            # any name in repgeo.metrics.available(), or pkd (Patient-KD)
      alpha: 1.0                    # weight of the feature loss
      alpha_relative: false         # true: alpha / (feature loss at initialisation), so every loss starts at alpha
      alpha_schedule: constant      # constant | linear (decays to 0) | cosine
      w_task: 1.0
      w_kd: 1.0
      temperature: 2.0
      kd: forward                   # forward: KL(teacher || student); reverse: KL(student || teacher)
      pooling: mean                 # cls | mean | last | tokens
      layer_map: uniform            # uniform | last | skip | {student_layer: teacher_layer}
    trainer:                        # any transformers.TrainingArguments field
      learning_rate: 5.0e-5
      max_steps: 200
    geometry: {metrics: [procrustes, cka, fg], probe_size: 64}
    cache: {enabled: true}

Errors raise :class:`ConfigError` naming the key (``loss.temperature: must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

TASKS = ("classification", "instruction")
#: ``loss.metric`` values that are distillation losses without a registry entry (no invariances, no analysis form):
#: ``pkd``, Patient-KD (Sun et al. 2019; :func:`repgeo.metrics.pkd_loss`)
LOSS_ONLY_METRICS = ("pkd",)
#: ``loss.kd``: the direction of the logit KD term (:func:`repgeo.distill.trainer.kd_loss`)
KD_DIRECTIONS = ("forward", "reverse")
RESERVED_TRAINER_KEYS = ("output_dir", "remove_unused_columns")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key."""


@dataclass
class TeacherConfig:
    path: str
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


@dataclass
class StudentConfig:
    path: str | None = None
    keep_every: int | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    # keep the input embeddings (and output embeddings tied to them) as loaded: a small student's vocabulary table
    # is most of its parameters, and its dense gradient and AdamW update a large share of a CPU step
    freeze_embeddings: bool = False


@dataclass
class DataConfig:
    """Where the records come from -- files (``train`` / ``eval``) or a Hugging Face dataset (``dataset``, loaded by
    :func:`repgeo.distill.hfdata.load_hf_dataset`, with its ``train_split`` / ``eval_split``) -- and how they are
    read. Exactly one of ``train`` and ``dataset`` is given in a run configuration; a task built by hand
    (``ClassificationTask(tokenizer, DataConfig(text_field="sentence"))``) needs neither."""

    train: str | None = None
    eval: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    prompt_field: str = "prompt"
    response_field: str = "response"
    labels: list[Any] | None = None
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


@dataclass
class LossConfig:
    metric: str = "procrustes"
    alpha: float = 1.0
    alpha_relative: bool = False  # alpha / (feature loss of the untrained student): see repgeo.distill.alpha
    alpha_schedule: Literal["constant", "linear", "cosine"] = "constant"
    w_task: float = 1.0
    w_kd: float = 1.0
    temperature: float = 2.0
    kd: Literal["forward", "reverse"] = "forward"  # KD_DIRECTIONS
    pooling: Literal["cls", "mean", "last", "tokens"] = "mean"
    layer_map: str | dict[Any, Any] = "uniform"
    layer_weights: list[float] | dict[Any, float] | None = None
    center: bool = True
    normalize: Literal["frobenius", "rows"] | None = "frobenius"
    projector: Literal["learned", "closed_form"] = "learned"
    projector_lr: float | None = None
    feature_tokens: Literal["all", "response"] = "all"


@dataclass
class GeometryConfig:
    enabled: bool = True
    metrics: list[str] = field(default_factory=lambda: ["procrustes", "cka", "fg", "proj_mse"])
    probe_size: int = 64


@dataclass
class CacheConfig:
    enabled: bool = False
    path: str | None = None


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    num_samples: int | None = 64


@dataclass
class RunConfig:
    task: Literal["classification", "instruction"]
    output_dir: str
    teacher: TeacherConfig
    data: DataConfig
    seed: int = 0
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- trainer: block


#: Ranges of the numeric ``trainer:`` keys (checked with the key's ``TrainingArguments`` type before any work).
TRAINER_RANGES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "eval_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (lambda v: v > 0, "> 0"),
    "logging_steps": (lambda v: v > 0, "> 0"),
    "save_steps": (lambda v: v > 0, "> 0"),
    "eval_steps": (lambda v: v > 0, "> 0"),
    "save_total_limit": (lambda v: v >= 0, ">= 0"),
    "dataloader_num_workers": (lambda v: v >= 0, ">= 0"),
    "seed": (lambda v: v >= 0, ">= 0"),
}


def runner_trainer_defaults(seed: int) -> dict[str, Any]:
    """The ``TrainingArguments`` values the runner sets unless the ``trainer:`` block sets them (the one place they
    are written: :func:`repgeo.distill.config.training_arguments` and the resume comparison both read them)."""
    return {"report_to": "none", "seed": seed, "save_strategy": "steps"}
