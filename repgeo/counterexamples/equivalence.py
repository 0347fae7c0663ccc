"""Procrustes <=> FG: both vanish together; away from zero they differ. Conventions as in
:mod:`repgeo.counterexamples.constructions`.
"""

from __future__ import annotations

import numpy as np

from ._core import (
    centred_orthonormal,
    check_float,
    check_int,
    gram,
    orthogonal,
    orthonormal_rows,
    rng_from,
    standardise,
)
from .certificate import ZERO_DISTANCE_TOL, Claim, Counterexample, Pair, metric_value
from .orders import order_claims, sweep

_m = metric_value  # a registered metric of (X, Y) as a float

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
    arrays, noise = _equivalence_arrays(n, p, q, delta, rng_from(seed))
    X, iso = arrays["X"], arrays["XQ"]
    table = sweep(lambda e: (X, standardise(iso + e * noise)))
    pairs = [Pair("X vs XQ (q>p)", "X", "XQ"), Pair("X_low vs partial isometry (q<p)", "X_low", "partial"),
             Pair("X vs Gram-built Y", "X", "from_gram"), Pair("X vs random", "X", "random"),
             Pair("X vs near A", "X", "near_a"), Pair("X vs near B", "X", "near_b")]

    statement = (
        "Procrustes and FG vanish together: for an isometric embedding into a wider student, a partial isometry "
        "onto a narrower one and a student rebuilt from the teacher's Gram matrix alone, both read 0 (the "
        "inequalities D_FG <= (|X|_op + |Y|_op) D_P and D_P^2 <= |K - L|_* make each zero exactly when the other "
        "is), and both grow at first order under generic noise. Away from zero they differ: of two near-zero "
        "students, Procrustes ranks one closer and FG the other."
    )
    return Counterexample(
        "procrustes_fg", "Procrustes <=> FG", statement, X, iso, arrays, pairs,
        {"n": n, "p": p, "q": q, "delta": delta, "seed": seed}, _equivalence_claims,
        {"orders": table, "order_parameter": "eps (noise)"},
    )


def _equivalence_arrays(n: int, p: int, q: int, delta: float, rng: np.random.Generator
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The arrays of :func:`procrustes_fg_equivalence` and the noise direction of its sweep."""
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
    arrays = {"X": X, "XQ": iso, "X_low": Xlow, "partial": partial, "from_gram": from_gram, "random": rand,
              "near_a": near_a, "near_b": near_b}
    return arrays, noise


def _equivalence_claims(cx: Counterexample) -> list[Claim]:
    """The claims of :func:`procrustes_fg_equivalence`: zeros both ways, opposite orders near zero, orders."""
    A = cx.arrays
    X = A["X"]
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
