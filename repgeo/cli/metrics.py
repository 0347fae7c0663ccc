"""``repgeo metrics TEACHER STUDENT``: compare two saved matrices (.npy, .npz first array, .csv, .pt) with chosen
metrics. The files may also be given as ``--teacher FILE --student FILE``, as in ``repgeo audit``; the teacher's
matrix is X and the student's Y in the metric formulas."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import CommandError, Formatter

if TYPE_CHECKING:
    import numpy as np


def load_matrix(path: str) -> np.ndarray:
    """Read a 2-D array from .npy, .npz (first array), .csv/.tsv (numbers only) or .pt/.pth (a tensor)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return z[z.files[0]]
        if suffix in (".csv", ".tsv"):
            return np.loadtxt(p, delimiter="," if suffix == ".csv" else "\t", ndmin=2)
        if suffix in (".pt", ".pth"):
            import torch

            return torch.load(p, map_location="cpu", weights_only=True).double().numpy()
    except (ValueError, OSError, EOFError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{path}: cannot read a numeric matrix: {exc}") from None
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .npy, .npz, .csv, .tsv or .pt)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``metrics`` subcommand."""
    p = subparsers.add_parser("metrics", help="compare two saved matrices (rows = the same stimuli)",
                              description=__doc__, formatter_class=Formatter)
    p.add_argument("teacher_file", nargs="?", metavar="TEACHER", help="X: the teacher's n x p matrix file")
    p.add_argument("student_file", nargs="?", metavar="STUDENT", help="Y: the student's n x q matrix file")
    p.add_argument("--teacher", help="the teacher's matrix file (instead of the first positional argument)")
    p.add_argument("--student", help="the student's matrix file (instead of the second positional argument)")
    p.add_argument("--metrics", default=None, help="comma-separated names (default: all registered)")
    p.add_argument("--no-center", action="store_true", help="do not remove column means")
    p.add_argument("--normalize", default="frobenius", choices=["frobenius", "rows", "none"],
                   help="scale each matrix to unit Frobenius norm, each row to unit norm, or not at all")
    p.set_defaults(func=run)
    return p


def _files(args: argparse.Namespace) -> tuple[str, str]:
    """(teacher file, student file) from the positionals or ``--teacher`` / ``--student``, one way each."""
    chosen = []
    for role, positional, option in (("teacher", args.teacher_file, args.teacher),
                                     ("student", args.student_file, args.student)):
        if positional and option:
            raise CommandError(f"the {role} file is given twice ({positional!r} and --{role} {option!r})")
        if not (positional or option):
            raise CommandError(f"the {role} matrix file is missing (give TEACHER STUDENT or --teacher F --student F)")
        chosen.append(positional or option)
    return chosen[0], chosen[1]


def run(args: argparse.Namespace) -> int:
    """Run ``repgeo metrics``; returns the exit status (bad input raises: one line, status 2)."""
    from repgeo.metrics import compare, get

    teacher, student = _files(args)
    names = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    normalize = None if args.normalize == "none" else args.normalize
    for name in names or []:
        get(name)  # an unknown name is reported before any file is read
    X, Y = load_matrix(teacher), load_matrix(student)
    try:
        values = compare(X, Y, names, center=not args.no_center, normalize=normalize)
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{exc} (X = {teacher}, Y = {student})") from None
    width = max(len(k) for k in values)
    for name, value in values.items():
        print(f"{name:<{width}}  {float(value):.6f}")
    return 0
