"""Bias-aware and held-out estimators of the similarity metrics, for audits at finite sample sizes.

The plug-in metrics of :mod:`repgeo.metrics` are functions of sample covariances. When the number of rows n is
not much larger than the feature widths p, q they are biased: sampling noise in ``X^T Y`` adds to its nuclear
and Frobenius norms, so an unrelated pair looks alike (at n = 2d an unrelated pair of 384-d features reads
NBS ~ 0.25 instead of 0), and the closed-form projection residual is exactly 0 once n <= q. The estimators here
target the *population* value of each metric -- the value its formula takes on the population covariances
``Sigma_xx, Sigma_yy, Sigma_xy`` of the row distribution -- with the same conventions (X teacher n x p, Y student
n x q, columns centred, unit-Frobenius scaling; see :mod:`repgeo.metrics._prep`). Population values under the
default preprocessing::

    NBS = ||Sigma_xy||_* / sqrt(tr Sigma_xx tr Sigma_yy),  Procrustes = sqrt(2 - 2 NBS),
    FG^2 = ||Sigma_xx||_F^2 / (tr Sigma_xx)^2 + ||Sigma_yy||_F^2 / (tr Sigma_yy)^2
           - 2 ||Sigma_xy||_F^2 / (tr Sigma_xx tr Sigma_yy),
    CKA = ||Sigma_xy||_F^2 / (||Sigma_xx||_F ||Sigma_yy||_F),
    projection-MSE = 1 - tr(Sigma_xy Sigma_yy^+ Sigma_yx) / tr Sigma_xx      (1 for an unrelated student).

Estimators (``benchmarks/estimator_bias.py`` measures their bias and RMSE against these values):

* **Nuclear norm (Procrustes, NBS, Bures).** With ``C = X^T Y`` (centred) and K folds of rows, the cross-fitted
  estimate ``cf = sum_k tr(Q_{-k}^T C_k)`` uses the polar factor ``Q_{-k} = U V^T`` of the cross-product of the
  other folds (``C - C_k``) on the rows of fold k, which it never saw: noise cannot align with a direction chosen
  without it, so ``cf`` is unbiased for ``sum_k tr(Q_{-k}^T Sigma)``, which is below ``||Sigma||_*`` by the
  misalignment of ``Q_{-k}``. The plug-in ``||C||_*`` is above it by the same second-order term (half the
  curvature of the nuclear norm times the noise, for K = infinity; ``K/(K-1)`` times larger for the fits on
  ``(K-1)/K`` of the rows). The corrected nuclear norm cancels the two to second order::

      ||Sigma_xy||_*  ~  (K ||C||_* + (K - 1) cf) / (2K - 1)

  and NBS is that over ``||X||_F ||Y||_F``. Where the pair is unrelated the plug-in's excess is first-order (the
  nuclear norm of pure noise) and only about half of it is removed; the audit's *floor* (the value with the rows
  shuffled) shows that level beside every cell. It equals the plug-in as n -> infinity.
* **Frobenius norms (FG, CKA).** ``||Sigma_xy||_F^2``, ``||Sigma_xx||_F^2``, ``||Sigma_yy||_F^2`` are replaced by
  the unbiased U-statistics of debiased HSIC (Song et al. 2012; :func:`repgeo.metrics.cka` with
  ``debiased=True`` -- the same code) and the traces by ``||X||_F^2 / (n - 1)``. Debiased CKA is the ratio of the
  first three; FG^2 is the formula above, clipped at 0 before the square root.
* **Projection-MSE (held out).** K-fold cross-fitting over stimuli: on each fold's complement ridge regression
  ``W = (Y^T Y + lam I)^-1 Y^T X`` (columns centred with that complement's means) is fitted, ``lam = c tr(Y^T Y)``
  with ``c`` chosen from :data:`RIDGE_GRID` by an inner 80/20 split of the complement, and the residual is
  measured on the fold. The estimate is the summed held-out residual over the summed held-out variance of X
  (about its training means): 0 = perfect, about 1 for an unrelated student, >= the population value on average
  (a fitted map is never better than the best one). :func:`projection_residual` with train = test and ``c = 0``
  is the in-sample closed form :func:`repgeo.metrics.proj_mse`.

Diagnostics: :func:`effective_rank` is the participation ratio ``(tr C)^2 / ||C||_F^2`` of the covariance (1 for a
rank-one matrix, p for an isotropic one).

These are analysis estimators: numpy in, float out (torch tensors are converted); the losses of
:mod:`repgeo.distill` stay the smooth plug-in forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from repgeo._validation import PROCRUSTES_KINDS, check_choice, check_int

from ._prep import Normalize, prepare_pair
from .cka import _hsic_unbiased_linear, cka

__all__ = [
    "CORRECTED",
    "CORRECTED_BOUNDS",
    "RIDGE_GRID",
    "corrected",
    "effective_rank",
    "fg_corrected",
    "heldout_terms",
    "nbs_corrected",
    "nuclear_corrected",
    "procrustes_corrected",
    "proj_mse_heldout",
    "projection_residual",
    "row_space",
]

#: ridge penalties tried by the held-out projection, relative to tr(Y^T Y) of the training rows (0: pseudo-inverse)
RIDGE_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
NUCLEAR_FOLDS = 5
PROJECTION_FOLDS = 5


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _prepared(X: Any, Y: Any, center: bool, normalize: Normalize, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    if center is not True:
        raise ValueError("corrected estimators need center=True (they estimate covariances); use the plug-in metric")
    if normalize not in ("frobenius", "rows"):
        raise ValueError(
            f"corrected estimators need normalize='frobenius' or 'rows' (scale-free values); got {normalize!r}"
        )
    Xp, Yp = prepare_pair(_numpy(X), _numpy(Y), center=True, normalize=normalize, min_rows=min_rows)
    return _numpy(Xp), _numpy(Yp)


def _fold_labels(n: int, folds: int, groups: Any, seed: int) -> np.ndarray:
    """Fold of every row: whole groups (stimuli) are dealt at random into ``folds`` folds."""
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one entry per row ({n}); got shape {groups.shape}")
    _, g = np.unique(groups, return_inverse=True)
    n_groups = int(g.max()) + 1
    check_int("folds", folds, 2)
    if n_groups < 2:
        raise ValueError("cross-fitting needs at least 2 stimuli (groups)")
    k = min(int(folds), n_groups)
    fold_of_group = np.random.default_rng(seed).permutation(n_groups) % k
    return fold_of_group[g]


def row_space(A: Any) -> np.ndarray:
    """``A Q`` (n x n) with Q (width x n) an orthonormal basis of the row space of A when n < width; A itself
    (as float64) otherwise.

    Every row of A lies in that row space, so ``(A Q)(A Q)^T = A A^T``: Gram matrices, row norms, column-centred
    Gram matrices (the column means are a combination of rows) and every metric and estimator here -- all
    functions of ``A A^T`` and of cross-products ``A^T B`` up to an orthogonal map -- are unchanged, and a row
    permutation commutes with it (``A[perm] Q = (A Q)[perm]``). Reducing each layer once before an audit turns
    every width x width factorisation into an n x n one.
    """
    a = _numpy(A)
    if a.ndim != 2:
        raise ValueError(f"row_space needs a 2-D array (rows x features); got shape {a.shape}")
    n, p = a.shape
    if n >= p:
        return a
    return a @ np.linalg.qr(a.T).Q


def _polar(C: np.ndarray) -> np.ndarray:
    """Polar factor ``U V^T`` of C over its numerical range (directions with singular value <= ``r eps s_max`` --
    the null space of a rank-deficient fold -- are dropped rather than given arbitrary vectors)."""
    U, s, Vt = np.linalg.svd(C, full_matrices=False)
    keep = s > max(C.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    return U[:, keep] @ Vt[keep]


def nuclear_corrected(X: np.ndarray, Y: np.ndarray, labels: np.ndarray) -> float:
    """Corrected ``||Sigma_xy||_*`` (in the units of ``||X^T Y||_*``) of centred X, Y with fold ``labels``.

    ``(K ||C||_* + (K - 1) sum_k tr(Q_{-k}^T C_k)) / (2K - 1)``; see the module docstring.
    """
    X, Y = row_space(X), row_space(Y)
    C = X.T @ Y
    plug = float(np.sum(np.linalg.svd(C, compute_uv=False)))
    folds = np.unique(labels)
    K = folds.size
    cf = 0.0
    for k in folds:
        rows = labels == k
        Ck = X[rows].T @ Y[rows]
        cf += float(np.sum(_polar(C - Ck) * Ck))
    return (K * plug + (K - 1) * cf) / (2 * K - 1)


def nbs_corrected(
    X: Any, Y: Any, *, folds: int = NUCLEAR_FOLDS, groups: Any = None, seed: int = 0,
    center: bool = True, normalize: Normalize = "frobenius",
) -> float:
    """Corrected normalised Bures similarity ``||Sigma_xy||_* / sqrt(tr Sigma_xx tr Sigma_yy)``, clipped to [0, 1].

    ``folds`` row folds (whole ``groups`` together), dealt with ``seed``. Needs n >= 4.
    """
    Xp, Yp = _prepared(X, Y, center, normalize, 4)
    labels = _fold_labels(Xp.shape[0], folds, groups, seed)
    nuc = nuclear_corrected(Xp, Yp, labels)
    return float(np.clip(nuc / math.sqrt(float(np.sum(Xp * Xp)) * float(np.sum(Yp * Yp))), 0.0, 1.0))


def procrustes_corrected(
    X: Any, Y: Any, *, kind: str = "euclidean", folds: int = NUCLEAR_FOLDS, groups: Any = None, seed: int = 0,
    center: bool = True, normalize: Normalize = "frobenius",
) -> float:
    """Corrected Procrustes distance of unit-Frobenius inputs: ``sqrt(2 - 2 NBS_c)`` (``kind="euclidean"``),
    ``2 - 2 NBS_c`` (``"squared"``) or ``arccos NBS_c`` (``"angular"``), with NBS_c from :func:`nbs_corrected`."""
    check_choice("kind", kind, PROCRUSTES_KINDS)
    s = nbs_corrected(X, Y, folds=folds, groups=groups, seed=seed, center=center, normalize=normalize)
    if kind == "angular":
        return math.acos(s)
    d2 = max(2.0 - 2.0 * s, 0.0)
    return d2 if kind == "squared" else math.sqrt(d2)


def fg_corrected(
    X: Any, Y: Any, *, squared: bool = False, center: bool = True, normalize: Normalize = "frobenius", **_: Any
) -> float:
    """FG distance with unbiased (U-statistic) Frobenius norms and unbiased traces; see the module docstring."""
    Xp, Yp = _prepared(X, Y, center, normalize, 4)
    n = Xp.shape[0]
    tx, ty = float(np.sum(Xp * Xp)) / (n - 1), float(np.sum(Yp * Yp)) / (n - 1)
    hxx = float(_hsic_unbiased_linear(Xp, Xp, float(np.sum((Xp.T @ Xp) ** 2))))
    hyy = float(_hsic_unbiased_linear(Yp, Yp, float(np.sum((Yp.T @ Yp) ** 2))))
    hxy = float(_hsic_unbiased_linear(Xp, Yp, float(np.sum((Xp.T @ Yp) ** 2))))
    # HSIC_u estimates ||Sigma||_F^2 of one row's covariance; the traces are on the same (per-row) scale
    d2 = max(hxx / tx**2 + hyy / ty**2 - 2.0 * hxy / (tx * ty), 0.0)
    return d2 if squared else math.sqrt(d2)


def _ridge_parts(Y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of Y and ``U^T X``: ``W_lam = V diag(s / (s^2 + lam)) U^T X``."""
    U, s, Vt = np.linalg.svd(Y, full_matrices=False)
    return s, Vt, U.T @ X


def _ridge_filter(s: np.ndarray, rel: float) -> np.ndarray:
    """``s / (s^2 + lam)`` with ``lam = rel * sum(s^2)``; ``rel = 0``: pseudo-inverse (cut at ``q eps s_max``)."""
    if rel == 0:
        keep = s > max(s.shape[0], 1) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
        out = np.zeros_like(s)
        out[keep] = 1.0 / s[keep]
        return out
    return s / (s**2 + rel * float(np.sum(s**2)))


def _fit(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, Yte: np.ndarray) -> tuple[Any, ...]:
    mx, my = Xtr.mean(axis=0), Ytr.mean(axis=0)
    s, Vt, UtX = _ridge_parts(Ytr - my, Xtr - mx)
    return s, UtX, Xte - mx, (Yte - my) @ Vt.T


def _held_out_sums(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, Yte: np.ndarray,
                   rels: tuple[float, ...]) -> tuple[np.ndarray, float]:
    """Held-out residual sums of squares for each relative ridge in ``rels``, and the held-out total."""
    s, UtX, Xc, Zte = _fit(Xtr, Ytr, Xte, Yte)
    res = np.array([float(np.sum((Xc - (Zte * _ridge_filter(s, r)) @ UtX) ** 2)) for r in rels])
    return res, float(np.sum(Xc * Xc))


def _held_out_rows(Xtr: np.ndarray, Ytr: np.ndarray, Xte: np.ndarray, Yte: np.ndarray,
                   rel: float) -> tuple[np.ndarray, np.ndarray]:
    """Per test row: residual and teacher variance (about the training means) for one relative ridge."""
    s, UtX, Xc, Zte = _fit(Xtr, Ytr, Xte, Yte)
    return np.sum((Xc - (Zte * _ridge_filter(s, rel)) @ UtX) ** 2, axis=1), np.sum(Xc * Xc, axis=1)


def projection_residual(X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, ridge: float = 0.0) -> float:
    """Fraction of the test rows' teacher variance left by the ridge map fitted on the training rows.

    ``sum_test ||x - m_x - W (y - m_y)||^2 / sum_test ||x - m_x||^2`` with training means m and
    ``W = (Yc^T Yc + lam I)^-1 Yc^T Xc`` on the centred training rows, ``lam = ridge * tr(Yc^T Yc)``
    (``ridge = 0``: pseudo-inverse). Train = test and ``ridge = 0`` give :func:`repgeo.metrics.proj_mse`.
    """
    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise ValueError(f"ridge must be a non-negative number; got {ridge!r}")
    arrays = [_numpy(a) for a in (X_train, Y_train, X_test, Y_test)]
    res, total = _held_out_sums(*arrays, (float(ridge),))
    if not total > 0:
        raise ValueError("the test rows of X have no variance about the training means")
    return float(res[0] / total)


def _split_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of an inner validation share (~20 % of the groups) of training rows."""
    ids = np.unique(labels)
    val = rng.permutation(ids)[: max(1, ids.size // 5)]
    return np.isin(labels, val)


def heldout_terms(
    X: Any, Y: Any, *, folds: int = PROJECTION_FOLDS, groups: Any = None, seed: int = 0,
    ridge_grid: tuple[float, ...] = RIDGE_GRID, center: bool = True, normalize: Normalize = "frobenius",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row held-out residual ``r_i`` and teacher variance ``t_i`` of :func:`proj_mse_heldout` (its value is
    ``sum r / sum t``; a jackknife over stimuli of that ratio, with the fits held fixed, gives its standard
    error)."""
    if not ridge_grid or any(not (isinstance(r, (int, float)) and r >= 0) for r in ridge_grid):
        raise ValueError(f"ridge_grid must be non-empty non-negative numbers; got {ridge_grid!r}")
    Xp, Yp = _prepared(X, Y, center, normalize, 4)
    g = np.arange(Xp.shape[0]) if groups is None else np.asarray(groups)
    labels = _fold_labels(Xp.shape[0], folds, g, seed)
    rng = np.random.default_rng(seed + 1)
    grid = tuple(float(r) for r in ridge_grid)
    r_rows, t_rows = np.zeros(Xp.shape[0]), np.zeros(Xp.shape[0])
    for k in np.unique(labels):
        te = labels == k
        tr = ~te
        rel = grid[0]
        if len(grid) > 1:
            val = _split_rows(g[tr], rng)
            Xt, Yt = Xp[tr], Yp[tr]
            res, _ = _held_out_sums(Xt[~val], Yt[~val], Xt[val], Yt[val], grid)
            rel = grid[int(np.argmin(res))]
        r_rows[te], t_rows[te] = _held_out_rows(Xp[tr], Yp[tr], Xp[te], Yp[te], rel)
    return r_rows, t_rows


def proj_mse_heldout(
    X: Any, Y: Any, *, folds: int = PROJECTION_FOLDS, groups: Any = None, seed: int = 0,
    ridge_grid: tuple[float, ...] = RIDGE_GRID, center: bool = True, normalize: Normalize = "frobenius",
) -> float:
    """Held-out projection-MSE: K-fold cross-fitted ridge residual over held-out teacher variance.

    ``folds`` folds of stimuli (whole ``groups``), ridge chosen per fold from ``ridge_grid`` (relative to the
    trace of the training Gram) by an inner split. 0 = the student predicts the teacher on new stimuli; about 1
    (or a little above) = it does not. See the module docstring.
    """
    r, t = heldout_terms(X, Y, folds=folds, groups=groups, seed=seed, ridge_grid=ridge_grid, center=center,
                         normalize=normalize)
    return float(r.sum() / t.sum())


def effective_rank(A: Any) -> float:
    """Participation ratio ``(tr C)^2 / ||C||_F^2`` of the centred covariance C of ``A`` (rows x features).

    Between 1 (one direction carries everything) and ``min(n - 1, width)`` (a flat spectrum); computed from the
    smaller of the n x n and width x width Gram matrices. 0 for a constant matrix.
    """
    a = _numpy(A)
    if a.ndim != 2:
        raise ValueError(f"effective_rank needs a 2-D array (rows x features); got shape {a.shape}")
    a = a - a.mean(axis=0)
    G = a @ a.T if a.shape[0] < a.shape[1] else a.T @ a
    fro2 = float(np.sum(G * G))
    return float(np.trace(G)) ** 2 / fro2 if fro2 > 0 else 0.0


def _cka_corrected(X: Any, Y: Any, *, center: bool = True, normalize: Normalize = "frobenius", **_: Any) -> float:
    _prepared(X, Y, center, normalize, 4)  # same option checks as the other corrected estimators
    return float(cka(_numpy(X), _numpy(Y), debiased=True, center=center, normalize=normalize))


def _angular(X: Any, Y: Any, **kw: Any) -> float:
    return procrustes_corrected(X, Y, kind="angular", **kw)


#: plug-in metric name -> its corrected / held-out estimator ``fn(X, Y, *, groups, seed, center, normalize)``
CORRECTED: dict[str, Callable[..., float]] = {
    "procrustes": procrustes_corrected,
    "bures": procrustes_corrected,
    "procrustes_angular": _angular,
    "nbs": nbs_corrected,
    "fg": fg_corrected,
    "cka": _cka_corrected,
    "proj_mse": proj_mse_heldout,
}


#: value ranges of corrected estimators that differ from the plug-in metric's (debiased CKA can be negative, a
#: held-out residual can exceed the held-out variance)
CORRECTED_BOUNDS: dict[str, tuple[float, float]] = {"cka": (-1.0, 1.0), "proj_mse": (0.0, math.inf)}


def corrected(metric: str) -> Callable[..., float] | None:
    """The corrected estimator of plug-in ``metric`` (None when it has none: it is used as it is)."""
    return CORRECTED.get(metric)
