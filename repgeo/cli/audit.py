"""``repgeo audit`` and ``repgeo layers``.

    repgeo audit --teacher PATH_OR_NAME --student PATH_OR_NAME --data FILE(.txt|.csv|.jsonl) [--out DIR]
                 [--text-column C] [--teacher-layers 0,2,4] [--student-layers 0,1,2]
                 [--metrics procrustes,cka,fg] [--pooling mean] [--max-length N] [--mode memory|stream]
                 [--ci-method jackknife] [--n-perm 200] [--estimator corrected] [--n-floor 5]
    repgeo layers PATH_OR_NAME

Models are local transformers folders or hub names (see :mod:`repgeo.cli._sources`: local paths never go to the
hub, an unreachable hub is reported at once). Layers are comma-separated: integers are ``hidden_states`` indices
(0 = embeddings), anything else a module name or glob (see ``repgeo layers``).

Everything that can be checked without the models is checked before they load: the data file and its text
column, the metric names, the numbers, the output folder, and (from each model's config) the hidden-state
indices and ``--max-length``. Under ``torchrun`` (``WORLD_SIZE`` > 1) the command joins the process group
(gloo), every rank audits its share of the batches in stream mode, and rank 0 alone writes the report.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import CommandError, Formatter, count, leave_process_group

DEFAULT_OUT = "repgeo-audit"


def _layers(value: str | None) -> list[Any] | None:
    if value is None:
        return None
    out: list[Any] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            out.append(part)
    return out or None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``audit`` subcommand."""
    p = subparsers.add_parser(
        "audit", help="compare a teacher and a student layer by layer", formatter_class=Formatter,
        description="Layer-by-layer similarity of two models on a text file: writes audit.csv, one PNG heatmap per "
                    "metric and report.md into --out. Multi-process: python -m torch.distributed.run "
                    "--nproc_per_node N -m repgeo audit ... (rank 0 writes).",
    )
    p.add_argument("--teacher", required=True, help="teacher model folder or hub name")
    p.add_argument("--student", required=True, help="student model folder or hub name")
    p.add_argument("--data", required=True, help="texts: .txt (one per line), .csv or .jsonl")
    p.add_argument("--text-column", default=None,
                   help="CSV column / JSON field holding the text (default: the first of text, sentence, content, "
                        "prompt, question, document present, or the only column)")
    p.add_argument("--teacher-layers", default=None, help="comma-separated layers (default: all hidden states)")
    p.add_argument("--student-layers", default=None, help="comma-separated layers (default: all hidden states)")
    p.add_argument("--metrics", default="procrustes,cka,fg", help="comma-separated metric names")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "last", "tokens"],
                   help="how token features become one row per text")
    p.add_argument("--batch-size", type=count(1), default=32, help="texts per forward pass")
    p.add_argument("--max-length", type=count(1), default=None,
                   help="texts are cut to this many tokens (reported); default 128, or fewer when a model embeds "
                        "fewer positions")
    p.add_argument("--mode", default="memory", choices=["memory", "stream"],
                   help="memory: keep pooled features (intervals, p-values, floors); stream: keep only moments "
                        "(constant memory, block-jackknife intervals; always used under torchrun)")
    p.add_argument("--n-blocks", type=count(2), default=10, help="jackknife blocks of --mode stream")
    p.add_argument("--ci-method", default="jackknife", choices=["jackknife", "bootstrap"],
                   help="confidence intervals: delete-one-fold jackknife over stimuli or bootstrap")
    p.add_argument("--n-folds", type=count(0), default=100, help="jackknife folds (0: no intervals)")
    p.add_argument("--n-boot", type=count(0), default=200, help="bootstrap replicates (0: no intervals)")
    p.add_argument("--n-perm", type=count(0), default=200, help="permutations (0: no p-values and no floors)")
    p.add_argument("--estimator", default="corrected", choices=["corrected", "plugin"],
                   help="corrected / held-out estimators or the plug-in formulas")
    p.add_argument("--n-floor", type=count(0), default=5,
                   help="permutations averaged into each cell's null floor (at most --n-perm)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations and resamples")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (created; refused if it is a file)")
    p.set_defaults(func=run)
    return p


def _check_inputs(args: argparse.Namespace) -> None:
    """Everything checked before a model loads (raises :class:`CommandError` or the reader's ``ValueError``):
    ``--n-folds`` (0 or >= 2), the models' sources, ``--data`` and ``--text-column``, ``--metrics``, integer layers
    and ``--max-length`` against each model's config (unset, it becomes 128 or the smaller position limit), and
    ``--out`` (not a file)."""
    from repgeo._files import check_output_folder
    from repgeo.audit import read_texts
    from repgeo.metrics import get

    from ._sources import check_model

    if args.ci_method == "jackknife" and args.n_folds == 1:
        raise CommandError("--n-folds must be 0 (no intervals) or >= 2 (the jackknife leaves out one of several "
                           "folds), got 1")
    for name in _names(args.metrics):
        try:
            get(name)
        except ValueError as exc:
            raise CommandError(f"--metrics: {exc}") from None
    if not _names(args.metrics):
        raise CommandError(f"--metrics: no metric name in {args.metrics!r}")
    try:
        check_output_folder(args.out, "--out")
    except NotADirectoryError as exc:
        raise CommandError(str(exc)) from None
    sources = {flag: check_model(name, flag) for flag, name in (("--teacher", args.teacher),
                                                               ("--student", args.student))}
    _check_data(args.data, args.text_column, args.pooling, read_texts)
    configs = {flag: _config(name) for flag, name in sources.items()}
    for flag, layers in (("--teacher-layers", args.teacher_layers), ("--student-layers", args.student_layers)):
        _check_layer_indices(flag, _layers(layers), configs[flag.removesuffix("-layers")])
    limits = {flag: _max_positions(config) for flag, config in configs.items()}
    if args.max_length is None:
        args.max_length = min([128, *(n for n in limits.values() if n is not None)])
    for flag, limit in limits.items():
        if limit is not None and args.max_length > limit:
            raise CommandError(f"--max-length {args.max_length} exceeds the {limit} positions of {flag} "
                               f"{getattr(args, flag[2:])!r} (its config's max_position_embeddings); use "
                               f"--max-length {limit} or less")


def _check_data(path: str, text_column: str | None, pooling: str, read: Any) -> None:
    """``--data`` exists, ``--text-column`` applies to its kind, and (pooled) it holds the 4 texts the metrics
    need at least."""
    from pathlib import Path

    if not Path(path).is_file():
        raise CommandError(f"--data {path!r}: no such file")
    if text_column is not None and Path(path).suffix.lower() == ".txt":
        raise CommandError(f"--text-column {text_column!r} applies to .csv and .jsonl files; {path!r} is a .txt file "
                           "(one text per line)")
    try:
        n = len(read(path, text_column))
    except ValueError as exc:  # the reader names the API's argument; here it is the flag
        raise CommandError(str(exc).replace("pass text_column", "pass --text-column")) from None
    if pooling != "tokens" and n < 4:
        raise CommandError(f"--data {path!r} holds {n} text(s); the metrics need at least 4 (one row per text)")


def _names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _config(name: str) -> Any:
    """The model's transformers config (None when it does not load without the model)."""
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None


def _check_layer_indices(flag: str, layers: list[Any] | None, config: Any) -> None:
    """Integer layers must be hidden_states indices of a model with ``config.num_hidden_layers`` blocks."""
    n_blocks = getattr(config, "num_hidden_layers", None)
    if not isinstance(n_blocks, int):
        return
    n = n_blocks + 1
    for layer in layers or []:
        if isinstance(layer, int) and not -n <= layer < n:
            raise CommandError(f"{flag}: hidden_states index {layer} out of range: this model returns {n} hidden "
                               f"states (valid indices {-n}..{n - 1}; 0 = embeddings, {n - 1} = last)")


def _max_positions(config: Any) -> int | None:
    """How many token positions a model with this config embeds (None when unknown or not absolute)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        n -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    return n


def _join_process_group() -> int:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the default process group (gloo) if no one has; the rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank()


def run(args: argparse.Namespace) -> int:
    """Run ``repgeo audit``; returns the exit status (errors raise, see :func:`repgeo.cli._common.report`).
    ``--out`` is locked for the run and written by rank 0 only; a failed run leaves no folder behind."""
    import contextlib

    from repgeo._files import locked_output

    _check_inputs(args)
    rank = _join_process_group()
    try:
        with locked_output(args.out, "audit", "--out") if rank == 0 else contextlib.nullcontext():
            return _audit(args, rank)
    finally:
        leave_process_group()


def _audit(args: argparse.Namespace, rank: int) -> int:
    from repgeo.audit import audit, write_report
    from repgeo.audit.diagnostics import warning_line
    from repgeo.log import logger

    metrics = _names(args.metrics)
    df = audit(
        args.teacher, args.student, args.data, text_column=args.text_column,
        teacher_layers=_layers(args.teacher_layers), student_layers=_layers(args.student_layers),
        metrics=metrics, pooling=args.pooling, batch_size=args.batch_size, max_length=args.max_length,
        mode=args.mode, n_blocks=args.n_blocks, ci_method=args.ci_method, n_folds=args.n_folds, n_boot=args.n_boot,
        n_perm=args.n_perm, seed=args.seed, estimator=args.estimator, n_floor=args.n_floor,
        progress=rank == 0 and logger.isEnabledFor(20),
    )
    if rank != 0:
        return 0
    paths = write_report(df, args.out)
    logger.info(f"{df.attrs['n_stimuli']} stimuli, {len(df.attrs['teacher_layers'])} teacher × "
                f"{len(df.attrs['student_layers'])} student layers, metrics {metrics}, mode {df.attrs['mode']}")
    if df.attrs.get("truncated"):
        logger.info(f"{len(df.attrs['truncated'])} texts cut to {args.max_length} tokens")
    warning = warning_line(df)
    if warning:
        logger.warning(warning)
    for name, path in paths.items():
        print(f"wrote {path}  ({name})")
    return 0


def add_layers_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``layers`` subcommand."""
    p = subparsers.add_parser("layers", help="list a model's probe-able layers with output shapes",
                              formatter_class=Formatter,
                              description="One dummy forward pass; prints every module that outputs a tensor, "
                                          "with its output shape, and the hidden_states indices.")
    p.add_argument("model", help="model folder or hub name")
    p.add_argument("--text", default="The quick brown fox jumps over the lazy dog.",
                   help="example input of the forward pass")
    p.set_defaults(func=run_layers)
    return p


def run_layers(args: argparse.Namespace) -> int:
    """Run ``repgeo layers``; returns the exit status."""
    from repgeo.audit import load_model
    from repgeo.probe import list_layers

    from ._sources import check_model

    model, tokenizer = load_model(check_model(args.model, "model"))
    inputs = dict(tokenizer([args.text], return_tensors="pt"))
    rows = list_layers(model, inputs)
    width = max(len(n) for n, _ in rows)
    print(f"{type(model).__name__}: {len(rows)} layers (input: {inputs['input_ids'].shape[1]} tokens)")
    for name, shape in rows:
        print(f"  {name.ljust(width)}  {tuple(shape) if shape is not None else '-'}")
    return 0
