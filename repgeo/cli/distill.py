"""``repgeo distill``: train a student from a YAML run configuration.

    repgeo distill --config run.yaml trainer.learning_rate=3e-5 loss.metric=procrustes [--resume | --print-config]
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import Formatter, leave_process_group


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``distill`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "distill", help="distill a teacher into a student with a geometric feature loss", formatter_class=Formatter,
        description="Train a student from a YAML configuration; KEY=VALUE arguments override it "
                    "(e.g. trainer.learning_rate=3e-5 loss.metric=procrustes). The run folder is the config's "
                    "output_dir.",
    )
    p.add_argument("--config", required=True, help="YAML run configuration")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (YAML, overrides and defaults applied) and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    p.set_defaults(func=run)
    return p


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".parquet", ".arrow")


def _check_config_path(path: str) -> None:
    """A data file given as ``--config`` is refused by its name (instead of parsing it as YAML)."""
    from pathlib import Path

    from ._common import CommandError

    if Path(path).suffix.lower() in DATA_SUFFIXES:
        raise CommandError(f"--config {path!r} looks like a data file; give the YAML run configuration (.yaml), "
                           "which names the data files under data.train / data.eval")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status. Every error raises and becomes one line on stderr with status
    2 (:func:`repgeo.cli._common.report`): a configuration or data error, a damaged checkpoint with no intact one
    to fall back to, an output_dir held by another run or that is a file, a ``ValueError`` during training.
    Warnings (a skipped checkpoint, a rebuilt cache, texts cut to max_length) are one line each on the
    ``repgeo`` logger."""
    import warnings

    from repgeo.distill import config_yaml, load_config, run_distillation
    from repgeo.log import logger

    def one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        logger.warning(f"repgeo distill: warning: {message}")

    _check_config_path(args.config)
    with warnings.catch_warnings():
        warnings.showwarning = one_line
        cfg = load_config(args.config, list(args.overrides))
        if args.print_config:
            print(config_yaml(cfg), end="")
            return 0
        try:
            run_distillation(cfg, resume=args.resume, verbose=logger.isEnabledFor(20))
        finally:  # under torchrun: leave the process group before exit (gloo's threads can abort the interpreter)
            leave_process_group()
    return 0
