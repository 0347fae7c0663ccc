"""Uncertainty for audit cells: bootstrap confidence intervals, permutation nulls, block jackknife.

How the cost is kept to a small multiple of the point estimate
--------------------------------------------------------------
Every streamable metric is a function of the second-order statistics (n, C_xx, C_yy, C_xy) of the
preprocessed pair (see :mod:`repgeo.metrics.moments`). A bootstrap replicate that draws stimulus i ``w_i``
times has the *weighted* statistics

    N = sum w_i,  m_x = X^T w / N,  C_xy = X^T diag(w) Y - N m_x m_y^T   (and likewise C_xx, C_yy),

so B replicates are B weighted cross-products, computed as batched matrix products in torch (float64) on the
stored pooled features -- no re-running of the models, no copies of resampled rows. A permutation replicate
(rows of the student shuffled) leaves C_xx and C_yy unchanged and only needs ``X^T Y[perm]``. The metric
read-out then runs the registry's own ``from_stats`` code on each replicate's statistics (the singular values
Procrustes needs are computed for all B replicates in one batched ``svdvals`` call), so the replicate values
are the same formulas as the point estimate.

Two exact reductions keep the matrices small:

* only traces and Frobenius norms of C_xx / C_yy are kept (what Procrustes, FG and CKA need); the full C_yy is
  formed only when ``proj_mse`` is requested;
* when there are fewer rows than features (n < p), the features are rotated into the row space
  (``X -> X V``, thin SVD ``X = U S V^T``): every linear metric is invariant to that rotation, and the
  matrices become n x n.

Bootstrap weights are drawn per *stimulus* (multinomial, n draws from n), so with ``pooling="tokens"`` all
tokens of a sentence are resampled together (cluster bootstrap). The same weights and permutations are used
for every cell of an audit (common random numbers): differences between cells are not blurred by different
draws. Intervals are bias-corrected percentile intervals (see :func:`percentile_interval`).

Metrics that are not functions of the moments (``cka_debiased``, ``cka_rbf``) fall back to calling the metric
on resampled / permuted rows, one replicate at a time (correct, but B times the point cost).

Streaming audits (only :class:`~repgeo.metrics.Moments` are kept) cannot resample stimuli. There the stream is
split into K blocks (batch ``i`` goes to block ``i mod K``), each with its own Moments; the delete-one-block
jackknife gives a standard error and a normal interval ``value ± z·se``. No permutation null is available
from moments alone (``p_value`` is NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from repgeo.metrics import Moments, get
from repgeo.metrics.stats import FeatureStats, unit_rows
from repgeo.metrics.stats import namespace as array_namespace

__all__ = [
    "bootstrap_weights",
    "floor_values",
    "jackknife_interval",
    "jackknife_se",
    "jackknife_weights",
    "normal_interval",
    "percentile_interval",
    "permutation_indices",
    "permutation_pvalue",
    "replicate_values",
]

_SVD_METRICS = frozenset({"procrustes", "procrustes_angular", "nbs", "bures"})
_CHUNK_BYTES = 64 * 2**20


def bootstrap_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_rows) multiplicity weights: stimuli drawn with replacement, expanded to their rows.

    ``groups[i]`` is the stimulus of row i (``0..G-1``); with one row per stimulus it is ``arange(n)``.
    """
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, groups].astype(np.float64)


def jackknife_weights(groups: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """(K, n_rows) 0/1 weights of a delete-one-fold jackknife: stimuli are dealt at random into
    ``K = min(n_folds, G)`` folds (``K = G`` is leave-one-stimulus-out) and replicate k drops fold k."""
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1
    k = min(n_folds, n_groups)
    fold_of_group = rng.permutation(n_groups) % k
    return (fold_of_group[groups][None, :] != np.arange(k)[:, None]).astype(np.float64)


def jackknife_se(values: np.ndarray) -> float:
    """Grouped jackknife standard error ``sqrt((K-1)/K sum (theta_k - mean)^2)`` (NaN replicates dropped)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan
    return math.sqrt((v.size - 1) / v.size * float(np.sum((v - v.mean()) ** 2)))


def normal_interval(point: float, se: float, ci: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """``point ± z se`` at level ``ci``, clipped to the metric's range."""
    from scipy.stats import norm

    if not (math.isfinite(point) and math.isfinite(se)):
        return math.nan, math.nan
    z = float(norm.ppf(0.5 + ci / 2.0))
    return max(point - z * se, bounds[0]), min(point + z * se, bounds[1])


def permutation_indices(n_rows: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm, n_rows) independent random permutations of the rows."""
    return np.argsort(rng.random((n_perm, n_rows)), axis=1)


class _ReplicateStats(FeatureStats):
    """FeatureStats of one replicate, built from pre-reduced quantities (see the module docstring)."""

    def __init__(self, n: float, xy: np.ndarray | None, p: int, q: int, x_sq: Any, y_sq: Any, kk: Any, ll: Any,
                 kl: Any, svals: np.ndarray | None, yy_fn: Any) -> None:
        self.xp = array_namespace(np.zeros(1))
        self.n, self.p, self.q = n, p, q
        self._xy = xy
        self.x_sq, self.y_sq = x_sq, y_sq
        self._gram = (kk, ll, kl)
        self._svals = svals
        self._yy_fn = yy_fn

    @property
    def xy(self) -> np.ndarray:  # type: ignore[override]
        if self._xy is None:
            raise RuntimeError("this replicate kept no cross-product")
        return self._xy

    @cached_property
    def xx(self) -> np.ndarray:  # type: ignore[override]
        raise RuntimeError("this replicate kept no teacher covariance")

    @cached_property
    def yy(self) -> np.ndarray:  # type: ignore[override]
        return self._yy_fn()

    def gram_inner(self) -> tuple[Any, Any, Any]:
        return self._gram

    def cross_svdvals(self) -> np.ndarray:
        if self._svals is not None:
            return self._svals
        return super().cross_svdvals()


def _prepare(A: np.ndarray, *, center: bool, normalize: Any) -> torch.Tensor:
    """Float64 tensor of the rows after the row-wise part of the preprocessing, rotated into the row space
    when n < p, and centred globally (when ``center``) so that the per-replicate centring is well
    conditioned. Under ``normalize="rows"`` the rows are centred first (when ``center``) and then put on the
    unit sphere, as :func:`repgeo.metrics.stats.preprocess` does; the replicates must then not centre again (see
    :func:`_side_options`)."""
    A = np.asarray(A, dtype=np.float64)
    if normalize == "rows":
        if center:
            A = A - A.mean(axis=0, keepdims=True)
        A = unit_rows(A, "features")
    t = torch.from_numpy(np.ascontiguousarray(A))
    n, p = t.shape
    if n < p:
        _, _, vh = torch.linalg.svd(t, full_matrices=False)
        t = t @ vh.T
    if center and normalize != "rows":
        t = t - t.mean(dim=0, keepdim=True)
    return t.contiguous()


def _side_options(center: bool, normalize: Any) -> tuple[bool, Any]:
    """Per-replicate (center, normalize) on :func:`_prepare`'s rows: unit rows are not re-centred, and their
    1/sqrt(n) weighting is a Frobenius normalisation (the trace of unit rows is the row count)."""
    return (False, "frobenius") if normalize == "rows" else (center, normalize)


GRAM_MAX_ROWS = 4096  # up to this many rows, traces and Frobenius norms come from n x n Gram matrices


class _SideStats:
    """Weighted statistics of one side for a chunk of replicates (rows of ``W``): N, traces and Frobenius norms
    of the centred C_xx (from the n x n Gram ``K`` when given: O(n^2) per replicate instead of O(n p^2)), and,
    on demand, means, the weighted rows and the full normalised C (for proj_mse)."""

    def __init__(self, A: torch.Tensor, W: torch.Tensor, center: bool, normalize: Any,
                 K: torch.Tensor | None, KK: torch.Tensor | None = None) -> None:
        self.A, self.W, self.center, self.K = A, W, center, K
        self.N = W.sum(dim=1)  # (c,)
        if K is not None:
            self.Kw = W @ K  # (c, n)
            self.wKw = (W * self.Kw).sum(dim=1)
            tr = W @ torch.diagonal(K)
            fro2 = ((W @ (K * K if KK is None else KK)) * W).sum(dim=1)
            if center:
                tr = tr - self.wKw / self.N
                fro2 = fro2 - 2.0 / self.N * (W * self.Kw * self.Kw).sum(dim=1) + self.wKw**2 / self.N**2
        else:
            C = self.full_raw
            tr = torch.diagonal(C, dim1=1, dim2=2).sum(dim=1)
            fro2 = (C * C).sum(dim=(1, 2))
        self.scale = tr if normalize == "frobenius" else torch.ones_like(tr)
        self.sq = tr / self.scale
        self.fro2 = fro2 / self.scale**2

    @cached_property
    def mean(self) -> torch.Tensor | None:
        return (self.W @ self.A) / self.N[:, None] if self.center else None

    @cached_property
    def Aw(self) -> torch.Tensor:
        return self.W[:, :, None] * self.A[None]  # (c, n, d)

    @cached_property
    def full_raw(self) -> torch.Tensor:
        C = self.Aw.transpose(1, 2) @ self.A
        if self.mean is not None:
            C = C - self.N[:, None, None] * (self.mean[:, :, None] * self.mean[:, None, :])
        return C

    @cached_property
    def C(self) -> torch.Tensor:
        return self.full_raw / self.scale[:, None, None]


def _cross(tx: _SideStats, ty: _SideStats) -> torch.Tensor:
    C = tx.Aw.transpose(1, 2) @ ty.A  # (c, p, q)
    if tx.mean is not None:
        C = C - tx.N[:, None, None] * (tx.mean[:, :, None] * ty.mean[:, None, :])
    return C / torch.sqrt(tx.scale * ty.scale)[:, None, None]


def _cross_fro2(tx: _SideStats, ty: _SideStats) -> torch.Tensor:
    """||C_xy||_F^2 (normalised) through the Grams: w^T (K∘L) w minus the centring terms."""
    W, K, L = tx.W, tx.K, ty.K
    kl = ((W @ (K * L)) * W).sum(dim=1)
    if tx.center:
        N = tx.N
        kl = kl - 2.0 / N * (W * tx.Kw * ty.Kw).sum(dim=1) + tx.wKw * ty.wKw / N**2
    return kl / (tx.scale * ty.scale)


def _chunk_size(n_rep: int, n: int, width: int) -> int:
    return max(1, min(n_rep, _CHUNK_BYTES // max(1, 8 * n * width)))


def _read_out(
    metrics: Sequence[str],
    C: torch.Tensor | None,
    kl: torch.Tensor | None,
    tx: _SideStats,
    ty: _SideStats,
    c: int,
    p: int,
    q: int,
) -> dict[str, np.ndarray]:
    """Metric values of a chunk of ``c`` replicates from their (normalised) statistics."""
    svals = torch.linalg.svdvals(C).numpy() if (C is not None and _SVD_METRICS.intersection(metrics)) else None
    Cn = C.numpy() if C is not None else None
    kln = kl.numpy() if kl is not None else np.sum(Cn * Cn, axis=(1, 2))
    ex = lambda t: t.expand(c) if t.shape[0] == 1 else t  # noqa: E731
    x_sq, y_sq, kk, ll, N = (ex(v).numpy() for v in (tx.sq, ty.sq, tx.fro2, ty.fro2, tx.N))
    out: dict[str, list[float]] = {m: [] for m in metrics}
    for b in range(c):
        def yy(b: int = b) -> np.ndarray:
            return ty.C[b if ty.C.shape[0] > 1 else 0].numpy()

        s = _ReplicateStats(
            float(N[b]), None if Cn is None else Cn[b], p, q, x_sq[b], y_sq[b], kk[b], ll[b], kln[b],
            None if svals is None else svals[b], yy,
        )
        for m in metrics:
            out[m].append(float(get(m).from_stats(s)))
    return {m: np.asarray(v) for m, v in out.items()}


def replicate_values(
    teacher: Mapping[str, np.ndarray],
    student: Mapping[str, np.ndarray],
    cells: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    *,
    weights: np.ndarray | None = None,
    perms: np.ndarray | None = None,
    center: bool = True,
    normalize: Any = "frobenius",
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Metric values of every bootstrap replicate (``weights``: (B, n) multiplicities) or every permutation
    replicate (``perms``: (B, n) row orders applied to the student), for each (teacher, student) cell.

    Returns ``{cell: {metric: (B,) array}}``. Exactly one of ``weights`` / ``perms`` is given.
    """
    if (weights is None) == (perms is None):
        raise ValueError("give exactly one of weights (bootstrap) or perms (permutation)")
    # "rows" with centring centres each bootstrap replicate before the sphere: no fixed per-row transform exists
    exact_only = normalize == "rows" and center and weights is not None
    streamable = [] if exact_only else [m for m in metrics if get(m).streamable]
    rowwise = [m for m in metrics if m not in streamable]
    side_center, side_normalize = _side_options(center, normalize)
    need_cross = bool(_SVD_METRICS.intersection(streamable) or "proj_mse" in streamable)
    result: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {c: {m: [] for m in metrics} for c in cells}
    reps = weights if weights is not None else perms
    assert reps is not None
    n_rep, n = reps.shape
    if streamable:
        t_names = list(dict.fromkeys(c[0] for c in cells))
        s_names = list(dict.fromkeys(c[1] for c in cells))
        prep = {("t", k): _prepare(teacher[k], center=center, normalize=normalize) for k in t_names}
        prep.update({("s", k): _prepare(student[k], center=center, normalize=normalize) for k in s_names})
        gram = n <= GRAM_MAX_ROWS
        grams = {k: A @ A.T for k, A in prep.items()} if gram else dict.fromkeys(prep)
        squares = {k: K * K for k, K in grams.items()} if gram else dict.fromkeys(prep)
        width = max(a.shape[1] for a in prep.values()) if (need_cross or not gram) else 1
        step = _chunk_size(n_rep, n, width)
        ones = torch.ones(1, n, dtype=torch.float64)
        for start in range(0, n_rep, step):
            stop = min(n_rep, start + step)
            c = stop - start
            if weights is not None:
                W = torch.from_numpy(np.ascontiguousarray(weights[start:stop]))
                side = {k: _SideStats(A, W, side_center, side_normalize, grams[k], squares[k])
                        for k, A in prep.items()}
                for t, s in cells:
                    tx, ty = side[("t", t)], side[("s", s)]
                    C = _cross(tx, ty) if need_cross else None
                    kl = _cross_fro2(tx, ty) if (gram and C is None) else None
                    vals = _read_out(streamable, C, kl, tx, ty, c, tx.A.shape[1], ty.A.shape[1])
                    for m, v in vals.items():
                        result[(t, s)][m].append(v)
            else:
                P = torch.from_numpy(np.ascontiguousarray(perms[start:stop]))
                side = {k: _SideStats(A, ones, side_center, side_normalize, grams[k], squares[k])
                        for k, A in prep.items()}
                for t, s in cells:
                    tx, ty = side[("t", t)], side[("s", s)]
                    A, B = prep[("t", t)], prep[("s", s)]
                    norm = torch.sqrt(tx.scale * ty.scale)
                    # ||X^T Y_perm|| in feature space (a permuted n x n Gram would cost more than n p q)
                    C, kl = (A.T[None] @ B[P]) / norm, None  # centred globally: permuting keeps the means
                    vals = _read_out(streamable, C, kl, tx, ty, c, A.shape[1], B.shape[1])
                    for m, v in vals.items():
                        result[(t, s)][m].append(v)
    for cell in cells:
        X, Y = np.asarray(teacher[cell[0]], np.float64), np.asarray(student[cell[1]], np.float64)
        for m in rowwise:
            fn = get(m).fn
            vals = []
            for b in range(n_rep):
                if weights is not None:
                    idx = np.repeat(np.arange(n), weights[b].astype(int))
                    vals.append(float(fn(X[idx], Y[idx], center=center, normalize=normalize)))
                else:
                    vals.append(float(fn(X, Y[perms[b]], center=center, normalize=normalize)))
            result[cell][m].append(np.asarray(vals))
    return {c: {m: np.concatenate(v) for m, v in d.items()} for c, d in result.items()}


def floor_values(
    teacher: Mapping[str, np.ndarray],
    student: Mapping[str, np.ndarray],
    cells: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    perms: np.ndarray,
    plugin_null: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    estimators: Mapping[str, Any],
    options: Mapping[str, Any],
) -> dict[tuple[str, str], dict[str, float]]:
    """Null floor of every cell: the mean of the reported estimator over the row orders ``perms`` (k, n) applied
    to the student -- what the same estimator reads once the teacher/student pairing is broken.

    ``estimators[m]`` is the corrected estimator ``fn(X, Y, **options)`` or None for the plug-in, whose values
    on the same permutations are already in ``plugin_null[cell][m]`` (the first k are averaged). NaN for k = 0.
    """
    k = perms.shape[0]
    out: dict[tuple[str, str], dict[str, float]] = {}
    for cell in cells:
        X, Y = teacher[cell[0]], student[cell[1]]
        out[cell] = {}
        for m in metrics:
            fn = estimators.get(m)
            if k == 0:
                out[cell][m] = math.nan
            elif fn is None:
                out[cell][m] = float(np.mean(plugin_null[cell][m][:k]))
            else:
                out[cell][m] = float(np.mean([fn(X, np.asarray(Y)[perm], **options) for perm in perms]))
    return out


def percentile_interval(values: np.ndarray, ci: float, point: float | None = None) -> tuple[float, float]:
    """Bootstrap interval at level ``ci`` (NaN replicates ignored).

    Without ``point``: the plain percentile interval. With ``point`` (the estimate on all stimuli): the
    bias-corrected percentile interval (BC, Efron 1987): with ``z0 = Φ⁻¹(share of replicates below the
    estimate)`` the quantiles ``Φ(2 z0 ± z)`` are taken. Resampling stimuli with replacement duplicates rows,
    which biases Procrustes / FG / CKA towards "more alike", so the replicate distribution is shifted off the
    estimate; BC undoes that shift. When the shift is extreme (``|z0| >= z``, typically under ~20 stimuli, where
    no bootstrap interval is trustworthy) the plain percentile interval is widened to include the estimate.
    """
    from scipy.stats import norm

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - ci) / 2.0
    if point is None or not math.isfinite(point):
        lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
        return float(lo), float(hi)
    share = (np.count_nonzero(v < point) + 0.5 * np.count_nonzero(v == point)) / v.size
    share = min(max(share, 0.5 / v.size), 1.0 - 0.5 / v.size)
    z0, z = float(norm.ppf(share)), float(norm.ppf(1.0 - alpha))
    if abs(z0) < z:
        lo, hi = np.quantile(v, [float(norm.cdf(2 * z0 - z)), float(norm.cdf(2 * z0 + z))])
    else:  # BC would collapse onto an extreme quantile: plain percentile interval, widened to the estimate
        lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(min(lo, point)), float(max(hi, point))


def permutation_pvalue(observed: float, null: np.ndarray, kind: str) -> float:
    """One-sided permutation p-value ``(1 + #{null at least as aligned}) / (1 + B)``: for a similarity,
    null >= observed; for a distance, null <= observed. Small = the pair is more aligned than chance."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if null.size == 0 or not math.isfinite(observed):
        return math.nan
    tol = 1e-12 * max(1.0, abs(observed))
    hits = null >= observed - tol if kind == "similarity" else null <= observed + tol
    return float((1 + np.count_nonzero(hits)) / (1 + null.size))


def jackknife_interval(
    blocks: Sequence[Moments], metric: str, ci: float, *, center: bool = True, normalize: Any = "frobenius"
) -> tuple[float, float, float]:
    """Delete-one-block jackknife over K block Moments: ``(value, low, high)`` with ``value`` from all blocks
    merged and a normal interval ``value ± z·se``, ``se² = (K-1)/K Σ (θ_(-k) - mean θ_(-k))²``."""

    used = [b for b in blocks if b.n > 0]
    full = Moments(rows=used[0].rows)
    for b in used:
        full.merge(b)
    spec = get(metric)
    value = float(spec.fn(full, center=center, normalize=normalize))
    K = len(used)
    if K < 2:
        return value, math.nan, math.nan
    loo = []
    for k in range(K):
        m = Moments(rows=used[0].rows)
        for j, b in enumerate(used):
            if j != k:
                m.merge(b)
        try:
            loo.append(float(spec.fn(m, center=center, normalize=normalize)))
        except ValueError:
            loo.append(math.nan)
    lo, hi = normal_interval(value, jackknife_se(np.asarray(loo)), ci, spec.bounds)
    return value, lo, hi
