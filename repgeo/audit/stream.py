"""The streaming audit: moments only (O(width²) memory per cell, any corpus size), block-jackknife intervals,
one pass through :func:`repgeo.probe.stream_pairs`; under ``torch.distributed`` each rank streams its share of
the batches and the blocks are all-reduced, so every rank gets the single-process table."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from repgeo.metrics import Moments, get
from repgeo.probe import stream_pairs

from .diagnostics import flag
from .table import COLUMNS
from .uncertainty import jackknife_interval

__all__ = ["BlockMoments", "dist_info", "stream_audit"]


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BlockMoments:
    """``n_blocks`` :class:`~repgeo.metrics.Moments` of one cell, fed batch by batch: the k-th batch this
    accumulator sees is global batch ``start + k * step`` and goes to block ``(start + k * step) % n_blocks`` --
    so ranks that stream interleaved shares (``start = rank``, ``step = world``) fill the same blocks as one
    process streaming everything. Chunks are converted to float64 numpy (an all-reduced block that this rank
    never filled comes back as numpy too)."""

    def __init__(self, n_blocks: int, *, rows: bool, start: int = 0, step: int = 1) -> None:
        self.blocks = [Moments(rows=rows) for _ in range(n_blocks)]
        self.next_batch, self.step = start, step

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        Xn, Yn = X.detach().cpu().double().numpy(), Y.detach().cpu().double().numpy()
        self.blocks[self.next_batch % len(self.blocks)].update(Xn, Yn)
        self.next_batch += self.step

    def all_reduce(self) -> None:
        for b in self.blocks:
            b.all_reduce()


def _cell_rows(cell: tuple[str, str], acc: BlockMoments, metrics: Sequence[str], *, ci: float, center: bool,
               normalize: Any, rows: bool) -> list[tuple[Any, ...]]:
    n = sum(b.n for b in acc.blocks)
    p, q = next(b.shape for b in acc.blocks if b.n)
    full = Moments(rows=rows)
    for b in acc.blocks:
        full.merge(b)
    st = full.stats(center=center, normalize=None)
    ranks = [float(np.trace(c)) ** 2 / float(np.sum(c * c)) if np.sum(c * c) > 0 else 0.0
             for c in (np.asarray(st.xx), np.asarray(st.yy))]
    out = []
    for m in metrics:
        value, lo, hi = jackknife_interval(acc.blocks, m, ci, center=center, normalize=normalize)
        out.append((cell[0], cell[1], m, value, math.nan, lo, hi, math.nan, n, p, q, *ranks, "plugin",
                    flag(n, p, q, m, "plugin")))
    return out


def stream_audit(teacher: nn.Module, student: nn.Module, t_batches: Sequence[Any], s_batches: Sequence[Any],
                 cells: list[tuple[str, str]], metrics: list[str], *, pooling: str, n_blocks: int, ci: float,
                 center: bool, normalize: Any, progress: bool, timings: dict[str, float]) -> pd.DataFrame:
    """The audit table from moments (plug-in values, no floors or p-values; see the module docstring)."""
    rowwise = [m for m in metrics if not get(m).streamable]
    if rowwise:
        raise ValueError(f"metrics {rowwise} need the rows and cannot be computed in stream mode; use mode='memory'")
    if n_blocks < 1:
        raise ValueError("n_blocks must be >= 1")
    rank, world = dist_info()
    rows = normalize == "rows"
    t0 = time.perf_counter()
    mine = range(rank, len(t_batches), world)  # this rank's share of the batches (global indices)
    accs = stream_pairs(teacher, student, [t_batches[i] for i in mine], cells,
                        lambda: BlockMoments(n_blocks, rows=rows, start=rank, step=world), pooling=pooling,
                        student_batches=[s_batches[i] for i in mine], progress=progress)
    timings["forward"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if world > 1:
        for acc in accs.values():
            acc.all_reduce()
    timings["all_reduce"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [r for cell in cells for r in _cell_rows(cell, accs[cell], metrics, ci=ci, center=center,
                                                   normalize=normalize, rows=rows)]
    timings["point+jackknife"] = time.perf_counter() - t0
    df = pd.DataFrame(out, columns=COLUMNS)
    df.attrs.update(
        teacher_layers=list(dict.fromkeys(c[0] for c in cells)),
        student_layers=list(dict.fromkeys(c[1] for c in cells)),
        metrics=metrics, n_rows=int(df["n"].iloc[0]) if len(df) else 0,
        uncertainty=f"block jackknife over {n_blocks} blocks of batches (normal interval); no permutation null",
        estimator="plugin", n_floor=0, ci=ci, n_blocks=n_blocks, world_size=world, center=center,
        normalize=normalize,
    )
    return df
