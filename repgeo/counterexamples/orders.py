"""Orders of blindness: how fast each metric, read as a distance, sees a perturbation of size eps.

A construction with a perturbation size eps (Theorem 1's displacement, the condition number 1 + eps of
Theorem 2's map, a translation, noise added to an isometry) is rebuilt at every eps of a geometric grid over
[0.01, 0.3] (:data:`EPS_GRID`), with everything else (seed included) fixed, and five distances are measured
on the (teacher, student) pair, each zero at eps = 0 for these constructions:

* ``procrustes`` — D_P, the Procrustes distance;
* ``fg`` — D_FG = ||K - L||_F;
* ``cka`` — sqrt(2 (1 - CKA)), which is ||K/||K||_F - L/||L||_F||_F: CKA read as a distance;
* ``cka_debiased`` — sqrt(2 (1 - debiased CKA));
* ``projection`` — sqrt(proj_mse), the residual of the best linear map from student to teacher.

A distance of order k reads ~ c eps^k, so the slope of log(distance) against log(eps), fitted by least
squares over the grid, estimates k. A distance that stays below :data:`ZERO_DISTANCE_TOL` at every eps is
*blind* to the perturbation at every order. Certificates claim the slopes within :data:`ORDER_TOL` of the
orders the theory states, and blindness where it states blindness.

Why CKA and FG always share an order (centred inputs with unit Frobenius norm, so tr K = tr L = 1; r bounds
the ranks of K and L): with d_CKA = ||K^ - L^||_F (hats: unit Frobenius norm),

    d_CKA <= 2 ||K - L||_F / ||K||_F <= 2 sqrt(r) D_FG        (||a^ - b^|| <= 2 ||a - b|| / ||a||; ||K||_F >= 1/sqrt r)
    D_FG <= ||K||_F d_CKA + | ||K||_F - ||L||_F | <= (1 + sqrt(2 r)) d_CKA
            (tr(K^ - L^) = 1/||K||_F - 1/||L||_F, |tr A| <= sqrt(rank A) ||A||_F, ||K||_F, ||L||_F <= 1)

so for a fixed rank bound no family of perturbations separates CKA from FG by an order: only Procrustes can
be of lower order, and at most by half an order of FG (D_FG <= 2 D_P and D_P^2 <= ||K - L||_* <=
sqrt(2 r) D_FG), a gap Theorem 1's construction attains (D_P ~ eps, D_FG ~ eps^2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .certificate import ZERO_DISTANCE_TOL, Claim, Counterexample, format_value, metric_value

#: The perturbation sizes of every sweep: 8 points, geometric from 0.01 to 0.3.
EPS_GRID = tuple(float(e) for e in np.geomspace(0.01, 0.3, 8))
#: How far a fitted log-log slope may sit from the stated order.
ORDER_TOL = 0.15
#: The five distances of a sweep, in this order.
DISTANCES = ("procrustes", "fg", "cka", "cka_debiased", "projection")


def _similarity_distance(name: str) -> Callable[..., float]:
    def dist(X: np.ndarray, Y: np.ndarray, **prep: object) -> float:
        return float(np.sqrt(max(2.0 * (1.0 - metric_value(name, X, Y, **prep)), 0.0)))  # type: ignore[arg-type]

    return dist


def _metric(name: str) -> Callable[..., float]:
    def dist(X: np.ndarray, Y: np.ndarray, **prep: object) -> float:
        return metric_value(name, X, Y, **prep)  # type: ignore[arg-type]

    return dist


def _residual(X: np.ndarray, Y: np.ndarray, **prep: object) -> float:
    return float(np.sqrt(max(metric_value("proj_mse", X, Y, **prep), 0.0)))  # type: ignore[arg-type]


_DISTANCE_FNS: dict[str, Callable[..., float]] = {
    "procrustes": _metric("procrustes"),
    "fg": _metric("fg"),
    "cka": _similarity_distance("cka"),
    "cka_debiased": _similarity_distance("cka_debiased"),
    "projection": _residual,
}
LABELS = {"procrustes": "D_P", "fg": "D_FG", "cka": "sqrt(2(1 - CKA))",
          "cka_debiased": "sqrt(2(1 - debiased CKA))", "projection": "sqrt(proj_mse)"}


def distances(X: np.ndarray, Y: np.ndarray, *, center: bool = True, normalize: str | None = "frobenius"
              ) -> dict[str, float]:
    """The five distances of :data:`DISTANCES` for teacher ``X`` and student ``Y``."""
    return {name: fn(X, Y, center=center, normalize=normalize) for name, fn in _DISTANCE_FNS.items()}


def sweep(build: Callable[[float], tuple[np.ndarray, np.ndarray]], eps: Sequence[float] = EPS_GRID, *,
          center: bool = True, normalize: str | None = "frobenius") -> pd.DataFrame:
    """``build(e) -> (X, Y)`` at every ``e`` of ``eps``: one row per e, columns ``eps`` and the distances."""
    return pd.DataFrame([{"eps": float(e), **distances(*build(float(e)), center=center, normalize=normalize)}
                         for e in eps])


def slope(eps: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of log(values) against log(eps); NaN when a value is <= 0."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(values <= 0):
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(eps, dtype=np.float64)), np.log(values), 1)[0])


def orders(table: pd.DataFrame) -> dict[str, float]:
    """Fitted order of every distance of a :func:`sweep` table; NaN for a distance blind at every eps."""
    out = {}
    for name in DISTANCES:
        v = table[name].to_numpy(dtype=np.float64)
        out[name] = float("nan") if np.all(v <= ZERO_DISTANCE_TOL) else slope(table["eps"].to_numpy(), v)
    return out


def order_claims(table: pd.DataFrame, expected: Mapping[str, float | None], pair: str) -> list[Claim]:
    """Claims on a sweep: for each distance in ``expected``, its fitted order within :data:`ORDER_TOL` of the
    stated order, or (``None``) blindness: the distance <= :data:`ZERO_DISTANCE_TOL` at every eps."""
    lo, hi = table["eps"].min(), table["eps"].max()
    out = []
    for name, order in expected.items():
        v = table[name].to_numpy(dtype=np.float64)
        if order is None:
            out.append(Claim(f"{LABELS[name]} blind at every order: <= {ZERO_DISTANCE_TOL:g} for eps in "
                             f"[{lo:g}, {hi:g}]", float(v.max()), "<=", 0.0, ZERO_DISTANCE_TOL,
                             "max over the sweep; sqrt of a float64 zero", pair))
        else:
            out.append(Claim(f"order of {LABELS[name]} in eps (log-log slope over [{lo:g}, {hi:g}]) = {order:g}",
                             slope(table["eps"].to_numpy(), v), "==", float(order), ORDER_TOL,
                             f"least-squares slope over {len(v)} eps; tolerance {ORDER_TOL:g}", pair))
    return out


def format_orders(table: pd.DataFrame, parameter: str, sphere: bool = False) -> str:
    """A sweep as text: one line per distance with its values at the ends of the sweep and its fitted order (or
    "blind at every order")."""
    fitted = orders(table)
    where = " on the sphere" if sphere else ""
    lines = [f"orders of blindness{where} ({parameter} from {table['eps'].iloc[0]:g} to {table['eps'].iloc[-1]:g}):"]
    for name in DISTANCES:
        s = fitted[name]
        order = "blind at every order" if s != s else f"order {s:.2f}"
        lines.append(f"  {LABELS[name]:>27s}: {format_value(table[name].iloc[0])} .. "
                     f"{format_value(table[name].iloc[-1])}  {order}")
    return "\n".join(lines)


def order_sections(cx: Counterexample) -> list[str]:
    """The sweeps a construction carries (``data["orders"]``, and ``data["orders_sphere"]`` on the unit sphere)
    as :func:`format_orders` texts, for :func:`repgeo.counterexamples.certificate.format_certificate`."""
    return [format_orders(cx.data[key], cx.data["order_parameter"], key == "orders_sphere")
            for key in ("orders", "orders_sphere") if key in cx.data]
