"""Streaming, mergeable sufficient statistics of a (teacher, student) pair.

Every linear metric (Procrustes and its kin, FG, biased linear CKA, projection-MSE) is a function of

    n,  mean_x,  mean_y,  C_xx = sum (x - mean_x)(x - mean_x)^T,  C_yy,  C_xy

so :class:`Moments` accumulates exactly these, chunk by chunk, in float64, in O(p^2 + q^2 + pq) memory
whatever the number of rows. Chunks are combined with the pairwise update of Chan, Golub & LeVeque (1979)
for *centred* co-moments::

    C_ab = C_a + C_b + (n_a n_b / n) d d^T,   d = mean_b - mean_a

so large means do not destroy precision, and two :class:`Moments` merge the same way (also across processes,
:meth:`Moments.all_reduce`). Uncentred statistics (``center=False``) are recovered as ``C + n mean mean^T``.
``normalize="rows"`` with ``center=False`` needs the statistics of the row-normalised stream, which are kept
alongside when the object is made with ``rows=True`` (that doubles the cost of :meth:`update`). With
``center=True`` "rows" centres each row *before* putting it on the sphere (see :mod:`repgeo.metrics._prep`),
which needs the column means of the whole stream first: it cannot be streamed in one pass and is refused.

Not computable from moments (they need the rows): debiased CKA and RBF CKA.

``Moments(metrics=[...])`` accumulates only what those metrics read: the Procrustes family (``procrustes``,
``procrustes_angular``, ``nbs``, ``bures``) needs ``C_xy`` and only the *traces* of ``C_xx`` and ``C_yy`` (the
squared norms; they merge as ``tr C_ab = tr C_a + tr C_b + (n_a n_b / n) ||d||^2``), so a Procrustes-only stream
forms one p x q product per chunk instead of three; any other metric keeps the full matrices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._prep import (
    LAZY_CENTER_MAX_ENERGY_RATIO,
    Normalize,
    _sum_sq,
    check_finite,
    check_options,
    check_pair,
    unit_rows,
)
from ._stats import FeatureStats
from ._xp import Array, col_mean, is_torch, namespace


@dataclass
class _CoMoments:
    """Count, means and centred cross-products of one stream of row pairs."""

    n: int
    mx: Array
    my: Array
    cxx: Array
    cyy: Array
    cxy: Array

    @classmethod
    def of_chunk(cls, X: Array, Y: Array, full: bool = True) -> _CoMoments:
        """Co-moments of one chunk; ``full=False`` keeps only the traces of ``C_xx`` and ``C_yy`` (0-d).

        The chunk's means are removed as rank-one corrections (``C_xy = X^T Y - n m_x m_y^T``) rather than
        centred copies while they carry at most ``LAZY_CENTER_MAX_ENERGY_RATIO`` times the centred energy, with
        the rounding bound stated in :mod:`repgeo.metrics._prep`; larger means are removed from a copy. The
        squared norm doubles as the NaN/Inf check.
        """
        xp = namespace(X, Y)
        n = X.shape[0]
        mx, my = xp.reshape(col_mean(xp, X), (-1,)), xp.reshape(col_mean(xp, Y), (-1,))
        (A, ma, tx), (B, mb, ty) = _lazy_centred(xp, X, mx, "X"), _lazy_centred(xp, Y, my, "Y")
        cxy = A.T @ B
        if ma is not None and mb is not None:
            cxy = cxy - n * (ma[:, None] * mb[None, :])
        if not full:
            return cls(n, mx, my, tx, ty, cxy)
        cxx, cyy = A.T @ A, B.T @ B
        if ma is not None:
            cxx = cxx - n * (ma[:, None] * ma[None, :])
        if mb is not None:
            cyy = cyy - n * (mb[:, None] * mb[None, :])
        return cls(n, mx, my, cxx, cyy, cxy)

    @property
    def full(self) -> bool:
        return self.cxx.ndim == 2

    def merge(self, other: _CoMoments) -> None:
        """Add ``other``'s rows to this stream (Chan et al. pairwise update), in place."""
        if other.n == 0:
            return
        n = self.n + other.n
        dx, dy = other.mx - self.mx, other.my - self.my
        f = self.n * other.n / n
        if self.full:
            self.cxx += other.cxx + f * (dx[:, None] * dx[None, :])
            self.cyy += other.cyy + f * (dy[:, None] * dy[None, :])
        else:
            self.cxx = self.cxx + other.cxx + f * (dx @ dx)
            self.cyy = self.cyy + other.cyy + f * (dy @ dy)
        self.cxy += other.cxy + f * (dx[:, None] * dy[None, :])
        self.mx = self.mx + dx * (other.n / n)
        self.my = self.my + dy * (other.n / n)
        self.n = n

    def arrays(self) -> list[Array]:
        return [self.mx, self.my, self.cxx, self.cyy, self.cxy]

    def copy(self) -> _CoMoments:
        xp = namespace(self.cxy)
        return _CoMoments(self.n, *(xp.asarray(a, copy=True) for a in self.arrays()))


class Moments:
    """Streaming sufficient statistics for every linear metric of a pair (X: n x p teacher, Y: n x q student).

    >>> m = Moments()
    >>> for X_chunk, Y_chunk in stream:      # doctest: +SKIP
    ...     m.update(X_chunk, Y_chunk)
    >>> procrustes(m); m.compute(["cka", "fg"])   # doctest: +SKIP

    Chunks may be numpy arrays or torch tensors (statistics are then kept as float64 tensors on the chunks'
    device); they are detached: gradients do not flow through :class:`Moments` (use the in-memory metric
    functions for losses). ``rows=True`` also keeps the statistics of the row-normalised stream, needed for
    ``normalize="rows"``. ``metrics``: the registered metrics the object will be read for (default: all);
    a Procrustes-family-only list skips ``X^T X`` and ``Y^T Y`` (module docstring).
    """

    def __init__(self, *, rows: bool = False, metrics: list[str] | None = None) -> None:
        if not isinstance(rows, bool):
            raise TypeError(f"rows must be True or False; got {rows!r}")
        self.rows = rows
        self.metrics = None if metrics is None else _check_metrics(metrics)
        self.full = self.metrics is None or not set(self.metrics) <= TRACE_ONLY
        self._plain: _CoMoments | None = None
        self._sphere: _CoMoments | None = None

    # ----------------------------------------------------------------- accumulation
    @property
    def n(self) -> int:
        """Number of rows seen."""
        return 0 if self._plain is None else self._plain.n

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(p, q)``, or None before the first update."""
        return None if self._plain is None else tuple(self._plain.cxy.shape)

    def update(self, X: object, Y: object) -> Moments:
        """Add a chunk of rows: X (m x p) and Y (m x q), the same m stimuli. Returns ``self``."""
        # NaN/Inf: checked here when rows=True (unit rows come first), else from the chunk's squared norms
        Xm, Ym = check_pair(X, Y, min_rows=1, finite=self.rows)
        if is_torch(Xm):
            import torch

            Xm, Ym = Xm.detach().to(torch.float64), Ym.detach().to(torch.float64)
        if self.shape is not None:
            if (Xm.shape[1], Ym.shape[1]) != self.shape:
                raise ValueError(
                    f"chunk widths (X: {Xm.shape[1]}, Y: {Ym.shape[1]}) differ from the earlier chunks' "
                    f"(X: {self.shape[0]}, Y: {self.shape[1]})"
                )
            if is_torch(Xm) != is_torch(self._plain.cxy) or (
                is_torch(Xm) and Xm.device != self._plain.cxy.device
            ):
                raise TypeError("chunks must all use the same backend and device as the first chunk")
        self._add(Xm, Ym)
        return self

    def _add(self, X: Array, Y: Array) -> None:
        parts = [("_plain", X, Y)]
        if self.rows:
            parts.append(("_sphere", unit_rows(X, "X"), unit_rows(Y, "Y")))
        for attr, A, B in parts:
            chunk = _CoMoments.of_chunk(A, B, self.full)
            current = getattr(self, attr)
            if current is None:
                setattr(self, attr, chunk)
            else:
                current.merge(chunk)

    def reset(self) -> Moments:
        """Forget every row (settings kept). Returns ``self``."""
        self._plain = self._sphere = None
        return self

    def state_dict(self) -> dict[str, Any]:
        """The settings and statistics as plain values and arrays (numpy, or float64 tensors on the chunks'
        device), for ``torch.save`` or a checkpoint; :meth:`load_state_dict` restores them exactly."""
        state: dict[str, Any] = {"rows": self.rows, "metrics": self.metrics}
        for attr in ("_plain", "_sphere"):
            cm = getattr(self, attr)
            state[attr.lstrip("_")] = None if cm is None else {
                "n": cm.n, **dict(zip(("mx", "my", "cxx", "cyy", "cxy"), cm.copy().arrays(), strict=True))}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> Moments:
        """Replace settings and statistics by those of :meth:`state_dict` (a ``ValueError`` names what is
        missing or inconsistent). Returns ``self``."""
        missing = sorted({"rows", "metrics", "plain", "sphere"} - set(state))
        if missing:
            raise ValueError(f"state is missing {', '.join(missing)} (not a Moments.state_dict())")
        fresh = Moments(rows=state["rows"], metrics=state["metrics"])
        for key in ("plain", "sphere"):
            part = state[key]
            if part is None:
                continue
            try:
                cm = _CoMoments(int(part["n"]), *(part[k] for k in ("mx", "my", "cxx", "cyy", "cxy")))
            except KeyError as e:
                raise ValueError(f"state[{key!r}] lacks {e.args[0]!r}") from None
            if cm.full != fresh.full:
                raise ValueError(f"state[{key!r}] does not match metrics={state['metrics']!r}")
            setattr(fresh, "_" + key, cm.copy())
        if fresh.rows and (fresh._plain is None) != (fresh._sphere is None):
            raise ValueError("state has rows=True but only one of its two streams")
        self.rows, self.metrics, self.full = fresh.rows, fresh.metrics, fresh.full
        self._plain, self._sphere = fresh._plain, fresh._sphere
        return self

    def merge(self, other: Moments) -> Moments:
        """Add all rows of ``other`` (in place; ``other`` is unchanged). Returns ``self``."""
        if not isinstance(other, Moments):
            raise TypeError(f"other must be a Moments; got {type(other).__name__}")
        if other.rows != self.rows:
            raise ValueError("cannot merge Moments made with different rows= settings")
        if other.full != self.full:
            raise ValueError("cannot merge Moments that accumulate different statistics (metrics= settings)")
        if other._plain is None:
            return self
        if self.shape is not None and other.shape != self.shape:
            raise ValueError(f"cannot merge Moments of shapes {self.shape} and {other.shape}")
        for attr in ("_plain", "_sphere") if self.rows else ("_plain",):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            if mine is None:
                setattr(self, attr, theirs.copy())
            else:
                mine.merge(theirs)
        return self

    def all_reduce(self, group: Any = None) -> Moments:
        """Merge the Moments of every rank of a ``torch.distributed`` process group, in place.

        Every rank ends with the statistics of all ranks' rows, merged in rank order (identical on all ranks).
        A rank that saw no rows takes part too: it ends with the backend of the ranks that did (torch tensors on
        the collective's device if any rank held torch statistics, numpy otherwise). Returns ``self``.
        """
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("all_reduce needs an initialised torch.distributed process group")
        backend = dist.get_backend(group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        world = dist.get_world_size(group)
        shape = self.shape or (0, 0)
        mine = self._plain.cxy if self._plain is not None else None
        header = torch.tensor([self.n, *shape, int(is_torch(mine))], dtype=torch.int64, device=device)
        headers = [torch.empty_like(header) for _ in range(world)]
        dist.all_gather(headers, header, group=group)
        dims = {tuple(h[1:3].tolist()) for h in headers if int(h[0]) > 0}
        if len(dims) > 1:
            raise ValueError(f"ranks hold Moments of different shapes: {sorted(dims)}")
        if not dims:
            return self
        p, q = dims.pop()
        parts = ("_plain", "_sphere") if self.rows else ("_plain",)
        px, qy = (p * p, q * q) if self.full else (1, 1)
        size = len(parts) * (2 + p + q + px + qy + p * q)  # n and a spare slot per part
        flat = torch.zeros(size, dtype=torch.float64, device=device)
        if self.n:
            flat.copy_(self._flatten(parts))
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat, group=group)
        if mine is not None:
            target = mine.device if is_torch(mine) else None
        else:
            target = device if any(int(h[0]) > 0 and int(h[3]) for h in headers) else None
        merged = Moments(rows=self.rows, metrics=self.metrics)
        for h, g in zip(headers, gathered, strict=True):
            if int(h[0]) > 0:
                merged.merge(Moments._unflatten(g, parts, p, q, self.rows, target, self.full))
        self._plain, self._sphere = merged._plain, merged._sphere
        return self

    def _flatten(self, parts: tuple[str, ...]) -> Any:
        import torch

        pieces = []
        for attr in parts:
            cm = getattr(self, attr)
            pieces.append(torch.tensor([float(cm.n), 0.0], dtype=torch.float64))
            pieces.extend(torch.as_tensor(a, dtype=torch.float64).cpu().reshape(-1) for a in cm.arrays())
        return torch.cat(pieces)

    @staticmethod
    def _unflatten(
        flat: Any, parts: tuple[str, ...], p: int, q: int, rows: bool, target: Any, full: bool = True
    ) -> Moments:
        """Rebuild gathered statistics as numpy arrays (``target`` None) or tensors on device ``target``."""
        sq = [(p, p), (q, q)] if full else [(), ()]
        shapes = [(p,), (q,), *sq, (p, q)]
        sizes = [int(np.prod(shape)) for shape in shapes]
        out, pos = Moments(rows=rows, metrics=None if full else sorted(TRACE_ONLY)), 0
        for attr in parts:
            n = int(flat[pos].item())
            pos += 2
            arrays = []
            for size, shape in zip(sizes, shapes, strict=True):
                chunk = flat[pos : pos + size].reshape(shape)
                pos += size
                if target is None:
                    arrays.append(chunk.cpu().numpy().copy())
                else:
                    arrays.append(chunk.to(target).clone())
            setattr(out, attr, _CoMoments(n, *arrays))
        return out

    # ----------------------------------------------------------------- read-out
    def stats(self, *, center: bool = True, normalize: Normalize = "frobenius", min_rows: int = 2) -> FeatureStats:
        """Second-order statistics of the preprocessed pair (see :mod:`repgeo.metrics._prep`)."""
        check_options(center, normalize)
        if self.n < min_rows:
            raise ValueError(f"the metric needs at least {min_rows} rows; these Moments hold {self.n}")
        if normalize == "rows" and center:
            raise ValueError(
                "normalize='rows' with center=True centres every row before putting it on the sphere, which needs "
                "the column means of the whole stream first; Moments cannot stream it in one pass. Use "
                "center=False with normalize='rows', or the in-memory metric functions"
            )
        if normalize == "rows" and not self.rows:
            raise ValueError("normalize='rows' needs Moments(rows=True), which keeps row-normalised statistics")
        cm = self._sphere if normalize == "rows" else self._plain
        xp = namespace(cm.cxy)
        xx, yy, xy = cm.cxx, cm.cyy, cm.cxy
        if not center:
            n, mx, my = cm.n, cm.mx, cm.my
            if cm.full:
                xx = xx + n * (mx[:, None] * mx[None, :])
                yy = yy + n * (my[:, None] * my[None, :])
            else:
                xx, yy = xx + n * (mx @ mx), yy + n * (my @ my)
            xy = xy + n * (mx[:, None] * my[None, :])
        sx, sy = (xp.linalg.trace(xx), xp.linalg.trace(yy)) if cm.full else (xx, yy)
        if normalize in ("frobenius", "rows"):  # unit rows: the trace is n, i.e. the 1/sqrt(n) weighting
            for name, s in (("X", sx), ("Y", sy)):
                if not bool(s > 0):
                    raise ValueError(
                        f"{name} is zero after preprocessing (constant columns are zero once centred); "
                        "the metric is undefined for it"
                    )
            xx, yy, xy = xx / sx, yy / sy, xy / xp.sqrt(sx * sy)
            sx, sy = sx / sx, sy / sy
        if cm.full:
            return FeatureStats(cm.n, xx, yy, xy)
        missing = (f"these Moments were made with metrics={self.metrics}, which need only its trace; "
                   "make Moments() (all metrics) to read the others")
        return FeatureStats(cm.n, None, None, xy, x_sq=sx, y_sq=sy, missing=missing)

    def compute(
        self, metrics: list[str] | None = None, *, center: bool = True, normalize: Normalize = "frobenius"
    ) -> dict[str, Any]:
        """Values of the named registered metrics (default: those given at construction, else every streamable
        one), sharing one read-out."""
        from .registry import compare

        metrics = self.metrics if metrics is None else metrics
        return compare(self, None, metrics, center=center, normalize=normalize)

    def __repr__(self) -> str:
        if self.metrics is not None:
            return f"Moments(n={self.n}, shape={self.shape}, rows={self.rows}, metrics={self.metrics})"
        return f"Moments(n={self.n}, shape={self.shape}, rows={self.rows})"


def _lazy_centred(xp: Any, A: Array, m: Array, name: str) -> tuple[Array, Array | None, Array]:
    """``(A, m, ||A_c||^2)`` when A's mean ``m`` may be removed as a rank-one correction, else
    ``(A - m, None, ||A - m||^2)`` (a copy); raises on NaN/Inf."""
    total = _sum_sq(xp, A)
    if not bool(xp.isfinite(total)):
        check_finite(A, name)  # NaN or Inf: raises; otherwise the squares overflowed (centre a copy)
    centred = total - A.shape[0] * _sum_sq(xp, m)
    if not bool(total > 0) or (bool(xp.isfinite(total)) and bool(total <= LAZY_CENTER_MAX_ENERGY_RATIO * centred)):
        return A, m, centred  # an all-zero chunk, or means within the ratio
    A = A - m
    return A, None, _sum_sq(xp, A)


#: metrics that read only the traces of X^T X and Y^T Y (with X^T Y)
TRACE_ONLY = frozenset({"procrustes", "procrustes_angular", "nbs", "bures"})


def _check_metrics(metrics: object) -> list[str]:
    """Validate ``Moments(metrics=...)``: registered, streamable metric names."""
    from .registry import get

    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)) or not metrics:
        raise TypeError(f"metrics must be a non-empty list of metric names or None; got {metrics!r}")
    names = []
    for name in metrics:
        if not get(name).streamable:
            raise ValueError(f"metric {name!r} needs the rows and cannot be computed from Moments")
        names.append(name)
    return names
