"""``repgeo metrics X Y``: compare two saved matrices (.npy, .npz first array, .csv, .pt) with chosen metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    p = subparsers.add_parser("metrics", help="compare two saved matrices (rows = the same stimuli)")
    p.add_argument("teacher", help="X: n x p matrix file")
    p.add_argument("student", help="Y: n x q matrix file")
    p.add_argument("--metrics", default=None, help="comma-separated names (default: all registered)")
    p.add_argument("--no-center", action="store_true", help="do not remove column means")
    p.add_argument("--normalize", default="frobenius", choices=["frobenius", "rows", "none"])
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``repgeo metrics``; returns the exit status (2 for bad input, the message on stderr)."""
    from repgeo.metrics import compare, get

    names = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    normalize = None if args.normalize == "none" else args.normalize
    try:
        for name in names or []:
            get(name)  # an unknown name is reported before any file is read
        X, Y = load_matrix(args.teacher), load_matrix(args.student)
    except (OSError, ValueError) as exc:
        print(f"repgeo metrics: {exc}", file=sys.stderr)
        return 2
    try:
        values = compare(X, Y, names, center=not args.no_center, normalize=normalize)
    except (ValueError, TypeError) as exc:
        print(f"repgeo metrics: {exc} (X = {args.teacher}, Y = {args.student})", file=sys.stderr)
        return 2
    width = max(len(k) for k in values)
    for name, value in values.items():
        print(f"{name:<{width}}  {float(value):.6f}")
    return 0
