"""Shared machinery: claims, the :class:`Counterexample` record and its certificate, parameter checks.

A certificate is one long pandas table with two sections:

* ``section == "metric"``: every registered metric (:func:`repgeo.metrics.available`) evaluated on every pair of
  the construction, under the pair's preprocessing (``value``; ``error`` holds the message if the metric
  raised, ``value`` is then NaN);
* ``section == "claim"``: every claim the construction makes, with the measured ``value``, the ``relation``
  (``<=``, ``>=``, ``==``), the ``bound``, the absolute tolerance ``tol`` and ``passed``. ``why`` states where
  the bound and the tolerance come from.

A ``<=`` claim passes when ``value <= bound + tol``, ``>=`` when ``value >= bound - tol``, ``==`` when
``|value - bound| <= tol``; a NaN value fails.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from repgeo._validation import check_float, check_int  # noqa: F401 (the theorem modules import them from here)
from repgeo.metrics import available, get

Relation = Literal["<=", ">=", "=="]

#: Tolerance for a distance (Procrustes, FG) that should read exactly 0. The metrics take the square root of a
#: squared distance computed in float64 with absolute rounding error ~1e-15 (unit-Frobenius inputs), so an exact
#: zero reads up to ~3e-8; 1e-6 is above that and far below every non-zero distance the constructions produce.
ZERO_DISTANCE_TOL = 1e-6
#: Tolerance for a quantity computed without a square root at its zero (CKA - 1, projection-MSE, a bound check):
#: float64 rounding of sums of O(1) terms is ~1e-15; 1e-12 leaves three orders of magnitude.
ROUNDING_TOL = 1e-12
#: Tolerance for a measured value against a closed-form prediction away from zero (SVD-based, well conditioned).
EXACT_TOL = 1e-9


@dataclass(frozen=True)
class Claim:
    """One checked statement: ``value relation bound`` up to ``tol``."""

    statement: str
    value: float
    relation: Relation
    bound: float
    tol: float
    why: str = ""
    pair: str = ""

    @property
    def passed(self) -> bool:
        v, b, t = float(self.value), float(self.bound), float(self.tol)
        if not (math.isfinite(v) and math.isfinite(b)):
            return False
        if self.relation == "<=":
            return v <= b + t
        if self.relation == ">=":
            return v >= b - t
        return abs(v - b) <= t


@dataclass(frozen=True)
class Pair:
    """A (teacher, student) pair of a construction and the preprocessing its metrics use."""

    label: str
    x: str
    y: str
    center: bool = True
    normalize: str | None = "frobenius"


def metric_value(name: str, X: np.ndarray, Y: np.ndarray, *, center: bool = True,
                 normalize: str | None = "frobenius") -> float:
    """The registered metric ``name`` of teacher ``X`` and student ``Y`` as a Python float."""
    return float(get(name).fn(X, Y, center=center, normalize=normalize))


@dataclass
class Counterexample:
    """A construction of the theory: teacher ``X``, student ``Y``, what it shows, and its certificate.

    ``arrays`` holds every named array of the construction (``X`` and ``Y`` among them); ``pairs`` the pairs whose
    metrics the certificate lists; ``data`` extra results (a curve, a sweep); ``params`` the parameters used.
    """

    name: str
    title: str
    statement: str
    X: np.ndarray
    Y: np.ndarray
    arrays: dict[str, np.ndarray]
    pairs: list[Pair]
    params: dict[str, Any]
    claims_fn: Callable[[Counterexample], list[Claim]] = field(repr=False)
    data: dict[str, Any] = field(default_factory=dict)

    def metric_values(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Every metric (default: all registered) on every pair: columns pair, center, normalize, metric, value,
        kind, error."""
        names = list(available()) if metrics is None else list(metrics)
        rows = []
        for pair in self.pairs:
            X, Y = self.arrays[pair.x], self.arrays[pair.y]
            for name in names:
                err = ""
                try:
                    value = metric_value(name, X, Y, center=pair.center, normalize=pair.normalize)
                except Exception as exc:  # a metric that cannot read this pair is reported, not fatal
                    value, err = float("nan"), f"{type(exc).__name__}: {exc}"
                rows.append({"pair": pair.label, "center": pair.center, "normalize": pair.normalize,
                             "metric": name, "value": value, "kind": get(name).kind, "error": err})
        return pd.DataFrame(rows)

    def claims(self) -> list[Claim]:
        """The construction's claims, measured now (through the current metric registry)."""
        return list(self.claims_fn(self))

    def certify(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The certificate: every registered metric's value on every pair, then every claim with pass/fail.

        Columns: section ("metric" | "claim"), item (metric name or claim statement), pair, value, relation,
        bound, tol, passed, why. Metric rows leave relation/bound/tol/passed empty (``why`` carries an error).
        """
        mv = self.metric_values(metrics)
        metric_rows = [
            {"section": "metric", "item": r.metric, "pair": r.pair, "value": r.value, "relation": "",
             "bound": np.nan, "tol": np.nan, "passed": None, "why": r.error}
            for r in mv.itertuples()
        ]
        claim_rows = [
            {"section": "claim", "item": c.statement, "pair": c.pair, "value": float(c.value),
             "relation": c.relation, "bound": float(c.bound), "tol": float(c.tol), "passed": c.passed,
             "why": c.why}
            for c in self.claims()
        ]
        return pd.DataFrame(metric_rows + claim_rows,
                            columns=["section", "item", "pair", "value", "relation", "bound", "tol", "passed",
                                     "why"])

    def holds(self) -> bool:
        """Whether every claim passes."""
        return all(c.passed for c in self.claims())

    def metric_table(self, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Metric values as a wide table: one row per metric, one column per pair."""
        mv = self.metric_values(metrics)
        order = [p.label for p in self.pairs]
        wide = mv.pivot(index="metric", columns="pair", values="value")
        wide = wide.reindex(index=list(dict.fromkeys(mv["metric"])), columns=order)
        wide.columns.name = None
        return wide


# ---------------------------------------------------------------------------------------------------- checks


def rng_from(seed: object) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    return np.random.default_rng(int(seed))


# ------------------------------------------------------------------------------------------ random matrices


def orthogonal(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random k x k orthogonal matrix."""
    Q, R = np.linalg.qr(rng.standard_normal((k, k)))
    return Q * np.sign(np.diag(R))


def orthonormal_rows(r: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """A random r x p matrix with orthonormal rows (r <= p)."""
    Q, _ = np.linalg.qr(rng.standard_normal((p, r)))
    return Q.T


def centred_orthonormal(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """A random n x r matrix with orthonormal, centred columns (needs r <= n - 1)."""
    Z = rng.standard_normal((n, r))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)
    Q -= Q.mean(axis=0)  # remove the rounding-level mean QR leaves
    return Q


def standardise(A: np.ndarray) -> np.ndarray:
    """The theory's convention: centre the columns, divide by the Frobenius norm."""
    A = np.asarray(A, dtype=np.float64)
    A = A - A.mean(axis=0)
    return A / np.linalg.norm(A)


def gram(A: np.ndarray) -> np.ndarray:
    return A @ A.T


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS (and torch, if loaded) on one thread: these matrices are small, and multi-threaded BLAS on a
    shared machine is ten times slower for them, not faster."""
    import sys

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        limits: Any = nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None and threads is not None:
                torch.set_num_threads(threads)
