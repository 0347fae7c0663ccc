"""From a :class:`~repgeo.distill.config.RunConfig` to a trained student: the ``repgeo distill`` engine.

The run folder (``output_dir``) receives ``config.yaml`` (the resolved configuration), ``layer_map.json``,
the Trainer's ``checkpoint-N`` folders (each with ``feature_loss.pt`` when the loss has parameters),
``final/`` (student, tokenizer, ``feature_loss.pt``), ``metrics.json`` (final evaluation),
``geometry.csv`` / ``geometry.png`` and, when enabled, ``teacher_cache.pt`` (with ``teacher_cache.pt.json``).

Integrity: the run holds ``output_dir/.lock`` (a second run into the same folder is refused with
:class:`~repgeo._files.FolderLockedError`); nothing is written before the configuration, the models and the data
have passed their checks (a refused run leaves no folder behind); every checkpoint carries a sha256 manifest that
``--resume`` verifies; the teacher cache is keyed by the content hashes of the teacher's files and of the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
import yaml

from repgeo._files import (
    DataError,
    IntegrityError,
    atomic_write_text,
    content_sha256,
    locked_output,
    model_source_problem,
)

from .alpha import AlphaSchedule, calibrate_alpha
from .cache import TeacherCache
from .checks import check_tokenizers, hidden_sizes
from .config import ConfigError, RunConfig, resume_changes, save_config
from .feature_loss import FeatureLoss
from .geometry import GeometryProbe
from .mapping import format_layer_map, resolve_layer_map, save_layer_map
from .students import derive_student
from .tasks import ClassificationTask, InstructionTask
from .trainer import FEATURE_LOSS_FILE, DistillationTrainer, checkpoint_problem

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DistillResult:
    """What a run produced."""

    output_dir: Path
    layer_map: dict[int, int]
    metrics: dict[str, float] = field(default_factory=dict)
    trainer: DistillationTrainer | None = None


def _model_class(task: str) -> Any:
    return (transformers.AutoModelForSequenceClassification if task == "classification"
            else transformers.AutoModelForCausalLM)


def _load_tokenizer(path: str) -> Any | None:
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None


def _load_error(key: str, path: str, exc: Exception) -> ConfigError:
    return ConfigError(f"{key}: {model_source_problem(path)}. Original error: {exc}")


def build_student(cfg: RunConfig, teacher: transformers.PreTrainedModel) -> tuple[Any, Any | None]:
    """The student model (and its own tokenizer when loaded from a folder that has one)."""
    st = cfg.student
    if st.path is not None:
        kwargs = {"num_labels": teacher.config.num_labels} if cfg.task == "classification" else {}
        try:
            model = _model_class(cfg.task).from_pretrained(st.path, **kwargs)
        except (OSError, ValueError) as exc:
            raise _load_error("student.path", st.path, exc) from exc
        return model, _load_tokenizer(st.path)
    if st.keep_every is None and st.num_layers is None and st.hidden_size is None:
        raise ConfigError("student: give a path, or derive it with keep_every / num_layers / hidden_size")
    return derive_student(teacher, keep_every=st.keep_every, num_layers=st.num_layers,
                          hidden_size=st.hidden_size, seed=cfg.seed), None


def build_trainer(
    cfg: RunConfig, *, callbacks: list[Any] | None = None, verbose: bool = True
) -> tuple[DistillationTrainer, dict[int, int]]:
    """Load teacher, data and student, resolve the layer map and build the trainer (nothing is trained). Files
    (``layer_map.json``, the teacher cache, ``alpha.json``) are written only once every check has passed."""
    out = Path(cfg.output_dir)
    transformers.set_seed(cfg.seed)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(cfg.teacher.path)
    except (OSError, ValueError) as exc:
        raise _load_error("teacher.path", cfg.teacher.path, exc) from exc
    if cfg.task == "classification":
        task: Any = ClassificationTask(tokenizer, cfg.data)
    else:
        task = InstructionTask(tokenizer, cfg.data)
    train = task.dataset(cfg.data.train, cfg.data.max_train_samples)
    evals = task.dataset(cfg.data.eval, cfg.data.max_eval_samples) if cfg.data.eval else None
    for name, ds in (("training", train), ("evaluation", evals)):
        if ds is not None and ds.n_truncated:
            warnings.warn(f"{ds.n_truncated} of {len(ds)} {name} texts were cut to data.max_length="
                          f"{cfg.data.max_length} tokens", stacklevel=2)
    kwargs: dict[str, Any] = {}
    if cfg.teacher.dtype:
        kwargs["dtype"] = _DTYPES[cfg.teacher.dtype]
    try:
        teacher = _model_class(cfg.task).from_pretrained(cfg.teacher.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error("teacher.path", cfg.teacher.path, exc) from exc
    if cfg.task == "classification" and teacher.config.num_labels != task.num_labels:
        raise DataError(f"data file {cfg.data.train!r} has {task.num_labels} labels ({task.labels}) but the teacher "
                        f"{cfg.teacher.path!r} has {teacher.config.num_labels} (config.num_labels); use the data the "
                        "teacher was trained on, or list its classes in data.labels")
    student, student_tok = build_student(cfg, teacher)
    try:
        check_tokenizers(tokenizer, student_tok)
    except ValueError as exc:
        raise ConfigError(f"student.path: {exc}") from None
    s_dims, t_dims = hidden_sizes(student), hidden_sizes(teacher)
    try:
        layer_map = resolve_layer_map(cfg.loss.layer_map, len(s_dims) - 1, len(t_dims) - 1)
    except ValueError as exc:
        raise ConfigError(f"loss.layer_map: {exc}") from None
    if verbose:
        print(f"[repgeo distill] layer map: {format_layer_map(layer_map)}")
    lw = cfg.loss.layer_weights
    if isinstance(lw, dict):
        lw = {int(k): v for k, v in lw.items()}
    feature_loss = None
    if cfg.loss.alpha > 0:
        feature_loss = FeatureLoss(
            cfg.loss.metric, layer_map, student_dims=dict(enumerate(s_dims)), teacher_dims=dict(enumerate(t_dims)),
            pooling=cfg.loss.pooling, weights=lw, center=cfg.loss.center, normalize=cfg.loss.normalize,
            projector=cfg.loss.projector,
        )
    targs = {"report_to": "none", "seed": cfg.seed, "save_strategy": "steps", **cfg.trainer}
    if evals is None:
        targs["eval_strategy"] = "no"
    try:
        args = transformers.TrainingArguments(output_dir=str(out), remove_unused_columns=False, **targs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer: {' '.join(str(exc).split())}") from None
    geometry = None
    if cfg.geometry.enabled:
        probe_src = evals if evals is not None else train
        geometry = GeometryProbe(
            probe_src.items[: cfg.geometry.probe_size], task.collate, layer_map, pooling=cfg.loss.pooling,
            metrics=cfg.geometry.metrics,
            token_mask=lambda b: task.feature_mask(b, cfg.loss.feature_tokens),
            batch_size=args.per_device_eval_batch_size,
        )
    trainer = DistillationTrainer(
        model=student, teacher=teacher, task=task, feature_loss=feature_loss, alpha=cfg.loss.alpha,
        w_task=cfg.loss.w_task, w_kd=cfg.loss.w_kd, temperature=cfg.loss.temperature,
        feature_tokens=cfg.loss.feature_tokens, projector_lr=cfg.loss.projector_lr, teacher_cache=None,
        student_tokenizer=student_tok, geometry=geometry,
        generation={"max_new_tokens": cfg.generation.max_new_tokens, "num_samples": cfg.generation.num_samples},
        args=args, train_dataset=train, eval_dataset=evals,
        compute_metrics=ClassificationTask.compute_metrics if cfg.task == "classification" else None,
        callbacks=callbacks,
    )
    if cfg.task == "classification":
        labels = [str(x) for x in task.labels]
        student.config.id2label = dict(enumerate(labels))
        student.config.label2id = {lab: i for i, lab in enumerate(labels)}
    if args.should_save:  # every check has passed: the run folder's first files
        out.mkdir(parents=True, exist_ok=True)
        save_layer_map(layer_map, out / "layer_map.json")
    if cfg.cache.enabled:
        trainer.teacher_cache = _teacher_cache(cfg, teacher, train, task, feature_loss, layer_map, args.device)
    if trainer.feature_loss is not None:
        _set_alpha(cfg, trainer, out, verbose)
    return trainer, layer_map


def _set_alpha(cfg: RunConfig, trainer: DistillationTrainer, out: Path, verbose: bool) -> None:
    """``loss.alpha_relative``: calibrate on the untrained student (the same value on every rank and on resume,
    recorded in ``alpha.json``); ``loss.alpha_schedule``: a callback rescales it at every step."""
    info: dict[str, Any] = {"alpha": cfg.loss.alpha, "relative": cfg.loss.alpha_relative,
                            "schedule": cfg.loss.alpha_schedule}
    if cfg.loss.alpha_relative:
        alpha_eff, l0 = calibrate_alpha(trainer, cfg.loss.alpha)
        info.update(alpha_eff=alpha_eff, feature_loss_init=l0)
        if verbose:
            print(f"[repgeo distill] feature loss at initialisation {l0:.4g}: alpha = {cfg.loss.alpha:g} / {l0:.4g} "
                  f"= {alpha_eff:.4g}")
    if cfg.loss.alpha_schedule != "constant":
        schedule = AlphaSchedule(cfg.loss.alpha_schedule)
        schedule.trainer = trainer
        trainer.add_callback(schedule)
    trainer.alpha_info = info
    if trainer.args.should_save:
        atomic_write_text(out / "alpha.json", json.dumps(info, indent=1) + "\n")


def _teacher_cache(cfg: RunConfig, teacher: Any, train: Any, task: Any, feature_loss: Any, layer_map: dict[int, int],
                   device: Any) -> TeacherCache:
    """The teacher cache of this run: reused when its recorded inputs (content hashes of the teacher's files and of
    the training data, and every setting its rows depend on) match and its file is intact, else (re)built."""
    path = Path(cfg.cache.path) if cfg.cache.path else Path(cfg.output_dir) / "teacher_cache.pt"
    teacher_path = Path(cfg.teacher.path)
    meta = {
        "teacher": str(teacher_path.resolve()), "teacher_dtype": cfg.teacher.dtype,
        "teacher_sha256": content_sha256(teacher_path) if teacher_path.exists() else None,
        "data_sha256": content_sha256(cfg.data.train), "n": len(train),
        "max_train_samples": cfg.data.max_train_samples, "text_field": cfg.data.text_field,
        "label_field": cfg.data.label_field, "prompt_field": cfg.data.prompt_field,
        "response_field": cfg.data.response_field, "labels": [str(x) for x in getattr(task, "labels", None) or []],
        "max_length": cfg.data.max_length, "pooling": cfg.loss.pooling,
        "teacher_layers": sorted(set(layer_map.values())) if feature_loss is not None else [],
        "feature_tokens": cfg.loss.feature_tokens, "logits": cfg.loss.w_kd > 0, "task": cfg.task,
    }
    try:
        cache = TeacherCache.load(path, meta)
    except IntegrityError as exc:
        warnings.warn(f"teacher cache not reused, rebuilt: {exc}", stacklevel=2)
        cache = None
    if cache is None:
        teacher.to(device)
        cache = TeacherCache.build(teacher, train, task.collate, task=task, feature_loss=feature_loss,
                                   feature_tokens=cfg.loss.feature_tokens, with_logits=cfg.loss.w_kd > 0, meta=meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.save(path)
    return cache


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_distillation(
    cfg: RunConfig, *, resume: bool = False, callbacks: list[Any] | None = None, verbose: bool = True
) -> DistillResult:
    """Train a student as configured; ``resume=True`` continues from the run folder's last complete checkpoint
    (weights, optimizer, scheduler, projectors and RNG state).

    Resuming refuses (:class:`~repgeo.distill.config.ConfigError`) a run folder whose ``config.yaml`` differs from
    ``cfg`` in a key that changes the trained weights (model, data, loss, seed, optimisation, schedule length),
    naming each key with its old and new value. Keys that only touch logging, saving, evaluation, the teacher
    cache or ``output_dir`` may change (:data:`~repgeo.distill.config.RESUME_SAFE_KEYS`,
    :data:`~repgeo.distill.config.RESUME_SAFE_TRAINER_KEYS`). A checkpoint whose writing was interrupted (no
    manifest, or a file that differs from it in size or sha256) is skipped with one warning naming the bad file;
    when no checkpoint is intact the resume is refused (:class:`~repgeo._files.IntegrityError`).

    ``output_dir`` is locked for the run (:class:`~repgeo._files.FolderLockedError` when another run holds it).
    """
    out = Path(cfg.output_dir)
    lock = locked_output(out, "distillation run", "output_dir") if _main_process() else contextlib.nullcontext()
    with lock:
        return _run(cfg, out, resume, callbacks, verbose)


def _run(cfg: RunConfig, out: Path, resume: bool, callbacks: list[Any] | None, verbose: bool) -> DistillResult:
    checkpoint = None
    if resume:
        if not out.is_dir() or transformers.trainer_utils.get_last_checkpoint(str(out)) is None:
            raise FileNotFoundError(f"--resume: no checkpoint-N folder in {out}")
        _check_resume_config(cfg, out)
        _check_resume_inputs(cfg, out)
        checkpoint, skipped = _last_intact_checkpoint(out)
        if checkpoint is None:
            raise IntegrityError(f"--resume: no intact checkpoint in {out}: {'; '.join(skipped)}; run without "
                                 "--resume to start over")
    trainer, layer_map = build_trainer(cfg, callbacks=callbacks, verbose=verbose)
    if checkpoint is not None:
        has_projectors = trainer.feature_loss is not None and any(True for _ in trainer.feature_loss.parameters())
        if has_projectors and not (Path(checkpoint) / FEATURE_LOSS_FILE).is_file():
            raise IntegrityError(f"--resume: {Path(checkpoint) / FEATURE_LOSS_FILE} is missing (the projectors)")
        if skipped:
            warnings.warn(f"--resume: skipping incomplete checkpoint(s) {', '.join(p.split(': ')[0] for p in skipped)} "
                          f"in {out} ({'; '.join(skipped)}); resuming from {Path(checkpoint).name}", stacklevel=3)
        if verbose:
            print(f"[repgeo distill] resuming from {checkpoint}")
    save_config(cfg, out / "config.yaml")
    if trainer.args.should_save and not resume:
        atomic_write_text(out / INPUTS_FILE, json.dumps(_input_hashes(cfg), indent=1) + "\n")
    trainer.train(resume_from_checkpoint=checkpoint)
    final = out / "final"
    trainer.save_model(str(final))
    if trainer.args.should_save:
        trainer.save_feature_loss(str(final))
    metrics: dict[str, float] = {}
    if trainer.eval_dataset is not None:
        last = [h for h in trainer.state.log_history if "eval_loss" in h]
        if last and last[-1].get("step") == trainer.state.global_step:  # just evaluated: reuse
            metrics = {k: v for h in trainer.state.log_history if h.get("step") == trainer.state.global_step
                       and any(k.startswith(("eval_", "geometry/")) for k in h) for k, v in h.items()}
        else:
            metrics = trainer.evaluate()
    if trainer.args.should_save:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if trainer.geometry is not None:
            trainer.geometry.write(out)
    if verbose and metrics:
        print("[repgeo distill] " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                              if isinstance(v, float) and not k.startswith("eval_geometry")))
    return DistillResult(out, layer_map, metrics, trainer)


def _check_resume_config(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume ``out`` with a configuration that changes the trained weights (see run_distillation)."""
    path = out / "config.yaml"
    if not path.is_file():
        return  # nothing to compare against (the file is written before the first step, so only by hand)
    saved = yaml.safe_load(path.read_text()) or {}
    changes = resume_changes(saved, cfg)
    if changes:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"--resume: {path} was written with a different configuration; these keys change the trained weights: "
            f"{listed}. Resume with the saved values, or start a new run in another output_dir"
        )


INPUTS_FILE = "inputs.json"


def _input_hashes(cfg: RunConfig) -> dict[str, str | None]:
    """sha256 of the content the trained weights depend on: the teacher's and student's files and the data."""
    paths = {"teacher.path": cfg.teacher.path, "student.path": cfg.student.path, "data.train": cfg.data.train}
    return {k: content_sha256(v) if v is not None and Path(v).exists() else None for k, v in paths.items()}


def _check_resume_inputs(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume when a model folder or the training data changed content since the run started."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return  # a run folder written before repgeo recorded its inputs
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"--resume: {path} is damaged ({type(exc).__name__})") from None
    now = _input_hashes(cfg)
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if changed:
        where = ", ".join(f"{k} {getattr(getattr(cfg, k.split('.')[0]), k.split('.')[1])!r}" for k in changed)
        raise IntegrityError(f"--resume: the content of {where} changed since the run in {out} started (sha256 "
                             f"recorded in {path}); resume with the original files, or start a new run in another "
                             "output_dir")


def _last_intact_checkpoint(out: Path) -> tuple[str | None, list[str]]:
    """The highest-step intact ``checkpoint-N`` folder of ``out`` (see
    :func:`~repgeo.distill.trainer.checkpoint_problem`) and ``"checkpoint-M: problem"`` for each bad one above it."""
    steps = []
    for p in out.iterdir():
        name = p.name
        if p.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            steps.append((int(name[len("checkpoint-"):]), p))
    skipped = []
    for _, p in sorted(steps, reverse=True):
        problem = checkpoint_problem(p, with_projectors=False)
        if problem is None:
            return str(p), skipped
        skipped.append(f"{p.name}: {problem}")
    return None, skipped
