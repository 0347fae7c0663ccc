"""CKA's other blind spots: translation (it centres) and one dominant direction (it weights directions by their
variance squared). Conventions as in :mod:`repgeo.counterexamples.constructions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from repgeo.metrics import available

from ._core import check_float, check_int, rng_from, standardise
from .certificate import ROUNDING_TOL, ZERO_DISTANCE_TOL, Claim, Counterexample, Pair, metric_value
from .orders import order_claims, slope, sweep

_m = metric_value  # a registered metric of (X, Y) as a float


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


#: Variance ratios of the shared direction in :func:`cka_dominant_direction`.
DEFAULT_RATIOS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


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
        s_cka, s_nbs = slope(r[top], 1 - ck[top]), slope(r[top], 1 - nb[top])
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
