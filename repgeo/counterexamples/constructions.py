"""The theory's zero-loss-but-misaligned constructions, each returning a certified :class:`Counterexample`.

Conventions: teacher ``X`` (n x p), student ``Y`` (n x q), metrics with the defaults of
:mod:`repgeo.metrics` (columns centred, unit Frobenius norm) unless a pair says otherwise. The returned arrays
already follow that convention (centred, ``||.||_F = 1``), except where a construction is about leaving it
(:func:`cka_translation`). Notation: K = XX^T, L = YY^T the n x n sample Gram matrices, D_P the Procrustes
distance, D_FG = ||K - L||_F, ``eps`` the float64 machine epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from repgeo.metrics import available

from ._core import (
    EXACT_TOL,
    ROUNDING_TOL,
    ZERO_DISTANCE_TOL,
    Claim,
    Counterexample,
    Pair,
    centred_orthonormal,
    check_float,
    check_int,
    gram,
    metric_value,
    orthogonal,
    orthonormal_rows,
    rng_from,
    standardise,
)
from .orders import order_claims, sweep

_EPS = float(np.finfo(np.float64).eps)


def _m(name: str, A: np.ndarray, B: np.ndarray, **prep: object) -> float:
    return metric_value(name, A, B, **prep)  # type: ignore[arg-type]


def _proj_tol(Y: np.ndarray) -> float:
    """Tolerance for proj_mse = 0: 1e-12, or the metric's documented accuracy ~eps * cond(Y)^2 if larger."""
    s = np.linalg.svd(Y - Y.mean(axis=0), compute_uv=False)
    s = s[s > s[0] * Y.shape[1] * _EPS]
    cond = float(s[0] / s[-1])
    return max(ROUNDING_TOL, 10 * _EPS * cond**2)


def _op(A: np.ndarray) -> float:
    return float(np.linalg.norm(A, 2))


# ------------------------------------------------------------------------------- 1. projection, invertible map


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


# ------------------------------------------------------------------------- 2. projection, small minibatch


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


# ------------------------------------------------------------------------------- 3. CKA, Theorem 1 / Fig. 1


def cka_theorem1_prediction(n: int, m: int, eps: float) -> dict[str, float]:
    """Closed forms for :func:`cka_antiparallel` (points +-v with ||v|| = 1, m of them moved by eps).

    With a = m eps^2/n^2, b = eps^4 m (1 - 2/n + m/n^2)/n^2, T = n + m eps^2 (n-1)/n:

    * ``CKA(b, c) = sqrt(1 - x)``, ``x = eps^4 m (1 - 2/n) / (n^2 (1 + 2a + b))``, hence
      ``|CKA(a, c) - CKA(b, c)| = 1 - sqrt(1 - x) <= x <= eps^4 m / n^2``;
    * ``NBS(b, c) = sqrt(1 - r)``, ``r = m eps^2 (n - 2) / (n T)``, hence ``D_P(b, c) = sqrt(2 - 2 sqrt(1 - r))
      >= sqrt(r)`` (grows with eps and m);
    * ``D_FG(b, c)^2 = eps^4 m (n - 2) (n + m (n - 2)) / (n^2 T^2)``.
    """
    a = m * eps**2 / n**2
    b = eps**4 * m * (1 - 2 / n + m / n**2) / n**2
    x = eps**4 * m * (1 - 2 / n) / (n**2 * (1 + 2 * a + b))
    T = n + m * eps**2 * (n - 1) / n
    r = m * eps**2 * (n - 2) / (n * T)
    return {
        "cka_gap": 1 - np.sqrt(1 - x),
        "cka_gap_bound": eps**4 * m / n**2,
        "procrustes": float(np.sqrt(max(2 - 2 * np.sqrt(1 - r), 0.0))),
        "procrustes_bound": float(np.sqrt(r)),
        "fg": float(np.sqrt(eps**4 * m * (n - 2) * (n + m * (n - 2)) / (n**2 * T**2))),
    }


def _theorem1_arrays(n: int, p: int, q: int, m: int, eps: float, seed: int) -> dict[str, np.ndarray]:
    """Configurations (a), (b), (c) of :func:`cka_antiparallel`, standardised; the same points for every eps."""
    rng = rng_from(seed)
    s = np.repeat([1.0, -1.0], n // 2)
    rng.shuffle(s)
    basis = orthonormal_rows(m + 1, p, rng)  # v and e_1..e_m
    v, E = basis[0], basis[1:]
    a = np.outer(s, v)
    b = a.copy()
    moved = rng.choice(n, size=m, replace=False)
    b[moved] += eps * E
    c = np.outer(s, orthonormal_rows(1, q, rng)[0])
    return {"a": standardise(a), "b": standardise(b), "c": standardise(c)}


#: Orders in eps of the five distances (:mod:`.orders`) between (b) and (c) in Theorem 1.
THEOREM1_ORDERS = {"procrustes": 1, "fg": 2, "cka": 2, "cka_debiased": None, "projection": 1}


def cka_antiparallel(n: int = 100, p: int = 64, q: int = 16, m: int = 10, eps: float = 0.3,
                     seed: int = 0) -> Counterexample:
    """The paper's Theorem 1 (Figure 1): CKA barely tells configuration (a) from its perturbed copy (b).

    (a) n points in p dimensions, n/2 at +v and n/2 at -v (||v|| = 1): two antiparallel configurations;
    (b) the same with m of the points each moved by ``eps`` along its own direction e_k (orthonormal, orthogonal
    to v); (c) an exact replica of (a) in q < p dimensions. The teacher is (b) and the student (c):
    ``X = b``, ``Y = c``. Then CKA(a, c) = 1 and ``|CKA(a, c) - CKA(b, c)| <= eps^4 m / n^2`` (exact value in
    :func:`cka_theorem1_prediction`).

    What it separates, as orders in eps of distances that vanish at eps = 0 (``data["orders"]``: the same
    points rebuilt over eps in [0.01, 0.3], fitted log-log slopes; :mod:`.orders`):

    * Procrustes sees the perturbation at **first** order: D_P(b, c) >= eps sqrt(m (n-2)/(n T)) (the new
      directions e_k are orthogonal to the teacher's support, and the Bures distance of a PSD perturbation
      orthogonal to the support is the square root of its size); so does the projection residual
      sqrt(proj_mse) (c has rank 1 and cannot express the e_k);
    * FG and CKA-as-a-distance, sqrt(2(1 - CKA)), see it only at **second** order (K_b - K_a is O(eps^2):
      the e_k are orthogonal to v, so the O(eps) cross terms vanish). So the construction separates CKA from
      Procrustes, *not* from FG: no construction can separate CKA from FG by an order (:mod:`.orders`);
    * debiased CKA is **exactly** blind at every eps: (b) changes only the diagonal of the uncentred Gram
      matrix (the e_k are orthogonal to v and to each other), and the unbiased HSIC estimator discards the
      diagonal. One shared direction for the moved points (off-diagonal changes) breaks this.

    Parameters: ``n`` even >= 4, ``p`` >= 2, ``q`` (1 <= q < p), ``m`` (1 <= m < p, m <= n), ``eps`` > 0, ``seed``.
    """
    n = check_int("n", n, 2)
    if n < 4 or n % 2:
        raise ValueError(f"n must be even and >= 4 (two equal antiparallel configurations); got {n}")
    p = check_int("p", p, 2)
    q = check_int("q", q, 1)
    if q >= p:
        raise ValueError(f"q must be < p (configuration (c) replicates (a) in fewer dimensions); got q={q}, p={p}")
    m = check_int("m", m, 1)
    if m >= p:
        raise ValueError(f"m must be < p (m perturbation directions orthogonal to v and each other); "
                         f"got m={m}, p={p}")
    if m > n:
        raise ValueError(f"m must be <= n (m of the n points are perturbed); got m={m}, n={n}")
    eps = check_float("eps", eps, low=0.0, strict=True)
    arrays = _theorem1_arrays(n, p, q, m, eps, seed)
    pred = cka_theorem1_prediction(n, m, eps)

    def pair_at(e: float) -> tuple[np.ndarray, np.ndarray]:
        A = _theorem1_arrays(n, p, q, m, e, seed)
        return A["b"], A["c"]

    table = sweep(pair_at)

    def claims(cx: Counterexample) -> list[Claim]:
        A, B, C = cx.arrays["a"], cx.arrays["b"], cx.arrays["c"]
        gap = _m("cka", A, C) - _m("cka", B, C)
        dp = _m("procrustes", B, C)
        return [
            Claim("CKA(a, c) = 1", _m("cka", A, C), "==", 1.0, ROUNDING_TOL, "same rank-1 Gram up to scale",
                  "a vs c"),
            Claim("D_P(a, c) = 0 (c is an exact replica)", _m("procrustes", A, C), "<=", 0.0, ZERO_DISTANCE_TOL,
                  "sqrt of a float64 zero", "a vs c"),
            Claim("D_FG(a, c) = 0 (c is an exact replica)", _m("fg", A, C), "<=", 0.0, ZERO_DISTANCE_TOL,
                  "sqrt of a float64 zero", "a vs c"),
            Claim("|CKA(a,c) - CKA(b,c)| <= eps^4 m / n^2", abs(gap), "<=", pred["cka_gap_bound"], ROUNDING_TOL,
                  "1 - sqrt(1-x) <= x <= eps^4 m/n^2 (derivation in cka_theorem1_prediction)", "b vs c"),
            Claim("CKA(a,c) - CKA(b,c) = closed form", gap, "==", pred["cka_gap"], ROUNDING_TOL,
                  "exact expression; CKA is float64-accurate to ~1e-15", "b vs c"),
            Claim("D_P(b, c) = closed form", dp, "==", pred["procrustes"], EXACT_TOL, "exact expression",
                  "b vs c"),
            Claim("D_FG(b, c) = closed form", _m("fg", B, C), "==", pred["fg"], EXACT_TOL, "exact expression",
                  "b vs c"),
            Claim("debiased CKA(a,c) - debiased CKA(b,c) = 0 exactly",
                  _m("cka_debiased", A, C) - _m("cka_debiased", B, C), "==", 0.0, ROUNDING_TOL,
                  "(b) differs from (a) only on the diagonal of the uncentred Gram, which unbiased HSIC drops",
                  "b vs c"),
            *order_claims(cx.data["orders"], THEOREM1_ORDERS, "b vs c, eps swept"),
        ]

    statement = (
        f"(a) {n} points at +v or -v in {p} dimensions; (b) the same with m = {m} points each moved by "
        f"eps = {eps:g} along its own orthogonal direction; (c) a replica of (a) in q = {q} dimensions. CKA "
        f"against (c) reads 1 for (a) and differs for (b) by only {pred['cka_gap']:.2e} (bound eps^4 m/n^2 = "
        f"{pred['cka_gap_bound']:.2e}); debiased CKA does not change at all. Procrustes sees the perturbation at "
        f"first order in eps (D_P = {pred['procrustes']:.4f}), FG only at second order (D_FG = "
        f"{pred['fg']:.4f}), like CKA read as a distance: the construction separates CKA from Procrustes, not "
        f"from FG (Theorem 1)."
    )
    return Counterexample(
        "cka_antiparallel", "CKA: Theorem 1, antiparallel configurations", statement, arrays["b"], arrays["c"],
        arrays, [Pair("a vs c", "a", "c"), Pair("b vs c", "b", "c"), Pair("a vs b", "a", "b")],
        {"n": n, "p": p, "q": q, "m": m, "eps": eps, "seed": seed}, claims,
        {"predicted": pred, "orders": table, "order_parameter": "eps"},
    )


# ---------------------------------------------------------------------------------------- 4. CKA, translation


def _cosines(A: np.ndarray) -> np.ndarray:
    U = A / np.linalg.norm(A, axis=1, keepdims=True)
    return U @ U.T


def _translation_pair(n: int, p: int, shift: float, seed: int, *, unit: str = "max"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher X and student X + 1 b^T of :func:`cka_translation`, ``||b|| = shift`` times the largest
    (``unit="max"``) or smallest (``"min"``) row norm; the same X and direction of b for every shift."""
    rng = rng_from(seed)
    X = standardise(rng.standard_normal((n, p)))
    b = rng.standard_normal(p)
    norms = np.linalg.norm(X, axis=1)
    b *= shift * (norms.max() if unit == "max" else norms.min()) / np.linalg.norm(b)
    return X, X + b


#: Orders in the shift of the five distances (:mod:`.orders`): every metric centres by default and is blind at
#: every order; on the sphere (center=False, normalize="rows") Procrustes sees the shift at first order.
TRANSLATION_ORDERS = dict.fromkeys(("procrustes", "fg", "cka", "cka_debiased", "projection"))
SPHERE_ORDERS = {"procrustes": 1}


def cka_translation(n: int = 100, p: int = 32, shift: float = 3.0, seed: int = 0) -> Counterexample:
    """CKA centres, so a translated student keeps CKA = 1 while the angles between its vectors change.

    Teacher ``X``: centred Gaussian, unit Frobenius norm. Student ``Y = X + 1 b^T`` with
    ``||b|| = shift * max_i ||x_i||`` (so Y is deliberately *not* centred). Under the default preprocessing every
    metric centres, so CKA(X, Y) = 1 and even D_P = D_FG = 0: blind at every order in the shift
    (``data["orders"]``). On the sphere (``normalize="rows", center=False``) the geometry is different: with
    t = shift, every pair of student vectors has cosine >= (t^2 - 2t - 1)/(t + 1)^2 (all are pushed into a
    cone around b), while a centred teacher always has a pair with negative cosine, so some angle changes by at
    least that margin (positive for t > 1 + sqrt2). Under "rows" D_FG = ||cosines(X) - cosines(Y)||_F / n
    bounds every entry's change / n, so the spherical D_FG >= margin / n, and D_P >= D_FG / 2 >= margin / (2n)
    (D_FG <= (||X||_op + ||Y||_op) D_P with unit-Frobenius inputs). For small shifts the spherical D_P and D_FG
    grow at first order (``data["orders_sphere"]``; there ``||b||`` is eps times the *smallest* row norm, so that
    every row's angle moves by O(eps)). The certificate claims first order for D_P only: a cosine changes by
    O(eps / sqrt p) at first order (b is nearly orthogonal to every row in p dimensions) and by O(eps^2) at
    second, so over [0.01, 0.3] FG's fitted slope bends from 1 towards 2 as p grows (1.04 at p = 32, 1.12 at
    p = 64), while D_P stays at 1.00.

    Parameters: ``n`` >= 3, ``p`` >= 2, ``shift`` > 0, ``seed``.
    """
    n = check_int("n", n, 3)
    p = check_int("p", p, 2)
    shift = check_float("shift", shift, low=0.0, strict=True)
    X, Y = _translation_pair(n, p, shift, seed)
    t = shift
    margin = (t * t - 2 * t - 1) / (t + 1) ** 2
    sphere = {"center": False, "normalize": "rows"}
    table = sweep(lambda e: _translation_pair(n, p, e, seed))
    table_sphere = sweep(lambda e: _translation_pair(n, p, e, seed, unit="min"), **sphere)

    def claims(cx: Counterexample) -> list[Claim]:
        X, Y = cx.X, cx.Y
        dcos = float(np.abs(_cosines(X) - _cosines(Y)).max())
        return [
            Claim("CKA(X, X + 1b^T) = 1", _m("cka", X, Y), "==", 1.0, ROUNDING_TOL, "CKA centres the columns",
                  "X vs Y"),
            Claim("D_P(X, Y) = 0 under centring", _m("procrustes", X, Y), "<=", 0.0, ZERO_DISTANCE_TOL,
                  "centring removes b; sqrt of a float64 zero", "X vs Y"),
            Claim("D_FG(X, Y) = 0 under centring", _m("fg", X, Y), "<=", 0.0, ZERO_DISTANCE_TOL,
                  "centring removes b; sqrt of a float64 zero", "X vs Y"),
            Claim("max_ij |cos(x_i,x_j) - cos(y_i,y_j)| >= (t^2-2t-1)/(t+1)^2", dcos, ">=", margin, ROUNDING_TOL,
                  "student cosines >= the cone bound; a centred teacher has a negative cosine", "X vs Y (sphere)"),
            Claim("spherical D_FG >= margin / n", _m("fg", X, Y, **sphere), ">=", margin / n, ROUNDING_TOL,
                  "D_FG = ||cos(X) - cos(Y)||_F / n >= max entry / n", "X vs Y (sphere)"),
            Claim("spherical D_P >= margin / (2n)", _m("procrustes", X, Y, **sphere), ">=", margin / (2 * n),
                  ROUNDING_TOL, "D_P >= D_FG / (||X||_op + ||Y||_op) >= D_FG / 2", "X vs Y (sphere)"),
            *order_claims(cx.data["orders"], TRANSLATION_ORDERS, "X vs Y, shift swept"),
            *order_claims(cx.data["orders_sphere"], SPHERE_ORDERS, "X vs Y (sphere), shift swept"),
        ]

    statement = (
        f"A student equal to the teacher plus a constant vector (|b| = {shift:g} x the largest row norm). Every "
        f"metric centres by default, so CKA = 1 (and Procrustes = FG = 0): the translation is invisible at any "
        f"size. The angles between the uncentred feature vectors change by at least {margin:.3f} in cosine, and "
        f"the geometric metrics on the sphere (normalize='rows', center=False) see it, at first order in the "
        f"shift."
    )
    return Counterexample(
        "cka_translation", "CKA: blind to translation", statement, X, Y, {"X": X, "Y": Y},
        [Pair("X vs Y", "X", "Y"), Pair("X vs Y (sphere)", "X", "Y", False, "rows")],
        {"n": n, "p": p, "shift": shift, "seed": seed}, claims,
        {"orders": table, "orders_sphere": table_sphere, "order_parameter": "shift"},
    )


# ------------------------------------------------------------------------------- 5. CKA, dominant direction

DEFAULT_RATIOS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    y = np.clip(y, 1e-300, None)
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def cka_dominant_direction(n: int = 500, p: int = 32, q: int = 24, ratios: Sequence[float] = DEFAULT_RATIOS,
                           seed: int = 0) -> Counterexample:
    """One shared high-variance direction, everything else unrelated: CKA -> 1 faster than NBS/Procrustes.

    ``X = [sqrt(rho) z, X_rest]``, ``Y = [sqrt(rho) z, Y_rest]``: a shared score vector z (variance rho) and
    independent unit-variance noise in the other p - 1 and q - 1 columns; rho is the variance ratio of the shared
    direction to each other direction. In the population
    ``CKA = rho^2 / sqrt((rho^2 + p - 1)(rho^2 + q - 1))`` so ``1 - CKA ~ (p + q - 2) / (2 rho^2)``, while
    ``NBS = rho / sqrt((rho + p - 1)(rho + q - 1))`` so ``1 - NBS ~ (p + q - 2) / (2 rho)``: CKA closes its gap
    at rate rho^-2, the geometric metrics at rate rho^-1. The certificate fits the log-log slopes over the top
    decade of ``ratios`` and checks they fall either side of -1.5 (the midpoint of -2 and -1); this needs the
    top decade to be well above p + q. ``data["curve"]`` holds every registered metric along the curve,
    ``data["pairs"]`` the (X, Y) pair at each ratio (what the claims read). In the orders' terms (eps = 1/ratio,
    slopes over the top decade at the defaults): sqrt(2(1 - CKA)) is first order (1.00), D_P half order (0.46),
    D_FG close to first order (0.87, the finite sample's noise floor bends it) — like Theorem 1, this separates
    CKA from Procrustes, not from FG.
    ``X``, ``Y`` are the pair at the largest ratio.

    Parameters: ``n`` >= 4, ``p``, ``q`` >= 2, ``ratios`` positive and increasing, spanning at least a decade,
    ``seed``.
    """
    n = check_int("n", n, 4)
    p = check_int("p", p, 2)
    q = check_int("q", q, 2)
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or r.size < 3 or not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(np.diff(r) <= 0):
        raise ValueError(f"ratios must be >= 3 positive, strictly increasing numbers; got {ratios!r}")
    if r[-1] < 10 * r[0]:
        raise ValueError("ratios must span at least a decade (the decay rates are fitted over the top decade)")
    rng = rng_from(seed)
    z = rng.standard_normal(n)
    Xr, Yr = rng.standard_normal((n, p - 1)), rng.standard_normal((n, q - 1))
    rows = []
    pairs = {}
    for rho in r:
        Xk = standardise(np.column_stack([np.sqrt(rho) * z, Xr]))
        Yk = standardise(np.column_stack([np.sqrt(rho) * z, Yr]))
        pairs[rho] = (Xk, Yk)
        row = {"ratio": float(rho)}
        for name in available():
            try:
                row[name] = _m(name, Xk, Yk)
            except Exception:
                row[name] = float("nan")
        row["cka_population"] = rho**2 / np.sqrt((rho**2 + p - 1) * (rho**2 + q - 1))
        row["nbs_population"] = rho / np.sqrt((rho + p - 1) * (rho + q - 1))
        rows.append(row)
    curve = pd.DataFrame(rows)
    X, Y = pairs[r[-1]]
    top = r >= r[-1] / 10

    def claims(cx: Counterexample) -> list[Claim]:
        along = cx.data["pairs"]
        ck = np.array([_m("cka", *along[rho]) for rho in r])
        nb = np.array([_m("nbs", *along[rho]) for rho in r])
        s_cka, s_nbs = _loglog_slope(r[top], 1 - ck[top]), _loglog_slope(r[top], 1 - nb[top])
        return [
            Claim("slope of log(1 - CKA) vs log ratio (top decade) <= -1.5", s_cka, "<=", -1.5, 0.0,
                  "population rate -2; -1.5 is the midpoint of -2 and -1"),
            Claim("slope of log(1 - NBS) vs log ratio (top decade) >= -1.5", s_nbs, ">=", -1.5, 0.0,
                  "population rate -1; -1.5 is the midpoint of -2 and -1"),
            Claim("at the largest ratio, 1 - CKA <= 1 - NBS", float(1 - ck[-1]), "<=", float(1 - nb[-1]), 0.0,
                  "CKA is the closer to 1"),
        ]

    statement = (
        f"Teacher ({p} features) and student ({q} features) share one direction whose variance is `ratio` times "
        f"that of every other, unrelated, direction. As the ratio grows CKA approaches 1 like ratio^-2, the "
        f"Procrustes/NBS family only like ratio^-1: at ratio {r[-1]:g}, 1 - CKA = "
        f"{1 - curve['cka'].iloc[-1]:.1e} but 1 - NBS = {1 - curve['nbs'].iloc[-1]:.1e} - CKA is dominated by "
        f"the top principal component."
    )
    return Counterexample(
        "cka_dominant_direction", "CKA: dominated by one high-variance direction", statement, X, Y,
        {"X": X, "Y": Y}, [Pair(f"X vs Y (ratio {r[-1]:g})", "X", "Y")],
        {"n": n, "p": p, "q": q, "ratios": tuple(float(x) for x in r), "seed": seed}, claims,
        {"curve": curve, "pairs": pairs},
    )


# ------------------------------------------------------------------------------------ 6. Procrustes <=> FG


#: Orders in eps of the five distances under generic noise added to an isometry: all first order.
GENERIC_ORDERS = {"procrustes": 1, "fg": 1, "cka": 1, "cka_debiased": 1, "projection": 1}


def procrustes_fg_equivalence(n: int = 100, p: int = 32, q: int = 48, delta: float = 0.01,
                              seed: int = 0) -> Counterexample:
    """D_P = 0 <=> D_FG = 0, both ways and across widths; away from zero they are different functions.

    Pairs: an isometric embedding ``Y = X Q`` (Q: p x q orthonormal rows, q > p); a partial isometry to a
    narrower student (teacher of rank p/4 in p dims, student of width p/2 spanning its row space); a student
    built only from the teacher's Gram matrix (``Y = U sqrt(Lambda)`` from K = U Lambda U^T, so D_FG = 0 by
    construction, then D_P = 0 is checked); a random student; and two near-zero perturbations — A scales the
    teacher's largest singular value by (1 + delta), B its smallest by (1 + 50 delta) — whose orderings under
    D_P and D_FG are opposite. For every pair (unit-Frobenius inputs; identities tested with the metrics)::

        D_FG <= (||X||_op + ||Y||_op) D_P          (XX^T - ZZ^T = X(X - Z)^T + (X - Z)Z^T, Z = Y Q*)
        D_P^2 <= ||K - L||_* <= sqrt(rank(K - L)) D_FG   (Bures <= Hellinger; Powers-Stormer)

    so each vanishes exactly when the other does; the certificate checks the zeros on the constructed pairs.
    ``data["orders"]`` follows ``Y = standardise(XQ + eps N)`` (N: fixed Gaussian noise) over eps in
    [0.01, 0.3]: a generic perturbation, which every metric sees at first order (unlike Theorem 1's).

    Parameters: ``n`` >= p + 1, ``p`` >= 4, ``q`` > p, ``delta`` in (0, 0.02], ``seed``.
    """
    n = check_int("n", n, 2)
    p = check_int("p", p, 4)
    q = check_int("q", q, 1)
    if q <= p:
        raise ValueError(f"q must be > p (the isometric embedding goes to a wider student); got q={q}, p={p}")
    if n < p + 1:
        raise ValueError(f"n must be >= p + 1; got n={n}, p={p}")
    delta = check_float("delta", delta, low=0.0, strict=True, high=0.02)
    rng = rng_from(seed)
    U, V = centred_orthonormal(n, p, rng), orthogonal(p, rng)
    sig = np.geomspace(1.0, 0.05, p)
    X = standardise(U @ np.diag(sig) @ V.T)
    Q = orthonormal_rows(p, q, rng)
    iso = X @ Q
    r, w = max(1, p // 4), max(2, p // 2)
    Xlow = standardise(centred_orthonormal(n, r, rng) @ np.diag(np.geomspace(1, 0.2, r)) @ orthonormal_rows(r, p, rng))
    _, _, Vt = np.linalg.svd(Xlow, full_matrices=False)
    basis = np.linalg.qr(np.column_stack([Vt[:r].T, rng.standard_normal((p, w - r))]))[0]  # p x w, spans row space
    partial = Xlow @ basis @ orthogonal(w, rng)
    lam, vec = np.linalg.eigh(gram(X))
    keep = lam > lam.max() * 1e-12
    from_gram = vec[:, keep] * np.sqrt(lam[keep])
    rand = standardise(rng.standard_normal((n, q)))

    def scaled(k: int, factor: float) -> np.ndarray:
        s = sig.copy()
        s[k] *= factor
        return standardise(U @ np.diag(s) @ V.T)

    near_a, near_b = scaled(0, 1 + delta), scaled(p - 1, 1 + 50 * delta)
    noise = standardise(rng.standard_normal((n, q)))
    table = sweep(lambda e: (X, standardise(iso + e * noise)))
    arrays = {"X": X, "XQ": iso, "X_low": Xlow, "partial": partial, "from_gram": from_gram, "random": rand,
              "near_a": near_a, "near_b": near_b}
    pairs = [Pair("X vs XQ (q>p)", "X", "XQ"), Pair("X_low vs partial isometry (q<p)", "X_low", "partial"),
             Pair("X vs Gram-built Y", "X", "from_gram"), Pair("X vs random", "X", "random"),
             Pair("X vs near A", "X", "near_a"), Pair("X vs near B", "X", "near_b")]

    def claims(cx: Counterexample) -> list[Claim]:
        A = cx.arrays
        out = []
        for label, xk, yk in (("X vs XQ (q>p)", "X", "XQ"), ("X_low vs partial isometry (q<p)", "X_low", "partial")):
            out.append(Claim("D_P = 0 for a (partial) isometry", _m("procrustes", A[xk], A[yk]), "<=", 0.0,
                             ZERO_DISTANCE_TOL, "sqrt of a float64 zero", label))
            out.append(Claim("=> D_FG = 0", _m("fg", A[xk], A[yk]), "<=", 0.0, ZERO_DISTANCE_TOL,
                             "sqrt of a float64 zero", label))
        out.append(Claim("D_FG = 0 for a student built from K alone", _m("fg", X, A["from_gram"]), "<=", 0.0,
                         ZERO_DISTANCE_TOL, "sqrt of a float64 zero", "X vs Gram-built Y"))
        out.append(Claim("=> D_P = 0", _m("procrustes", X, A["from_gram"]), "<=", 0.0, ZERO_DISTANCE_TOL,
                         "sqrt of a float64 zero", "X vs Gram-built Y"))
        pa, pb = _m("procrustes", X, A["near_a"]), _m("procrustes", X, A["near_b"])
        fa, fb = _m("fg", X, A["near_a"]), _m("fg", X, A["near_b"])
        out.append(Claim("near-zero pairs: D_P(B) / D_P(A) > 1", pb / pa, ">=", 1.0, 0.0,
                         "B moves a low-variance direction further", "near A, B"))
        out.append(Claim("near-zero pairs: D_FG(A) / D_FG(B) > 1 (opposite order)", fa / fb, ">=", 1.0, 0.0,
                         "FG weights directions by their variance", "near A, B"))
        out.append(Claim("near-zero pairs: max(D_P, D_FG) <= 0.1", max(pa, pb, fa, fb), "<=", 0.1, 0.0,
                         "both pairs are close to the teacher", "near A, B"))
        return out + order_claims(cx.data["orders"], GENERIC_ORDERS, "X vs XQ + eps N")

    statement = (
        "Procrustes and FG vanish together: for an isometric embedding into a wider student, a partial isometry "
        "onto a narrower one and a student rebuilt from the teacher's Gram matrix alone, both read 0 (the "
        "inequalities D_FG <= (|X|_op + |Y|_op) D_P and D_P^2 <= |K - L|_* make each zero exactly when the other "
        "is), and both grow at first order under generic noise. Away from zero they differ: of two near-zero "
        "students, Procrustes ranks one closer and FG the other."
    )
    return Counterexample(
        "procrustes_fg", "Procrustes <=> FG", statement, X, iso, arrays, pairs,
        {"n": n, "p": p, "q": q, "delta": delta, "seed": seed}, claims,
        {"orders": table, "order_parameter": "eps (noise)"},
    )


# ------------------------------------------------------------------------------------ the Fig. 2a statistic


def count_eps_orthogonal(Y: object, eps: float, *, reference: object = None, center: bool = False) -> int:
    """The number of epsilon-orthogonal pairs of vectors (rows): ``#{i < j : |cos(y_i, y_j)| <= eps}``.

    The paper's Figure 2a statistic (its exact definition is not public; this is our reading). With
    ``reference`` (e.g. the teacher, same number of rows) only pairs that are eps-orthogonal in *both* are
    counted: how many of the reference's eps-orthogonal pairs ``Y`` keeps. ``center=True`` removes the column
    means first (the geometry the centring metrics see). A zero row is an error.
    """
    eps = check_float("eps", eps, low=0.0)
    A = np.asarray(Y.detach().cpu() if hasattr(Y, "detach") else Y, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2:
        raise ValueError(f"Y must be a 2-D array with at least 2 rows; got shape {A.shape}")

    def ortho(M: np.ndarray) -> np.ndarray:
        if center:
            M = M - M.mean(axis=0)
        norms = np.linalg.norm(M, axis=1)
        if np.any(norms == 0):
            raise ValueError("a row is zero; its angle to the others is undefined")
        C = (M / norms[:, None]) @ (M / norms[:, None]).T
        return np.abs(C[np.triu_indices(M.shape[0], 1)]) <= eps

    mask = ortho(A)
    if reference is not None:
        R = np.asarray(reference.detach().cpu() if hasattr(reference, "detach") else reference, dtype=np.float64)
        if R.ndim != 2 or R.shape[0] != A.shape[0]:
            raise ValueError(f"reference must have the same number of rows as Y; got {R.shape} and {A.shape}")
        mask &= ortho(R)
    return int(mask.sum())


def all_counterexamples(seed: int = 0) -> list[Counterexample]:
    """Every construction with its default sizes."""
    return [
        projection_invertible(seed=seed),
        projection_invertible(q=16, seed=seed),
        projection_minibatch(seed=seed),
        cka_antiparallel(seed=seed),
        cka_translation(seed=seed),
        cka_dominant_direction(seed=seed),
        procrustes_fg_equivalence(seed=seed),
    ]


__all__ = [
    "all_counterexamples",
    "cka_antiparallel",
    "cka_dominant_direction",
    "cka_theorem1_prediction",
    "cka_translation",
    "count_eps_orthogonal",
    "procrustes_fg_equivalence",
    "projection_invertible",
    "projection_minibatch",
    "projection_prediction",
]
