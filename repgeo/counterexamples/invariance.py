"""Invariance audit: which transformations of the student each registered metric does not see.

For a generic teacher/student pair (X, Y) each transform T is applied to the student and every metric is
evaluated before and after (default preprocessing: centre, unit Frobenius norm)::

    change = metric(X, T(Y)) - metric(X, Y)

Transforms: ``orthogonal`` (Y Q), ``isotropic_scale`` (c Y), ``anisotropic_scale`` (Y D, D diagonal in
[0.2, 5]), ``invertible_linear`` (Y M, cond(M) = 10), ``translation`` (Y + 1 b^T, ||b|| = 3 x the RMS row norm),
``permutation`` (of the feature columns), ``subset_translation`` (half of the rows moved by b — Davari et al.
2022), and ``noise`` (Y + s * RMS(Y) * G at each level s). The first six are the invariance names of the metric
registry: where a metric *declares* an invariance, its value must not change (a checked claim); everything
else is reported.

``changed`` means ``|change| > tol``; the default ``tol = 1e-8`` sits far above float64 rounding of these
O(1) quantities (~1e-13 for the exact invariances here) and far below any real change (the smallest, from
noise at level 1e-3, is ~1e-5 or more).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from repgeo.metrics import available, get

from ._core import check_float, check_int, orthogonal, rng_from, standardise
from .certificate import metric_value

#: The registry's invariance names (the transforms a metric may declare).
DECLARABLE = ("orthogonal", "permutation", "isotropic_scale", "anisotropic_scale", "invertible_linear",
              "translation")
AUDIT_TOL = 1e-8


def _transforms(Y: np.ndarray, rng: np.random.Generator,
                noise_levels: Sequence[float]) -> list[tuple[str, str, Callable[[], np.ndarray]]]:
    n, q = Y.shape
    rms = float(np.sqrt((Y**2).sum(axis=1).mean()))
    b = rng.standard_normal(q)
    b *= 3 * rms / np.linalg.norm(b)
    Q = orthogonal(q, rng)
    D = np.exp(rng.uniform(np.log(0.2), np.log(5.0), q))
    M = orthogonal(q, rng) @ np.diag(np.geomspace(1.0, 10.0, q)) @ orthogonal(q, rng)
    perm = rng.permutation(q)
    subset = rng.permutation(n)[: n // 2]
    G = rng.standard_normal((n, q))
    entry_rms = float(np.sqrt((Y**2).mean()))

    def subset_shift() -> np.ndarray:
        Z = Y.copy()
        Z[subset] += b
        return Z

    out: list[tuple[str, str, Callable[[], np.ndarray]]] = [
        ("orthogonal", "", lambda: Y @ Q),
        ("isotropic_scale", "x3.7", lambda: 3.7 * Y),
        ("anisotropic_scale", "D in [0.2, 5]", lambda: Y * D),
        ("invertible_linear", "cond 10", lambda: Y @ M),
        ("translation", "|b| = 3 rms", lambda: Y + b),
        ("permutation", "", lambda: Y[:, perm]),
        ("subset_translation", "half the rows", subset_shift),
    ]
    for s in noise_levels:
        out.append(("noise", f"{s:g}", lambda s=s: Y + s * entry_rms * G))
    return out


def audit_pair(n: int = 100, p: int = 24, q: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The generic pair the audit transforms: a teacher with a decaying spectrum and a related, noisy student."""
    rng = rng_from(seed)
    X = standardise(rng.standard_normal((n, p)) * np.geomspace(1.0, 0.1, p))
    Y = standardise(X @ rng.standard_normal((p, q)) + 0.5 * standardise(rng.standard_normal((n, q))))
    return X, Y


def invariance_audit(metrics: Sequence[str] | None = None, n: int = 100, seed: int = 0, *, p: int = 24,
                     q: int = 16, noise_levels: Sequence[float] = (1e-3, 1e-2, 1e-1),
                     tol: float = AUDIT_TOL) -> pd.DataFrame:
    """Apply every transform class to the student and report each metric's change.

    Returns a long table with columns metric, transform, level, before, after, change, changed, declared
    (whether the registry declares the metric invariant to this transform; None for transforms it cannot
    declare), passed (``not changed`` where declared, else None) and error. ``metrics``: registered names
    (default all). A metric that raises is recorded with NaN values and fails any declared invariance.
    """
    n = check_int("n", n, 4)
    p = check_int("p", p, 2)
    q = check_int("q", q, 2)
    tol = check_float("tol", tol, low=0.0)
    levels = [check_float("noise level", s, low=0.0, strict=True) for s in noise_levels]
    names = list(available()) if metrics is None else list(metrics)
    for name in names:
        get(name)  # unknown names raise a clear error
    X, Y = audit_pair(n, p, q, seed)
    transforms = _transforms(Y, rng_from(seed + 1), levels)
    rows = []
    for name in names:
        spec = get(name)
        try:
            before, err0 = metric_value(name, X, Y), ""
        except Exception as exc:
            before, err0 = float("nan"), f"{type(exc).__name__}: {exc}"
        for transform, level, make in transforms:
            err = err0
            try:
                after = metric_value(name, X, make())
            except Exception as exc:
                after, err = float("nan"), f"{type(exc).__name__}: {exc}"
            change = after - before
            changed = not (np.isfinite(change) and abs(change) <= tol)
            declared = (transform in spec.invariances) if transform in DECLARABLE else None
            rows.append({"metric": name, "transform": transform, "level": level, "before": before,
                         "after": after, "change": change, "changed": changed, "declared": declared,
                         "passed": (not changed) if declared else None, "error": err})
    return pd.DataFrame(rows)


def invariance_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The audit as a metric x transform table of ``|change|`` (noise levels as separate columns)."""
    t = table.copy()
    t["column"] = [tr if tr != "noise" else f"noise {lv}"
                   for tr, lv in zip(t["transform"], t["level"], strict=True)]
    wide = t.pivot(index="metric", columns="column", values="change").abs()
    wide = wide.reindex(index=list(dict.fromkeys(t["metric"])), columns=list(dict.fromkeys(t["column"])))
    wide.columns.name = None
    return wide


def audit_passed(table: pd.DataFrame) -> bool:
    """Whether every declared invariance held."""
    return bool(table.loc[table["declared"] == True, "passed"].all())  # noqa: E712
