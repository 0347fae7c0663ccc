"""Certificates: claims, the :class:`Counterexample` record, the certificate printer and the loop that certifies
a list of constructions (used by ``repgeo counterexamples`` and ``repgeo demo``).

A certificate is one long pandas table with two sections:

* ``section == "metric"``: every registered metric (:func:`repgeo.metrics.available`) evaluated on every pair of
  the construction, under the pair's preprocessing (``value``; ``error`` holds the message if the metric
  raised, ``value`` is then NaN);
* ``section == "claim"``: every claim the construction makes, with the measured ``value``, the ``relation``
  (``<=``, ``>=``, ``==``), the ``bound``, the absolute tolerance ``tol`` and ``passed``. ``why`` states where
  the bound and the tolerance come from.

A ``<=`` claim passes when ``value <= bound + tol``, ``>=`` when ``value >= bound - tol``, ``==`` when
``|value - bound| <= tol``; a NaN value fails.

This module is the bottom of the package: it imports :mod:`repgeo.metrics` and nothing of the constructions, so
every construction, :mod:`.orders` and :mod:`.figures` build on it. Extra sections of a printed certificate (the
orders of blindness, :func:`repgeo.counterexamples.orders.order_sections`) and per-construction side effects
(figures) are handed in by the caller.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

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


# ------------------------------------------------------------------------------------------ printing and loop


def format_value(v: object) -> str:
    """A number for a printed table: 4 significant digits, scientific notation outside [1e-3, 1e4), ``0`` and
    ``nan`` spelled out; anything that is not a number as ``str``."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if f != f:
        return "nan"
    if f == 0:
        return "0"
    return f"{f:.4g}" if 1e-3 <= abs(f) < 1e4 else f"{f:.2e}"


def format_certificate(cx: Counterexample, cert: pd.DataFrame | None = None, *,
                       sections: Sequence[str] = ()) -> str:
    """A certificate as text: title, statement, metric table (with a note per metric that raised), the extra
    text ``sections`` (e.g. :func:`repgeo.counterexamples.orders.order_sections`), then every claim with
    PASS/FAIL. ``cert`` is ``cx.certify()`` when already computed."""
    cert = cx.certify() if cert is None else cert
    lines = [f"== {cx.title} ==", textwrap.fill(cx.statement, 110), "", "metric values:"]
    lines.append(cx.metric_table().map(format_value).to_string())
    errors = cert[(cert["section"] == "metric") & (cert["why"] != "")]
    for r in errors.itertuples():
        lines.append(f"  note: {r.item} on {r.pair}: {r.why}")
    lines += list(sections)
    lines.append("claims:")
    for r in cert[cert["section"] == "claim"].itertuples():
        mark = "PASS" if r.passed else "FAIL"
        where = f" [{r.pair}]" if r.pair else ""
        lines.append(f"  {mark}  {r.item}{where}: {format_value(r.value)} {r.relation} {format_value(r.bound)} "
                     f"(tol {format_value(r.tol)})")
    return "\n".join(lines)


#: Columns of :func:`certify_all`'s table.
CLAIM_COLUMNS = ["counterexample", "title", "claim", "pair", "value", "relation", "bound", "tol", "passed"]


def certify_all(cases: Iterable[Counterexample],
                each: Callable[[Counterexample, pd.DataFrame, str], None] | None = None) -> pd.DataFrame:
    """Certify every construction of ``cases`` (on one BLAS thread): one row per claim, columns
    :data:`CLAIM_COLUMNS` (``counterexample`` is the construction's name, suffixed ``_2``, ``_3``, ... when a
    name repeats). ``each(cx, certificate, name)`` is called once per construction, in order, with its
    :meth:`Counterexample.certify` table (to print it, or to save a figure under that name)."""
    rows = []
    seen: dict[str, int] = {}
    with single_threaded():
        for cx in cases:
            seen[cx.name] = seen.get(cx.name, 0) + 1
            stem = cx.name if seen[cx.name] == 1 else f"{cx.name}_{seen[cx.name]}"
            cert = cx.certify()
            for r in cert[cert["section"] == "claim"].itertuples():
                rows.append({"counterexample": stem, "title": cx.title, "claim": r.item, "pair": r.pair,
                             "value": r.value, "relation": r.relation, "bound": r.bound, "tol": r.tol,
                             "passed": bool(r.passed)})
            if each is not None:
                each(cx, cert, stem)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


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
