"""Resuming a run: what may change between a run and its ``--resume``, the content hashes of its inputs, and the
last intact checkpoint.

A run records in ``inputs.json`` the sha256 of the content its trained weights depend on (teacher and student
folders, training data); :func:`input_hashes` computes them once per run and the run passes them on (to this
check, to ``inputs.json`` and to the teacher cache's key), so no input is hashed twice.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from repgeo._files import IntegrityError, content_sha256

from .config import parse_saved
from .schema import ConfigError, RunConfig, runner_trainer_defaults
from .trainer import FEATURE_LOSS_FILE, checkpoint_problem

#: Sections and keys that may differ between a run and its ``--resume``: where files go, what is logged, saved
#: or evaluated, and the teacher cache (same teacher outputs up to float rounding). Everything else changes the
#: trained weights and is refused.
RESUME_SAFE_KEYS = ("output_dir", "data.eval", "data.max_eval_samples", "geometry", "generation", "cache")
RESUME_SAFE_TRAINER_KEYS = frozenset({
    "logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter",
    "log_level", "log_level_replica", "log_on_each_node", "report_to", "run_name", "project", "trackio_space_id",
    "disable_tqdm", "save_strategy", "save_steps", "save_total_limit", "save_safetensors", "save_on_each_node",
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "per_device_eval_batch_size",
    "eval_accumulation_steps", "eval_do_concat_batches", "prediction_loss_only", "include_for_metrics",
    "batch_eval_metrics", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "skip_memory_metrics", "include_num_input_tokens_seen", "push_to_hub",
    "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
    "overwrite_output_dir",
})
_PATH_KEYS = ("teacher.path", "student.path", "data.train", "data.dataset")


def _trainer_defaults(seed: Any) -> dict[str, Any]:
    """Every ``TrainingArguments`` default, with the runner's own
    (:func:`~repgeo.distill.schema.runner_trainer_defaults`)."""
    import transformers

    out = {f.name: f.default for f in dataclasses.fields(transformers.TrainingArguments)
           if f.init and f.default is not dataclasses.MISSING}
    return {**out, **runner_trainer_defaults(seed)}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


def _resume_safe(key: str) -> bool:
    if key.startswith("trainer."):
        return key.split(".")[1] in RESUME_SAFE_TRAINER_KEYS
    return any(key == k or key.startswith(k + ".") for k in RESUME_SAFE_KEYS)


def resume_changes(saved: dict[str, Any], cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for the keys that differ between ``saved`` (the run folder's
    ``config.yaml``) and ``cfg`` and that change the trained weights (every key but :data:`RESUME_SAFE_KEYS` and
    :data:`RESUME_SAFE_TRAINER_KEYS`). Trainer keys left unset count as their ``TrainingArguments`` default and
    paths are compared resolved, so spelling a value differently is not a change."""
    try:
        old_cfg: Any = parse_saved(saved).to_dict()
    except ConfigError:  # written by another repgeo version: compare what is there
        old_cfg = saved or {}
    both = [yaml.safe_load(yaml.safe_dump(d, sort_keys=False)) for d in (old_cfg, cfg.to_dict())]
    flat = []
    for d in both:
        trainer = {**_trainer_defaults(d.get("seed", 0)), **(d.get("trainer") or {})}
        flat.append(_flatten({**d, "trainer": trainer}, "", {}))
    old, new = flat
    changes = {}
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str):
            same = Path(a).resolve() == Path(b).resolve()
        else:
            same = a == b
        if not same and not _resume_safe(key):
            changes[key] = (a, b)
    return changes

INPUTS_FILE = "inputs.json"
#: the configuration keys whose content (a file or folder) the trained weights depend on
INPUT_KEYS = _PATH_KEYS


def _config_value(cfg: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def input_hashes(cfg: RunConfig, keys: tuple[str, ...] = INPUT_KEYS) -> dict[str, str | None]:
    """sha256 of the content the trained weights depend on (:data:`INPUT_KEYS`: the teacher's and student's files
    and the training data, or only ``keys``); None for a key that is unset or names no local file (a hub name)."""
    out: dict[str, str | None] = {}
    for key in keys:
        value = _config_value(cfg, key)
        out[key] = content_sha256(value) if value is not None and Path(value).exists() else None
    return out


def check_config(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume ``out`` with a configuration that changes the trained weights (see
    :func:`~repgeo.distill.run.run_distillation`)."""
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


def check_inputs(cfg: RunConfig, out: Path, hashes: dict[str, str | None]) -> None:
    """Refuse to resume when a model folder or the training data changed content (``hashes``, from
    :func:`input_hashes`) since the run started."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return  # a run folder written before repgeo recorded its inputs
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"--resume: {path} is damaged ({type(exc).__name__})") from None
    changed = [k for k in hashes if k in saved and saved[k] != hashes[k]]
    if changed:
        where = ", ".join(f"{k} {_config_value(cfg, k)!r}" for k in changed)
        raise IntegrityError(f"--resume: the content of {where} changed since the run in {out} started (sha256 "
                             f"recorded in {path}); resume with the original files, or start a new run in another "
                             "output_dir")


def last_intact_checkpoint(out: Path) -> tuple[str | None, list[str]]:
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


def resume_point(cfg: RunConfig, out: Path, hashes: dict[str, str | None]) -> tuple[str, list[str]]:
    """The checkpoint to resume ``out`` from, after the configuration and input checks, and the incomplete ones
    skipped above it. No checkpoint folder raises ``FileNotFoundError``; none intact, :class:`IntegrityError`."""
    import transformers

    if not out.is_dir() or transformers.trainer_utils.get_last_checkpoint(str(out)) is None:
        raise FileNotFoundError(f"--resume: no checkpoint-N folder in {out}")
    check_config(cfg, out)
    check_inputs(cfg, out, hashes)
    checkpoint, skipped = last_intact_checkpoint(out)
    if checkpoint is None:
        raise IntegrityError(f"--resume: no intact checkpoint in {out}: {'; '.join(skipped)}; run without "
                             "--resume to start over")
    return checkpoint, skipped


def check_resumable(trainer: Any, checkpoint: str, skipped: list[str], out: Path) -> None:
    """Refuse a checkpoint without the projectors the built feature loss has; warn about the skipped ones."""
    import warnings

    has_projectors = trainer.feature_loss is not None and any(True for _ in trainer.feature_loss.parameters())
    if has_projectors and not (Path(checkpoint) / FEATURE_LOSS_FILE).is_file():
        raise IntegrityError(f"--resume: {Path(checkpoint) / FEATURE_LOSS_FILE} is missing (the projectors)")
    if skipped:
        warnings.warn(f"--resume: skipping incomplete checkpoint(s) {', '.join(p.split(': ')[0] for p in skipped)} "
                      f"in {out} ({'; '.join(skipped)}); resuming from {Path(checkpoint).name}", stacklevel=4)
