"""``repgeo audit`` and ``repgeo layers``.

    repgeo audit --teacher PATH_OR_NAME --student PATH_OR_NAME --data FILE(.txt|.csv|.jsonl) --out DIR
                 [--text-column C] [--teacher-layers 0,2,4] [--student-layers 0,1,2]
                 [--metrics procrustes,cka,fg] [--pooling mean] [--max-length N]
                 [--ci-method jackknife] [--n-perm 200] [--estimator corrected] [--n-floor 5]
    repgeo layers PATH_OR_NAME

Models are local transformers folders or hub names (passed to transformers unchanged: they work wherever the
hub is reachable; offline the error says what to do). Layers are comma-separated: integers are ``hidden_states``
indices (0 = embeddings), anything else a module name or glob (see ``repgeo layers``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


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
        "audit", help="compare a teacher and a student layer by layer",
        description="Layer-by-layer similarity of two models on a text file: writes audit.csv, one PNG heatmap per "
                    "metric and report.md into --out.",
    )
    p.add_argument("--teacher", required=True, help="teacher model folder or hub name")
    p.add_argument("--student", required=True, help="student model folder or hub name")
    p.add_argument("--data", required=True, help="texts: .txt (one per line), .csv or .jsonl")
    p.add_argument("--text-column", default=None, help="CSV column / JSON field holding the text")
    p.add_argument("--teacher-layers", default=None, help="comma-separated layers (default: all hidden states)")
    p.add_argument("--student-layers", default=None, help="comma-separated layers (default: all hidden states)")
    p.add_argument("--metrics", default="procrustes,cka,fg", help="comma-separated metric names")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "last", "tokens"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None,
                   help="texts are cut to this many tokens (reported); default 128, or fewer when a model embeds "
                        "fewer positions")
    p.add_argument("--ci-method", default="jackknife", choices=["jackknife", "bootstrap"],
                   help="confidence intervals: delete-one-fold jackknife over stimuli (default) or bootstrap")
    p.add_argument("--n-folds", type=int, default=100, help="jackknife folds (0: no intervals)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates (0: no intervals)")
    p.add_argument("--n-perm", type=int, default=200, help="permutations (0: no p-values and no floors)")
    p.add_argument("--estimator", default="corrected", choices=["corrected", "plugin"],
                   help="corrected / held-out estimators (default) or the plug-in formulas")
    p.add_argument("--n-floor", type=int, default=5,
                   help="permutations averaged into each cell's null floor (at most --n-perm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)
    return p


def _input_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, checked before any work: ``--n-folds`` (0 or >= 2), ``--max-length``
    (>= 1 and within both models' position embeddings, when their configs load; unset, it becomes 128 or the
    smaller of those), ``--out`` (not a file)."""
    from repgeo._files import check_output_folder

    if args.ci_method == "jackknife" and args.n_folds != 0 and args.n_folds < 2:
        return f"--n-folds must be 0 (no intervals) or >= 2 (the jackknife leaves out one of several folds), got " \
               f"{args.n_folds}"
    if args.max_length is not None and args.max_length < 1:
        return f"--max-length must be >= 1, got {args.max_length}"
    limits = [(flag, name, _max_positions(name)) for flag, name in (("--teacher", args.teacher),
                                                                     ("--student", args.student))]
    if args.max_length is None:
        args.max_length = min([128, *(n for _, _, n in limits if n is not None)])
    for flag, name, limit in limits:
        if limit is not None and args.max_length > limit:
            return (f"--max-length {args.max_length} exceeds the {limit} positions of {flag} {name!r} "
                    f"(its config's max_position_embeddings); use --max-length {limit} or less")
    try:
        check_output_folder(args.out, "--out")
    except NotADirectoryError as exc:
        return str(exc)
    return None


def _max_positions(name: str) -> int | None:
    """How many token positions the model ``name`` embeds (None when its config does not load or say)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(n, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        n -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    return n


def run(args: argparse.Namespace) -> int:
    """Run ``repgeo audit``; returns the exit status (2 for bad input, or an --out folder that another audit is
    writing). ``--out`` is locked for the run; a refused run leaves no folder behind."""
    from repgeo._files import FolderLockedError, locked_output

    problem = _input_problem(args)
    if problem is not None:
        print(f"repgeo audit: {problem}", file=sys.stderr)
        return 2
    try:
        with locked_output(args.out, "audit", "--out"):
            return _audit(args)
    except FolderLockedError as exc:
        print(f"repgeo audit: {exc}", file=sys.stderr)
        return 2


def _audit(args: argparse.Namespace) -> int:
    from repgeo.audit import audit, write_report
    from repgeo.audit.diagnostics import warning_line

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        df = audit(
            args.teacher, args.student, args.data, text_column=args.text_column,
            teacher_layers=_layers(args.teacher_layers), student_layers=_layers(args.student_layers),
            metrics=metrics, pooling=args.pooling, batch_size=args.batch_size, max_length=args.max_length,
            ci_method=args.ci_method, n_folds=args.n_folds, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed,
            estimator=args.estimator, n_floor=args.n_floor,
        )
    except (OSError, ValueError, TypeError) as exc:
        print(f"repgeo audit: {exc}", file=sys.stderr)
        return 2
    paths = write_report(df, args.out)
    print(f"{df.attrs['n_stimuli']} stimuli, {len(df.attrs['teacher_layers'])} teacher × "
          f"{len(df.attrs['student_layers'])} student layers, metrics {metrics}")
    if df.attrs.get("truncated"):
        print(f"{len(df.attrs['truncated'])} texts cut to {args.max_length} tokens")
    warning = warning_line(df)
    if warning:
        print(warning, file=sys.stderr)
    for name, path in paths.items():
        print(f"wrote {path}  ({name})")
    return 0


def add_layers_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``layers`` subcommand."""
    p = subparsers.add_parser("layers", help="list a model's probe-able layers with output shapes",
                              description="One dummy forward pass; prints every module that outputs a tensor, "
                                          "with its output shape, and the hidden_states indices.")
    p.add_argument("model", help="model folder or hub name")
    p.add_argument("--text", default="The quick brown fox jumps over the lazy dog.", help="example input")
    p.set_defaults(func=run_layers)
    return p


def run_layers(args: argparse.Namespace) -> int:
    """Run ``repgeo layers``; returns the exit status."""
    from repgeo.audit import load_model
    from repgeo.probe import list_layers

    try:
        model, tokenizer = load_model(args.model)
    except OSError as exc:
        print(f"repgeo layers: {exc}", file=sys.stderr)
        return 2
    inputs = dict(tokenizer([args.text], return_tensors="pt"))
    rows = list_layers(model, inputs)
    width = max(len(n) for n, _ in rows)
    print(f"{type(model).__name__}: {len(rows)} layers (input: {inputs['input_ids'].shape[1]} tokens)")
    for name, shape in rows:
        print(f"  {name.ljust(width)}  {tuple(shape) if shape is not None else '-'}")
    return 0

