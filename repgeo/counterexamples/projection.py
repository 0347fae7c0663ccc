"""Projection-MSE's blind spots: an invertible non-orthogonal map (Theorem 2) and a minibatch no larger than the
student width. Conventions as in :mod:`repgeo.counterexamples.constructions`.
"""

from __future__ import annotations

import numpy as np

from ._core import centred_orthonormal, check_float, check_int, orthogonal, orthonormal_rows, rng_from, standardise
from .certificate import EXACT_TOL, ROUNDING_TOL, Claim, Counterexample, Pair, metric_value
from .orders import order_claims, sweep

_m = metric_value  # a registered metric of (X, Y) as a float

_EPS = float(np.finfo(np.float64).eps)


def _proj_tol(Y: np.ndarray) -> float:
    """Tolerance for proj_mse = 0: 1e-12, or the metric's documented accuracy ~eps * cond(Y)^2 if larger."""
    s = np.linalg.svd(Y - Y.mean(axis=0), compute_uv=False)
    s = s[s > s[0] * Y.shape[1] * _EPS]
    cond = float(s[0] / s[-1])
    return max(ROUNDING_TOL, 10 * _EPS * cond**2)


def projection_spectrum(q: int, cond: float) -> np.ndarray:
    """Singular values of the map M of :func:`projection_invertible`: ceil(q/2) ones, floor(q/2) times ``cond``."""
    sig = np.ones(q)
    sig[(q + 1) // 2:] = cond
    return sig


def projection_prediction(q: int, cond: float) -> tuple[float, float]:
    """Exact (D_P, D_FG) of :func:`projection_invertible` for width q and condition number ``cond``.

    With s_i = 1/sigma_i(M): ``D_P^2 = 2 - 2 sum s / sqrt(q sum s^2)`` and
    ``D_FG^2 = sum_i (s_i^2 / sum s^2 - 1/q)^2``. For even q these are
    ``D_P^2 = 2 - sqrt2 (k+1)/sqrt(k^2+1)`` (0 at k = 1, increasing to 2 - sqrt2) and
    ``D_FG = (k^2 - 1) / ((k^2 + 1) sqrt q)``, k = cond.
    """
    s = 1.0 / projection_spectrum(q, cond)
    nbs = s.sum() / np.sqrt(q * (s**2).sum())
    lam = s**2 / (s**2).sum()
    return float(np.sqrt(max(2 - 2 * nbs, 0.0))), float(np.sqrt(((lam - 1.0 / q) ** 2).sum()))


def _projection_pair(n: int, p: int, q: int, cond: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher X, student Y = X B^T M^-1 / ||.||_F and the map M of :func:`projection_invertible`."""
    rng = rng_from(seed)
    U = centred_orthonormal(n, q, rng)
    B = orthonormal_rows(q, p, rng)
    X = U @ B / np.sqrt(q)
    M = orthogonal(q, rng) @ np.diag(projection_spectrum(q, cond)) @ orthogonal(q, rng)
    Y = X @ B.T @ np.linalg.inv(M)
    return X, Y / np.linalg.norm(Y), M


#: Orders in eps = cond - 1 of the five distances (:mod:`.orders`) for Theorem 2's map: projection-MSE is blind
#: at every order; every other metric sees the map at first order.
PROJECTION_ORDERS = {"procrustes": 1, "fg": 1, "cka": 1, "cka_debiased": 1, "projection": None}


def projection_invertible(n: int = 200, p: int = 64, q: int | None = None, cond: float = 10.0,
                          seed: int = 0) -> Counterexample:
    """Projection-MSE is zero under an invertible, non-orthogonal map; Procrustes, FG and CKA are not.

    Teacher ``X = U B / sqrt(q)`` (U: n x q centred orthonormal columns, B: q x p orthonormal rows), i.e. an
    isotropic rank-q teacher in p dimensions (q = p: full width; q < p: the low-rank-subspace assumption that
    lets a narrower student match). Student ``Y = X B^T M^-1 / ||.||_F`` of width q with
    ``M = R1 diag(sigma) R2`` (R1, R2 random orthogonal; sigma: half ones, half ``cond``), so ``Y W = X`` with
    ``W = c M B`` and projection-MSE is exactly 0. Yet ``D_P`` and ``D_FG`` equal the closed forms of
    :func:`projection_prediction`, which grow with ``cond``, and the fitted W has condition number ``cond``
    (Theorem 2: ``D_FG = ||Y (W W^T - I) Y^T||_F`` is zero only when W W^T = I on Y's row space).

    Orders (``data["orders"]``: the pair rebuilt at cond = 1 + eps over :data:`~.orders.EPS_GRID`): D_P, D_FG,
    CKA and debiased CKA (as distances) all see the map at first order in eps; projection-MSE reads 0 at every
    eps (blind at every order). This construction separates projection-MSE from every other metric.

    Parameters: ``n`` samples (>= q + 1, centring costs one rank), ``p`` teacher width, ``q`` student width and
    teacher rank (default p; 2 <= q <= p), ``cond`` > 1 the condition number of M, ``seed``.
    """
    n = check_int("n", n, 2)
    p = check_int("p", p, 2)
    q = p if q is None else check_int("q", q, 2)
    if q > p:
        raise ValueError(f"q must be <= p (the teacher has rank q inside p dimensions); got q={q}, p={p}")
    if n < q + 1:
        raise ValueError(f"n must be >= q + 1 (centred data of rank q); got n={n}, q={q}")
    cond = check_float("cond", cond, low=1.0, strict=True)
    X, Y, M = _projection_pair(n, p, q, cond, seed)
    dp_pred, fg_pred = projection_prediction(q, cond)
    table = sweep(lambda e: _projection_pair(n, p, q, 1.0 + e, seed)[:2])

    def claims(cx: Counterexample) -> list[Claim]:
        X, Y = cx.X, cx.Y
        W = np.linalg.lstsq(Y, X, rcond=None)[0]  # fitted q x p projection, Y W = X
        return [
            Claim("proj_mse(X, Y) = 0", _m("proj_mse", X, Y), "<=", 0.0, _proj_tol(Y),
                  "Y M = X exactly; tol 1e-12, or proj_mse's documented accuracy 10 eps cond(Y)^2 if larger"),
            Claim("Procrustes D_P(X, Y) = closed form (grows with cond)", _m("procrustes", X, Y), "==", dp_pred,
                  EXACT_TOL, "D_P^2 = 2 - 2 sum s/sqrt(q sum s^2), s = 1/sigma(M); SVD-accurate to ~1e-15"),
            Claim("FG D_FG(X, Y) = closed form (grows with cond)", _m("fg", X, Y), "==", fg_pred, EXACT_TOL,
                  "D_FG^2 = sum (s_i^2/sum s^2 - 1/q)^2; float64 accurate to ~1e-15"),
            Claim("the fitted W is not orthogonal: cond(W) = cond", float(np.linalg.cond(W)), "==", cond,
                  1e-8 * cond, "W = c M B; lstsq's relative error ~ eps cond(Y) is far below 1e-8"),
            *order_claims(cx.data["orders"], PROJECTION_ORDERS, "X vs Y, cond = 1 + eps"),
        ]

    statement = (
        f"A rank-{q} teacher X in {p} dimensions and a student Y = X M^-1 of width {q}, M invertible with "
        f"condition number {cond:g}. A linear projection recovers the teacher exactly (proj_mse = 0), yet the "
        f"student's sample geometry differs: D_P = {dp_pred:.4f} and D_FG = {fg_pred:.4f} (closed forms that "
        f"grow with the condition number), because the fitted W is not orthogonal (Theorem 2). With "
        f"cond = 1 + eps, Procrustes, FG and CKA see the map at first order in eps; projection-MSE never does."
    )
    return Counterexample(
        "projection_invertible" if q == p else "projection_invertible_lowrank",
        "Projection-MSE: invertible non-orthogonal map" + ("" if q == p else f" (rank-{q} teacher, p = {p})"),
        statement, X, Y,
        {"X": X, "Y": Y, "M": M}, [Pair("X vs Y", "X", "Y")],
        {"n": n, "p": p, "q": q, "cond": cond, "seed": seed}, claims,
        {"predicted": {"procrustes": dp_pred, "fg": fg_pred}, "orders": table,
         "order_parameter": "eps = cond - 1"},
    )


def projection_minibatch(n: int = 32, p: int = 768, q: int = 384, rank: int | None = None,
                         seed: int = 0) -> Counterexample:
    """With n <= q rows a pure-noise student reaches projection-MSE 0: the projection is "too powerful".

    Teacher ``X``: rank r (default n // 4) isotropic in its subspace, ``X = U B / sqrt r``. Student ``Y``: centred
    Gaussian noise of width q >= n, independent of X. Centred Y has rank n - 1, the whole centred sample space,
    so ``min_W ||Y W - X|| = 0``. The geometry is not matched: for any rank-r teacher (unit Frobenius norm)
    ``D_FG >= sqrt(sum_{i>r} lambda_i(L)^2)`` (Eckart-Young-Mirsky) and
    ``D_P^2 >= 2 - 2 sqrt(sum_{i<=r} lambda_i(L))`` (these identities are tested with the metrics), and for
    this noise student the right-hand sides exceed stated margins, half of what an exactly isotropic student
    (L = H/(n-1)) gives: ``sqrt(n-1-r)/(n-1) / 2`` for FG and ``sqrt(2 - 2 sqrt(r/(n-1))) / 2`` for D_P. The
    certificate claims proj_mse = 0 (a student that does not span the centred sample space, e.g. of rank
    below n - 1, breaks it) and D_FG, D_P above those margins.

    Parameters: ``n`` batch size (2 <= n <= q), ``p`` teacher width, ``q`` student width, ``rank`` teacher rank
    (1 <= r <= min(p, n - 2)), ``seed``.
    """
    n = check_int("n", n, 3)
    p = check_int("p", p, 1)
    q = check_int("q", q, 1)
    if n > q:
        raise ValueError(f"the construction needs n <= q (a batch no larger than the student width); "
                         f"got n={n}, q={q}")
    r = max(1, n // 4) if rank is None else check_int("rank", rank, 1)
    if r > min(p, n - 2):
        raise ValueError(f"rank must be <= min(p, n - 2) = {min(p, n - 2)}; got {r}")
    rng = rng_from(seed)
    X = centred_orthonormal(n, r, rng) @ orthonormal_rows(r, p, rng) / np.sqrt(r)
    Y = standardise(rng.standard_normal((n, q)))
    margin_fg = 0.5 * np.sqrt(n - 1 - r) / (n - 1)
    margin_p = 0.5 * np.sqrt(2 - 2 * np.sqrt(r / (n - 1)))

    def claims(cx: Counterexample) -> list[Claim]:
        X, Y = cx.X, cx.Y
        return [
            Claim("proj_mse(X, noise) = 0", _m("proj_mse", X, Y), "<=", 0.0, _proj_tol(Y),
                  "centred Y spans the centred sample space; tol 1e-12 or 10 eps cond(Y)^2"),
            Claim("D_FG >= margin sqrt(n-1-r)/(2(n-1))", _m("fg", X, Y), ">=", float(margin_fg), 0.0,
                  "half the Eckart-Young bound for an exactly isotropic student"),
            Claim("D_P >= margin sqrt(2-2 sqrt(r/(n-1)))/2", _m("procrustes", X, Y), ">=", float(margin_p), 0.0,
                  "half the nuclear-norm bound for an exactly isotropic student"),
        ]

    statement = (
        f"A batch of n = {n} rows, a rank-{r} teacher in {p} dimensions and a student of width q = {q} made of "
        f"pure Gaussian noise. Because n <= q the centred noise spans every centred direction of the batch, so "
        f"a linear projection maps it onto the teacher exactly (proj_mse = 0), while Procrustes and FG stay above "
        f"bounds that hold for any rank-{r} teacher."
    )
    return Counterexample(
        "projection_minibatch", "Projection-MSE: over-parameterised minibatch", statement, X, Y,
        {"X": X, "Y": Y}, [Pair("X vs noise", "X", "Y")],
        {"n": n, "p": p, "q": q, "rank": r, "seed": seed}, claims,
    )
