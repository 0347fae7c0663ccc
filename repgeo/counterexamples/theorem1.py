"""The paper's Theorem 1 (Figure 1): antiparallel configurations that CKA barely tells apart. Conventions as in
:mod:`repgeo.counterexamples.constructions`.
"""

from __future__ import annotations

import numpy as np

from ._core import check_float, check_int, orthonormal_rows, rng_from, standardise
from .certificate import EXACT_TOL, ROUNDING_TOL, ZERO_DISTANCE_TOL, Claim, Counterexample, Pair, metric_value
from .orders import order_claims, sweep

_m = metric_value  # a registered metric of (X, Y) as a float


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
    n, p, q, m, eps = _theorem1_parameters(n, p, q, m, eps)
    arrays = _theorem1_arrays(n, p, q, m, eps, seed)
    pred = cka_theorem1_prediction(n, m, eps)

    def pair_at(e: float) -> tuple[np.ndarray, np.ndarray]:
        A = _theorem1_arrays(n, p, q, m, e, seed)
        return A["b"], A["c"]

    table = sweep(pair_at)

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
        {"n": n, "p": p, "q": q, "m": m, "eps": eps, "seed": seed}, _theorem1_claims,
        {"predicted": pred, "orders": table, "order_parameter": "eps"},
    )


def _theorem1_parameters(n: object, p: object, q: object, m: object, eps: object
                         ) -> tuple[int, int, int, int, float]:
    """The checked parameters of :func:`cka_antiparallel`."""
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
    return n, p, q, m, eps


def _theorem1_claims(cx: Counterexample) -> list[Claim]:
    """The claims of :func:`cka_antiparallel` against the closed forms of :func:`cka_theorem1_prediction`."""
    pred = cx.data["predicted"]
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
