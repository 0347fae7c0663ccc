"""From a :class:`~repgeo.distill.config.RunConfig` to a trained student: the ``repgeo distill`` engine.

The run folder (``output_dir``) receives ``config.yaml`` (the resolved configuration), ``layer_map.json``,
the Trainer's ``checkpoint-N`` folders (each with ``feature_loss.pt`` when the loss has parameters),
``final/`` (student, tokenizer, ``feature_loss.pt``), ``metrics.json`` (final evaluation),
``geometry.csv`` / ``geometry.png`` and, when enabled, ``teacher_cache.pt`` (with ``teacher_cache.pt.json``).

Integrity: the run holds ``output_dir/.lock`` (a second run into the same folder is refused with
:class:`~repgeo._files.FolderLockedError`); nothing is written before the configuration, the models and the data
have passed their checks (a refused run leaves no folder behind); every checkpoint carries a sha256 manifest that
``--resume`` verifies; the teacher cache is keyed by the content hashes of the teacher's files and of the data.
The content hashes of the inputs are computed once per run (:func:`~repgeo.distill.resume.input_hashes`) and
passed to the resume check, ``inputs.json`` and the teacher cache.

A student loaded from ``student.path`` whose own tokenizer differs from the teacher's reads the text through it,
and the teacher through its own (classification with pooled features; :func:`check_separate_tokenizers` refuses
the rest with the key and the reason); the final student is saved with its own tokenizer.

What differs between tasks is asked of the task object (:class:`~repgeo.distill.tasks.Task`: its model class,
label check, metrics and evaluation scores), never decided here by its name.
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

from repgeo._files import IntegrityError, atomic_write_text, locked_output, model_source_problem

from .alpha import AlphaSchedule, calibrate_alpha
from .cache import TeacherCache
from .checks import check_tokenizers, hidden_sizes, tokenizer_mismatch
from .config import ConfigError, RunConfig, save_config, training_arguments
from .feature_loss import FeatureLoss
from .geometry import GeometryProbe
from .hfdata import load_hf_dataset, pick_split
from .mapping import format_layer_map, resolve_layer_map, save_layer_map
from .resume import INPUTS_FILE, check_resumable, input_hashes, resume_point
from .students import derive_student
from .tasks import Task, get_task
from .trainer import DistillationTrainer, build_feature_loss

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: the inputs the teacher cache is keyed by (see :func:`~repgeo.distill.resume.input_hashes`)
CACHE_INPUTS = ("teacher.path", "data.train", "data.dataset")


@dataclass
class DistillResult:
    """What a run produced."""

    output_dir: Path
    layer_map: dict[int, int]
    metrics: dict[str, float] = field(default_factory=dict)
    trainer: DistillationTrainer | None = None


def _load_tokenizer(path: str) -> Any | None:
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None


def _load_error(key: str, path: str, exc: Exception) -> ConfigError:
    return ConfigError(f"{key}: {model_source_problem(path)}. Original error: {exc}")


def build_student(cfg: RunConfig, task: Task, teacher: transformers.PreTrainedModel) -> tuple[Any, Any | None]:
    """The student model (and its own tokenizer when loaded from a folder that has one), its input embeddings
    frozen with ``student.freeze_embeddings``."""
    st = cfg.student
    tokenizer = None
    if st.path is not None:
        try:
            model = task.model_class().from_pretrained(st.path, **task.student_kwargs(teacher))
        except (OSError, ValueError) as exc:
            raise _load_error("student.path", st.path, exc) from exc
        tokenizer = _load_tokenizer(st.path)
    elif st.keep_every is None and st.num_layers is None and st.hidden_size is None:
        raise ConfigError("student: give a path, or derive it with keep_every / num_layers / hidden_size")
    else:
        model = derive_student(teacher, keep_every=st.keep_every, num_layers=st.num_layers,
                               hidden_size=st.hidden_size, seed=cfg.seed)
    if st.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    return model, tokenizer


def _data_sources(cfg: RunConfig) -> tuple[Any, Any | None]:
    """The training and evaluation sources: ``data.train`` / ``data.eval`` (files), or the ``data.train_split`` /
    ``data.eval_split`` of ``data.dataset`` (:func:`~repgeo.distill.hfdata.load_hf_dataset`)."""
    d = cfg.data
    if d.dataset is None:
        return d.train, d.eval
    try:
        data = load_hf_dataset(d.dataset, d.dataset_config)
        train = pick_split(data, d.train_split, "data.train_split")
        evals = pick_split(data, d.eval_split, "data.eval_split") if d.eval_split is not None else None
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.dataset: {d.dataset!r} could not be loaded: {exc}") from None
    return train, evals


def _make_task(cfg: RunConfig) -> Task:
    """The task with the teacher's tokenizer; or, for a student (``student.path``) with a tokenizer of its own that
    differs, with the student's and the teacher's (each model reads the text through its own: classification with
    pooled features only, see :func:`check_separate_tokenizers`)."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(cfg.teacher.path)
    except (OSError, ValueError) as exc:
        raise _load_error("teacher.path", cfg.teacher.path, exc) from exc
    task_cls = get_task(cfg.task)
    student_tok = _load_tokenizer(cfg.student.path) if cfg.student.path is not None else None
    problem = tokenizer_mismatch(tokenizer, student_tok)
    if problem is None:
        return task_cls(tokenizer, cfg.data)
    check_separate_tokenizers(cfg, task_cls, problem)
    return task_cls(student_tok, cfg.data, teacher_tokenizer=tokenizer)


def check_separate_tokenizers(cfg: RunConfig, task_cls: type[Task], problem: str) -> None:
    """Raise :class:`~repgeo.distill.config.ConfigError` when a student whose tokenizer differs from the
    teacher's (``problem`` says how) cannot read the text through its own: a task whose terms compare tokens
    (``Task.one_tokenizer``), or features compared token by token (``loss.pooling: tokens``; also the geometry
    probe's pooling)."""
    if task_cls.one_tokenizer:
        raise ConfigError(f"student.path: {problem}; {task_cls.one_tokenizer}, so the student must use the "
                          "teacher's tokenizer")
    if cfg.loss.pooling == "tokens" and (cfg.loss.alpha > 0 or cfg.geometry.enabled):
        raise ConfigError(
            f"loss.pooling: 'tokens' compares teacher and student features token by token, but the student "
            f"(student.path) reads the text through its own tokenizer ({problem}), so their tokens do not "
            "correspond; use cls, mean or last (one row per example), or a student with the teacher's tokenizer")


def _task_and_data(cfg: RunConfig) -> tuple[Task, Any, Any | None]:
    """The task (:func:`_make_task`), its training set and its evaluation set (None without one)."""
    task = _make_task(cfg)
    d = cfg.data
    train_src, eval_src = _data_sources(cfg)
    train = task.dataset(train_src, d.max_train_samples, name=f"{d.dataset}[{d.train_split}]")
    evals = (task.dataset(eval_src, d.max_eval_samples, name=f"{d.dataset}[{d.eval_split}]")
             if eval_src is not None else None)
    for name, ds in (("training", train), ("evaluation", evals)):
        if ds is not None and ds.n_truncated:
            warnings.warn(f"{ds.n_truncated} of {len(ds)} {name} texts were cut to data.max_length="
                          f"{cfg.data.max_length} tokens", stacklevel=3)
    return task, train, evals


def _models(cfg: RunConfig, task: Task) -> tuple[Any, Any, Any | None]:
    """Teacher (checked against the task's data), student and the student's own tokenizer (or None)."""
    kwargs: dict[str, Any] = {"dtype": _DTYPES[cfg.teacher.dtype]} if cfg.teacher.dtype else {}
    try:
        teacher = task.model_class().from_pretrained(cfg.teacher.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error("teacher.path", cfg.teacher.path, exc) from exc
    task.check_teacher(teacher, cfg.teacher.path)
    student, student_tok = build_student(cfg, task, teacher)
    try:
        check_tokenizers(task.tokenizer, student_tok)
    except ValueError as exc:
        raise ConfigError(f"student.path: {exc}") from None
    return teacher, student, student_tok


def _feature_loss(cfg: RunConfig, layer_map: dict[int, int], s_dims: list[int], t_dims: list[int]
                  ) -> FeatureLoss | None:
    if cfg.loss.alpha <= 0:
        return None
    lw = cfg.loss.layer_weights
    if isinstance(lw, dict):
        lw = {int(k): v for k, v in lw.items()}
    return build_feature_loss(cfg.loss, layer_map, s_dims, t_dims, lw)


def _geometry(cfg: RunConfig, task: Task, probe_src: Any, layer_map: dict[int, int], batch_size: int
              ) -> GeometryProbe | None:
    if not cfg.geometry.enabled:
        return None
    return GeometryProbe(
        probe_src.items[: cfg.geometry.probe_size], task.collate, layer_map, pooling=cfg.loss.pooling,
        metrics=cfg.geometry.metrics, token_mask=lambda b: task.feature_mask(b, cfg.loss.feature_tokens),
        batch_size=batch_size,
    )


def build_trainer(
    cfg: RunConfig, *, callbacks: list[Any] | None = None, verbose: bool = True,
    hashes: dict[str, str | None] | None = None,
) -> tuple[DistillationTrainer, dict[int, int]]:
    """Load teacher, data and student, resolve the layer map and build the trainer (nothing is trained). Files
    (``layer_map.json``, the teacher cache, ``alpha.json``) are written only once every check has passed.
    ``hashes``: the inputs' content hashes when the caller has them (:func:`~repgeo.distill.resume.input_hashes`;
    computed here when the teacher cache needs them and they are not given)."""
    out = Path(cfg.output_dir)
    transformers.set_seed(cfg.seed)
    task, train, evals = _task_and_data(cfg)
    teacher, student, student_tok = _models(cfg, task)
    s_dims, t_dims = hidden_sizes(student), hidden_sizes(teacher)
    try:
        layer_map = resolve_layer_map(cfg.loss.layer_map, len(s_dims) - 1, len(t_dims) - 1)
    except ValueError as exc:
        raise ConfigError(f"loss.layer_map: {exc}") from None
    if verbose:
        print(f"[repgeo distill] layer map: {format_layer_map(layer_map)}")
    feature_loss = _feature_loss(cfg, layer_map, s_dims, t_dims)
    args = training_arguments(cfg, evaluate=evals is not None)
    geometry = _geometry(cfg, task, evals if evals is not None else train, layer_map, args.per_device_eval_batch_size)
    trainer = DistillationTrainer(
        model=student, teacher=teacher, task=task, feature_loss=feature_loss, alpha=cfg.loss.alpha,
        w_task=cfg.loss.w_task, w_kd=cfg.loss.w_kd, temperature=cfg.loss.temperature,
        feature_tokens=cfg.loss.feature_tokens, projector_lr=cfg.loss.projector_lr, teacher_cache=None,
        student_tokenizer=student_tok, geometry=geometry,
        generation={"max_new_tokens": cfg.generation.max_new_tokens, "num_samples": cfg.generation.num_samples},
        args=args, train_dataset=train, eval_dataset=evals, callbacks=callbacks,
    )
    task.prepare_student(student)
    if args.should_save:  # every check has passed: the run folder's first files
        out.mkdir(parents=True, exist_ok=True)
        save_layer_map(layer_map, out / "layer_map.json")
    if cfg.cache.enabled:
        hashes = hashes if hashes is not None else input_hashes(cfg, CACHE_INPUTS)
        trainer.teacher_cache = _teacher_cache(cfg, trainer, train, layer_map, hashes)
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


def _teacher_cache(cfg: RunConfig, trainer: DistillationTrainer, train: Any, layer_map: dict[int, int],
                   hashes: dict[str, str | None]) -> TeacherCache:
    """The teacher cache of this run: reused when its recorded inputs (content hashes of the teacher's files and of
    the training data, and every setting its rows depend on) match and its file is intact, else (re)built."""
    path = Path(cfg.cache.path) if cfg.cache.path else Path(cfg.output_dir) / "teacher_cache.pt"
    task, feature_loss = trainer.task, trainer.feature_loss
    meta = {
        "teacher": str(Path(cfg.teacher.path).resolve()), "teacher_dtype": cfg.teacher.dtype,
        "teacher_sha256": hashes["teacher.path"], "n": len(train),
        "data_sha256": hashes["data.train"] or hashes.get("data.dataset"),
        "dataset": cfg.data.dataset, "dataset_config": cfg.data.dataset_config, "train_split": cfg.data.train_split,
        "max_train_samples": cfg.data.max_train_samples, "text_field": cfg.data.text_field,
        "label_field": cfg.data.label_field, "prompt_field": cfg.data.prompt_field,
        "response_field": cfg.data.response_field, "labels": [str(x) for x in task.labels or []],
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
        trainer.teacher.to(trainer.args.device)
        cache = TeacherCache.build(trainer.teacher, train, task.collate, task=task, feature_loss=feature_loss,
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
    cache or ``output_dir`` may change (:data:`~repgeo.distill.resume.RESUME_SAFE_KEYS`,
    :data:`~repgeo.distill.resume.RESUME_SAFE_TRAINER_KEYS`). A checkpoint whose writing was interrupted (no
    manifest, or a file that differs from it in size or sha256) is skipped with one warning naming the bad file;
    when no checkpoint is intact the resume is refused (:class:`~repgeo._files.IntegrityError`).

    ``output_dir`` is locked for the run (:class:`~repgeo._files.FolderLockedError` when another run holds it).
    """
    out = Path(cfg.output_dir)
    lock = locked_output(out, "distillation run", "output_dir") if _main_process() else contextlib.nullcontext()
    with lock:
        return _run(cfg, out, resume, callbacks, verbose)


def _run(cfg: RunConfig, out: Path, resume: bool, callbacks: list[Any] | None, verbose: bool) -> DistillResult:
    hashes = input_hashes(cfg)  # once per run: the resume check, inputs.json and the teacher cache share them
    checkpoint, skipped = resume_point(cfg, out, hashes) if resume else (None, [])
    trainer, layer_map = build_trainer(cfg, callbacks=callbacks, verbose=verbose, hashes=hashes)
    if checkpoint is not None:
        check_resumable(trainer, checkpoint, skipped, out)
        if verbose:
            print(f"[repgeo distill] resuming from {checkpoint}")
    save_config(cfg, out / "config.yaml")
    if trainer.args.should_save and not resume:
        atomic_write_text(out / INPUTS_FILE, json.dumps(hashes, indent=1) + "\n")
    trainer.train(resume_from_checkpoint=checkpoint)
    return DistillResult(out, layer_map, _finish(trainer, out, verbose), trainer)


def _finish(trainer: DistillationTrainer, out: Path, verbose: bool) -> dict[str, float]:
    """Save ``final/``, evaluate (reusing an evaluation at the last step), write ``metrics.json`` and the geometry
    history; the final metrics."""
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
    return metrics
