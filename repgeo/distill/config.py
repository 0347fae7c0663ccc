"""Run configuration loader: YAML (or a dict) and ``section.key=value`` overrides, type-checked and validated into
the dataclasses of :mod:`repgeo.distill.schema` (see its docstring for an example file); and the Trainer's
``TrainingArguments`` built from a configuration.

Errors raise :class:`ConfigError` naming the key (``loss.temperature: must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .schema import (
    LOSS_ONLY_METRICS,
    RESERVED_TRAINER_KEYS,
    TASKS,
    TRAINER_RANGES,
    CacheConfig,
    ConfigError,
    DataConfig,
    GenerationConfig,
    GeometryConfig,
    LossConfig,
    RunConfig,
    StudentConfig,
    TeacherConfig,
    runner_trainer_defaults,
)

__all__ = [
    "RESERVED_TRAINER_KEYS", "TASKS", "TRAINER_RANGES", "CacheConfig", "ConfigError", "DataConfig",
    "GenerationConfig", "GeometryConfig", "LossConfig", "RunConfig", "StudentConfig", "TeacherConfig",
    "config_from_dict", "config_yaml", "load_config", "parse_overrides", "parse_saved", "save_config",
    "trainer_keywords", "training_arguments",
]

# --------------------------------------------------------------------------- type checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: Any, data: Any, prefix: str) -> Any:
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{key}: unknown key; {hint}expected one of {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    return cls(**kwargs)


# --------------------------------------------------------------------------- semantic checks


def _validate(cfg: RunConfig) -> None:
    from repgeo.metrics import get

    def metric(name: str, key: str, also: tuple[str, ...] = ()) -> None:
        try:
            get(name)
        except ValueError as exc:  # "unknown metric 'x'; available: ...; did you mean 'y'?"
            extra = f" (or the loss {', '.join(also)})" if also else ""
            raise ConfigError(f"{key}: {exc}{extra}") from None

    loss = cfg.loss
    if loss.metric not in LOSS_ONLY_METRICS:  # pkd: a loss without a registry entry (schema.LOSS_ONLY_METRICS)
        metric(loss.metric, "loss.metric", also=LOSS_ONLY_METRICS)
    elif loss.projector != "learned":
        raise ConfigError(f"loss.projector: {loss.metric} needs 'learned' (a pair of different widths learns its "
                          f"projector), got {loss.projector!r}")
    elif loss.center is not True or loss.normalize != "frobenius":
        key = "loss.center" if loss.center is not True else "loss.normalize"
        raise ConfigError(f"{key}: does not apply to {loss.metric}, which puts every row on the unit sphere itself; "
                          "remove it (defaults: center true, normalize frobenius)")
    if loss.temperature <= 0:
        raise ConfigError(f"loss.temperature: must be > 0, got {loss.temperature}")
    for name in ("alpha", "w_task", "w_kd"):
        if getattr(loss, name) < 0:
            raise ConfigError(f"loss.{name}: must be >= 0, got {getattr(loss, name)}")
    if loss.projector_lr is not None and loss.projector_lr <= 0:
        raise ConfigError(f"loss.projector_lr: must be > 0, got {loss.projector_lr}")
    if isinstance(loss.layer_map, str) and loss.layer_map not in ("uniform", "last", "skip"):
        raise ConfigError(
            f"loss.layer_map: unknown strategy {loss.layer_map!r}; use uniform, last, skip or a mapping"
        )
    if loss.feature_tokens == "response" and cfg.task != "instruction":
        raise ConfigError("loss.feature_tokens: 'response' only applies to task 'instruction'")
    for i, m in enumerate(cfg.geometry.metrics):
        metric(m, f"geometry.metrics[{i}]")
    if cfg.geometry.probe_size < 2:
        raise ConfigError(f"geometry.probe_size: must be >= 2, got {cfg.geometry.probe_size}")
    st = cfg.student
    if st.path is not None and any(v is not None for v in (st.keep_every, st.num_layers, st.hidden_size)):
        raise ConfigError("student.path: give a student folder or keep_every/num_layers/hidden_size, not both")
    if st.keep_every is not None and st.num_layers is not None:
        raise ConfigError("student.keep_every: give keep_every or num_layers, not both")
    for name in ("keep_every", "num_layers", "hidden_size"):
        v = getattr(st, name)
        if v is not None and v < 1:
            raise ConfigError(f"student.{name}: must be >= 1, got {v}")
    data = cfg.data
    if (data.train is None) == (data.dataset is None):
        raise ConfigError("data.train: give data files (data.train, data.eval) or a Hugging Face dataset "
                          "(data.dataset), " + ("not both" if data.train is not None else "one is required"))
    if data.dataset is None:
        for name in ("dataset_config", "eval_split"):
            if getattr(data, name) is not None:
                raise ConfigError(f"data.{name}: only applies with data.dataset")
    elif data.eval is not None:
        raise ConfigError("data.eval: with data.dataset, name the evaluation split in data.eval_split")
    if cfg.data.max_length < 2:
        raise ConfigError(f"data.max_length: must be >= 2, got {cfg.data.max_length}")
    _validate_trainer(cfg.trainer)



def _choices(tp: Any) -> list[str]:
    """The values of the enum in a ``TrainingArguments`` annotation such as ``IntervalStrategy | str``."""
    import enum

    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return [str(m.value) for a in args if isinstance(a, type) and issubclass(a, enum.Enum) for m in a]


def _validate_trainer(trainer: dict[str, Any]) -> None:
    """Names (with did-you-mean), types (the ``TrainingArguments`` annotations), enum choices and ranges
    (:data:`TRAINER_RANGES`) of the ``trainer:`` block; ``max_steps <= 0`` only together with ``num_train_epochs``."""
    import transformers

    names = {f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init}
    hints = typing.get_type_hints(transformers.TrainingArguments)
    for key, value in trainer.items():
        if key in RESERVED_TRAINER_KEYS:
            raise ConfigError(f"trainer.{key}: set by the runner (use the top-level output_dir)")
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=3, cutoff=0.75)
            close += [n for n in sorted(names) if n.startswith(str(key)[:4]) and n not in close][: 5 - len(close)]
            hint = f"; did you mean one of {close}?" if close else ""
            raise ConfigError(f"trainer.{key}: not a transformers.TrainingArguments field{hint}")
        tp = hints.get(key, Any)
        value = _coerce(value, tp, f"trainer.{key}")
        choices = _choices(tp)
        if choices and isinstance(value, str) and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"trainer.{key}: unknown value {value!r}; {hint}expected one of {', '.join(choices)}")
        if key in TRAINER_RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok, text = TRAINER_RANGES[key]
            if not ok(value):
                raise ConfigError(f"trainer.{key}: must be {text}, got {value!r}")
    steps = trainer.get("max_steps")
    if isinstance(steps, int) and steps <= 0 and "num_train_epochs" not in trainer:
        raise ConfigError(f"trainer.max_steps: must be >= 1, got {steps} (a value <= 0 means 'train for "
                          "trainer.num_train_epochs epochs': set num_train_epochs to ask for that)")


# --------------------------------------------------------------------------- loading


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def _fix_floats(value: Any) -> Any:
    """YAML 1.1 reads ``3e-5`` as a string; turn such exponent-only numbers into floats."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _fix_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_floats(v) for v in value]
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["trainer.learning_rate=3e-5", "loss.metric=cka"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: an override must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{item}: malformed key in override")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "layer_map":
            out[k] = _merge(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Validate a plain dict (and optional overrides) into a :class:`RunConfig`."""
    if overrides:
        data = _merge(data or {}, parse_overrides(overrides))
    data = _fix_floats(data or {})
    cfg = _build(RunConfig, data or {}, "")
    _validate(cfg)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last one silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    """``config: run.yaml, line 4, column 2: not valid YAML: <problem>`` followed by the offending line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if mark is None:
        return ConfigError(f"config: {path} is not valid YAML: {problem}")
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    extra = ""
    if context and context_mark is not None and context_mark.line != mark.line:
        extra = f" ({context} that starts at line {context_mark.line + 1})"
    if "<block end>" in problem or "mapping values are not allowed" in problem:
        extra += "; check the indentation of this line"
    lines = text.splitlines()
    shown = f"\n    {mark.line + 1} | {lines[mark.line]}" if mark.line < len(lines) else ""
    return ConfigError(f"config: {path}, {where}: not valid YAML: {problem}{extra}{shown}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run configuration and apply ``section.key=value`` overrides.

    A missing file, a file that is not UTF-8, a YAML syntax error (named by file, line and column) and a key
    given twice raise :class:`ConfigError`.
    """
    from repgeo._files import DataError, read_text_utf8

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: file {str(p)!r} not found")
    try:
        text = read_text_utf8(p, "config file")
    except DataError as exc:
        raise ConfigError(f"config: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise _yaml_error(p, text, exc) from None
    return config_from_dict(data, overrides)


def config_yaml(cfg: RunConfig) -> str:
    """The resolved configuration as YAML text (every key, defaults included); :func:`config_from_dict` of its
    ``yaml.safe_load`` gives ``cfg`` back."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (:func:`config_yaml`, atomically)."""
    from repgeo._files import atomic_write_text

    atomic_write_text(path, config_yaml(cfg))


def parse_saved(data: dict[str, Any]) -> RunConfig:
    """A configuration as saved in a run folder's ``config.yaml``, type-checked but not re-validated (the metric
    names, ranges and trainer keys it was run with are not checked again)."""
    return _build(RunConfig, _fix_floats(data or {}), "")


# --------------------------------------------------------------------------- TrainingArguments


def trainer_keywords(cfg: RunConfig, *, evaluate: bool) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of a run: :func:`~repgeo.distill.schema.runner_trainer_defaults`, then
    the ``trainer:`` block, then what the runner owns (``output_dir``, ``remove_unused_columns=False``, and
    ``eval_strategy="no"`` when there is nothing to ``evaluate``)."""
    out = {**runner_trainer_defaults(cfg.seed), **cfg.trainer}
    if not evaluate:
        out["eval_strategy"] = "no"
    return {**out, "output_dir": str(cfg.output_dir), "remove_unused_columns": False}


def training_arguments(cfg: RunConfig, *, evaluate: bool) -> Any:
    """The :class:`~repgeo.distill.arguments.DistillationArguments` of a run: the ``TrainingArguments`` of
    :func:`trainer_keywords` with the ``loss:`` settings it shares; a value the Trainer refuses raises
    :class:`ConfigError` (``trainer: ...``)."""
    from .arguments import DistillationArguments

    shared = {f.name for f in dataclasses.fields(DistillationArguments)} & {f.name for f in dataclasses.fields(
        cfg.loss)}
    loss = {name: getattr(cfg.loss, name) for name in sorted(shared)}
    try:
        return DistillationArguments(**trainer_keywords(cfg, evaluate=evaluate), **loss)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trainer: {' '.join(str(exc).split())}") from None
