"""``repgeo distill``: train a student from a YAML run configuration.

    repgeo distill --config run.yaml trainer.learning_rate=3e-5 loss.metric=procrustes [--resume]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``distill`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "distill", help="distil a teacher into a student with a geometric feature loss",
        description="Train a student from a YAML configuration; KEY=VALUE arguments override it "
                    "(e.g. trainer.learning_rate=3e-5 loss.metric=procrustes).",
    )
    p.add_argument("--config", required=True, help="YAML run configuration")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status: 2 for a configuration or data error, a damaged checkpoint with
    no intact one to fall back to, an output_dir held by another run or that is a file (one line on stderr, no
    traceback). Warnings (a skipped checkpoint, a rebuilt cache, texts cut to max_length) print as one line."""
    import warnings

    from repgeo.distill import (
        ConfigError,
        DataError,
        FolderLockedError,
        IntegrityError,
        load_config,
        run_distillation,
    )

    def one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"repgeo distill: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            cfg = load_config(args.config, list(args.overrides))
            run_distillation(cfg, resume=args.resume)
    except ConfigError as exc:
        print(f"repgeo distill: configuration error: {exc}", file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError, IntegrityError, FolderLockedError, NotADirectoryError) as exc:
        print(f"repgeo distill: {exc}", file=sys.stderr)
        return 2
    return 0

