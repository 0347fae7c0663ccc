"""``repgeo metrics X Y``: compare two saved matrices (.npy, .npz first array, .csv, .pt) with chosen metrics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def load_matrix(path: str) -> np.ndarray:
    """Read a 2-D array from .npy, .npz (first array), .csv/.tsv (numbers only) or .pt/.pth (a tensor)."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"repgeo metrics: no such file: {path}")
    suffix = p.suffix.lower()
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
    raise SystemExit(f"repgeo metrics: unsupported file type {suffix!r} (use .npy, .npz, .csv, .tsv or .pt)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("metrics", help="compare two saved matrices (rows = the same stimuli)")
    p.add_argument("teacher", help="X: n x p matrix file")
    p.add_argument("student", help="Y: n x q matrix file")
    p.add_argument("--metrics", default=None, help="comma-separated names (default: all registered)")
    p.add_argument("--no-center", action="store_true", help="do not remove column means")
    p.add_argument("--normalize", default="frobenius", choices=["frobenius", "rows", "none"])
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from repgeo.metrics import compare

    X, Y = load_matrix(args.teacher), load_matrix(args.student)
    names = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    normalize = None if args.normalize == "none" else args.normalize
    try:
        values = compare(X, Y, names, center=not args.no_center, normalize=normalize)
    except (ValueError, TypeError) as exc:
        print(f"repgeo metrics: {exc}")
        return 2
    width = max(len(k) for k in values)
    for name, value in values.items():
        print(f"{name:<{width}}  {float(value):.6f}")
    return 0
