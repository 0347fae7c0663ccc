"""``repgeo demo``: fine-tune a real teacher, distill students with every feature loss, audit them, certify the
counterexamples and write a report — offline, on the packaged all-MiniLM-L6-v2 and Rotten Tomatoes snippets
(fetched once by ``repgeo fetch-assets``) or on your own model and data.

    repgeo demo                          # default: about 5 minutes on 2 CPU cores
    repgeo demo --fast                   # a smoke run (tiny subsets, few steps; what CI runs)
    repgeo demo --full                   # longer and better (more data and steps, a narrower student too)
    repgeo demo --teacher PATH_OR_HUB_NAME --data FILE.csv --text-column text --label-column label

Exit status: 0 when the run completed and every counterexample claim holds, 1 when a claim fails, 2 for a
usage error or a missing asset (the message names the command that fetches it).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import RawFormatter
from ._help import lazy_help


def _method_names() -> dict[str, str]:
    from repgeo.demo.settings import METHODS

    return {"methods": ",".join(METHODS)}


def _methods(value: str) -> tuple[str, ...]:
    from repgeo.demo.settings import METHODS

    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [m for m in items if m not in METHODS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose from {','.join(METHODS)}; got {value!r}")
    return items


def _arguments(p: argparse.ArgumentParser) -> None:
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_const", const="fast", dest="preset",
                       help="tiny subsets and few steps (a smoke test, ~1 minute)")
    speed.add_argument("--full", action="store_const", const="full", dest="preset",
                       help="more data and steps, and a narrower student too (tens of minutes on a CPU)")
    p.set_defaults(preset="default")
    p.add_argument("--out", default="repgeo-demo", help="report folder")
    g = p.add_argument_group("your own model and data")
    g.add_argument("--teacher", help="model folder or Hugging Face hub name (default: packaged all-MiniLM-L6-v2)")
    g.add_argument("--data", help="CSV / TSV / JSONL file with a text and a label column "
                                  "(default: packaged Rotten Tomatoes snippets)")
    g.add_argument("--text-column", default="text", help="text column / field (default: text)")
    g.add_argument("--label-column", default="label", help="label column / field (default: label)")
    o = p.add_argument_group("settings (defaults come from the preset)")
    o.add_argument("--seed", type=int, help="seed of the data split, the initialisations and the training")
    o.add_argument("--threads", type=int, help="torch threads (default: the CPUs this process may use)")
    o.add_argument("--n-train", type=int, help="training examples")
    o.add_argument("--n-test", type=int, help="held-out test examples")
    o.add_argument("--max-length", type=int, help="tokens per text")
    o.add_argument("--teacher-steps", type=int, help="fine-tuning steps of the teacher (0: use it as it is)")
    o.add_argument("--teacher-lr", type=float, help="peak learning rate of the teacher's fine-tuning")
    o.add_argument("--teacher-train", choices=["all", "head"], help="fine-tune the whole teacher or its head only")
    o.add_argument("--student-steps", type=int, help="distillation steps per student")
    o.add_argument("--student-lr", type=float, help="peak learning rate of the students")
    o.add_argument("--methods", type=_methods, help="comma-separated subset of {methods} (default: "
                   "proj_mse,procrustes; --full and --fast: all)")
    o.add_argument("--keep-every", type=int, help="student = teacher blocks 0, k, 2k, ... (default 3)")
    o.add_argument("--narrow-width", type=int, help="also distill a freshly initialised student this wide")
    o.add_argument("--alpha", type=float, help="feature-loss weight relative to its initial value (default 1)")
    o.add_argument("--audit-size", type=int, help="held-out texts of the audit")
    o.add_argument("--cache-dir", help="where fine-tuned teachers are cached (default: ~/.cache/repgeo/demo)")
    o.add_argument("--no-cache", action="store_true", help="neither reuse nor store a fine-tuned teacher")
    o.add_argument("--no-progress", action="store_true", help="no progress bars (also implied by -q)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``demo`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("demo", help="the whole job end to end on a real model and real data, in minutes",
                              description=__doc__,
                              formatter_class=lazy_help(_method_names, RawFormatter))
    _arguments(p)
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> Any:
    from repgeo.demo.settings import settings_for

    keys = ("out", "teacher", "data", "text_column", "label_column", "seed", "threads", "n_train", "n_test",
            "max_length", "teacher_steps", "teacher_lr", "teacher_train", "student_steps", "student_lr", "methods",
            "keep_every", "narrow_width", "alpha", "audit_size", "cache_dir")
    overrides = {k: getattr(args, k, None) for k in keys}
    if args.no_cache:
        overrides["use_cache"] = False
    return settings_for(args.preset, **overrides)


def _check_sources(args: argparse.Namespace) -> None:
    """``--teacher`` and ``--data`` checked before anything loads (a missing file, a local path that is not a model
    folder, an unreachable hub)."""
    from pathlib import Path

    from ._common import CommandError
    from ._sources import check_model

    if args.data is not None and not Path(args.data).is_file():
        raise CommandError(f"--data {args.data!r}: no such file")
    if args.teacher is not None:
        check_model(args.teacher, "--teacher")


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the summary table; return the exit status (1 when a counterexample claim fails; errors
    raise and become one line with status 2)."""
    from repgeo._files import locked_output
    from repgeo.demo import print_summary, run_demo
    from repgeo.log import logger

    from ._common import CommandError

    settings = settings_from_args(args)
    _check_sources(args)
    with locked_output(settings.out, "demo", "--out"):  # one demo per report folder; removed if left empty
        result = run_demo(settings, progress=not args.no_progress and logger.isEnabledFor(20))
    print_summary(result)
    if not result.certificates_pass:
        raise CommandError("a counterexample claim FAILED (see certificates.csv)", status=1)
    return 0
