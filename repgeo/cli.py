"""The ``repgeo`` command: one subcommand per job, each defined in its own ``cli_*`` module.

    repgeo metrics A.npy B.npy            compare two saved matrices with every registered metric
    repgeo counterexamples [--out DIR]    build and certify the theory's counterexamples
    repgeo audit --teacher T --student S --data FILE --out DIR
    repgeo layers MODEL                   list a model's probe-able layers
    repgeo distill --config run.yaml [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, name of the function that registers the subparser(s))
SUBCOMMANDS = [
    ("repgeo.cli_metrics", "add_parser"),
    ("repgeo.cli_counterexamples", "add_parser"),
    ("repgeo.cli_audit", "add_parser"),
    ("repgeo.cli_audit", "add_layers_parser"),
    ("repgeo.cli_distill", "add_parser"),
    ("repgeo.cli_demo", "add_parser"),
    ("repgeo.cli_assets", "add_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repgeo", description="Representational geometry for distillation.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"repgeo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, register in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that subcommand is not part of this build
                continue
            raise
        getattr(module, register)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
