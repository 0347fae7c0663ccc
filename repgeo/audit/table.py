"""Features in memory -> the audit table: values, intervals, permutation p-values, null floors, diagnostics.

Conventions are those of :mod:`repgeo.audit.core` (X teacher n × p, Y student n × q, one row per stimulus or
token). Every layer is first replaced by its row-space coordinates when n < width
(:func:`repgeo.metrics.estimators.row_space`): exact for every metric invariant to orthogonal maps, and it
turns each width × width factorisation of the resampling into an n × n one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from repgeo._validation import check_choice, check_float, check_int
from repgeo.metrics import compare, get
from repgeo.metrics.estimators import CORRECTED_BOUNDS, corrected, effective_rank, heldout_terms, row_space

from .diagnostics import flag
from .uncertainty import (
    bootstrap_weights,
    floor_values,
    jackknife_se,
    jackknife_weights,
    normal_interval,
    percentile_interval,
    permutation_indices,
    permutation_pvalue,
    replicate_values,
)

__all__ = ["COLUMNS", "DEFAULT_METRICS", "ESTIMATORS", "N_FLOOR", "audit_features", "check_metrics",
           "in_sample_fit_is_exact"]

DEFAULT_METRICS: tuple[str, ...] = ("procrustes", "cka", "fg")
COLUMNS = ["teacher_layer", "student_layer", "metric", "value", "floor", "ci_low", "ci_high", "p_value", "n", "p", "q",
           "eff_rank_t", "eff_rank_s", "estimator", "flag"]
ESTIMATORS = ("corrected", "plugin")
CI_METHODS = ("jackknife", "bootstrap")
N_FLOOR = 5
Cell = tuple[str, str]


def check_metrics(metrics: Sequence[str]) -> None:
    """Raise for a metric list that is a string, empty, or names an unknown metric (naming the available ones)."""
    if isinstance(metrics, str):
        raise TypeError("metrics must be a list of names, e.g. ['procrustes', 'cka']")
    if not metrics:
        raise ValueError("no metrics requested")
    for m in metrics:
        get(m)  # raises with the available names


def in_sample_fit_is_exact(n: int, q: int) -> bool:
    """Whether the closed-form projection of n centred student rows of width q fits any teacher exactly (its
    residual is 0 whenever the centred rows, of rank <= n - 1, can be of full rank: q >= n - 1)."""
    return q >= n - 1


@dataclass
class _Inputs:
    """Validated features of one audit (row-space reduced), with the original widths."""

    teacher: dict[str, np.ndarray]
    student: dict[str, np.ndarray]
    cells: list[Cell]
    groups: np.ndarray
    widths: dict[tuple[str, str], int]
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = int(self.groups.shape[0])

    def pair(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        return self.teacher[cell[0]], self.student[cell[1]]


def _as_2d(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows × features), got shape {a.shape}")
    return a


def _check_options(estimator: str, center: bool, normalize: Any, n_floor: int, ci: float, ci_method: str) -> None:
    check_choice("estimator", estimator, ESTIMATORS)
    if estimator == "corrected" and (center is not True or normalize not in ("frobenius", "rows")):
        raise ValueError(
            "estimator='corrected' needs center=True and normalize='frobenius' or 'rows' (it estimates "
            f"population covariances); got center={center!r}, normalize={normalize!r}: use estimator='plugin'"
        )
    check_int("n_floor", n_floor, 0)
    check_float("ci", ci, low=0.0, strict=True, high=1.0)
    if ci >= 1:
        raise ValueError(f"ci must be < 1; got {ci!r}")
    check_choice("ci_method", ci_method, CI_METHODS)


def _inputs(teacher: Mapping[str, Any], student: Mapping[str, Any], cells: Sequence[Cell] | None, groups: Any,
            metrics: Sequence[str]) -> _Inputs:
    t_feats = {k: _as_2d(v, f"teacher layer {k!r}") for k, v in teacher.items()}
    s_feats = {k: _as_2d(v, f"student layer {k!r}") for k, v in student.items()}
    if not t_feats or not s_feats:
        raise ValueError("no features: give at least one teacher layer and one student layer")
    n_rows = {a.shape[0] for a in [*t_feats.values(), *s_feats.values()]}
    if len(n_rows) != 1:
        t_n = {k: v.shape[0] for k, v in t_feats.items()}
        s_n = {k: v.shape[0] for k, v in s_feats.items()}
        raise ValueError(
            f"teacher and student have different numbers of rows (stimuli): teacher {t_n}, student {s_n}. "
            "Both models must see the same stimuli in the same order (token pooling with different "
            "tokenizers cannot be paired)"
        )
    n = n_rows.pop()
    if n < 3:
        raise ValueError(f"an audit needs at least 3 stimuli; got {n}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one entry per row ({n}); got shape {groups.shape}")
    widths = {("t", k): v.shape[1] for k, v in t_feats.items()}
    widths.update({("s", k): v.shape[1] for k, v in s_feats.items()})
    if all("orthogonal" in get(m).invariances for m in metrics):  # exact: see the module docstring
        t_feats = {k: row_space(v) for k, v in t_feats.items()}
        s_feats = {k: row_space(v) for k, v in s_feats.items()}
    cells = [(t, s) for t in t_feats for s in s_feats] if cells is None else [tuple(c) for c in cells]
    return _Inputs(t_feats, s_feats, cells, groups, widths)  # type: ignore[arg-type]


@dataclass
class _Estimates:
    """Point values of every cell: the reported ones and the plug-in ones (for p-values and interval shifts)."""

    fns: dict[str, Callable[..., float] | None]
    options: dict[str, Any]
    plugin: dict[Cell, dict[str, float]]
    point: dict[Cell, dict[str, float]]

    def value(self, metric: str, X: np.ndarray, Y: np.ndarray) -> float:
        """The reported estimator of ``metric`` on (X, Y)."""
        fn = self.fns[metric]
        assert fn is not None
        return float(fn(X, Y, **self.options))


def _estimates(data: _Inputs, metrics: Sequence[str], estimator: str, resampled: bool, seed: int, center: bool,
               normalize: Any) -> _Estimates:
    fns = {m: corrected(m) if estimator == "corrected" else None for m in metrics}
    need = [m for m in metrics if not fns[m] or resampled]
    plugin = {cell: ({m: float(v) for m, v in compare(*data.pair(cell), need, center=center,
                                                       normalize=normalize).items()} if need else {})
              for cell in data.cells}
    est = _Estimates(fns, {"groups": data.groups, "seed": seed, "center": center, "normalize": normalize}, plugin, {})
    est.point = {cell: {m: est.value(m, *data.pair(cell)) if fns[m] else plugin[cell][m] for m in metrics}
                 for cell in data.cells}
    return est


def _replicates(data: _Inputs, metrics: Sequence[str], est: _Estimates, ci_method: str, n_folds: int, n_boot: int,
                rng: np.random.Generator) -> dict[Cell, dict[str, np.ndarray]] | None:
    """Jackknife / bootstrap replicate values of every cell (None when intervals are off)."""
    if (n_folds if ci_method == "jackknife" else n_boot) <= 0:
        return None
    if ci_method == "jackknife":
        weights = jackknife_weights(data.groups, n_folds, rng)
    else:
        weights = bootstrap_weights(data.groups, n_boot, rng)
    opts = est.options
    held_out = bool(est.fns.get("proj_mse"))  # its replicates: the per-stimulus residual ratio, fits held fixed
    plugin_metrics = [m for m in metrics if not (held_out and m == "proj_mse")]
    reps = replicate_values(data.teacher, data.student, data.cells, plugin_metrics, weights=weights,
                            center=opts["center"], normalize=opts["normalize"]) if plugin_metrics else {
        cell: {} for cell in data.cells}
    if held_out:
        for cell in data.cells:
            r, t = heldout_terms(*data.pair(cell), **opts)
            reps[cell]["proj_mse"] = (weights @ r) / (weights @ t)
    return reps


@dataclass
class _Null:
    """Permutation replicates of the tested statistic, null floors, and the cells whose tested statistic is the
    reported (held-out) one rather than the plug-in."""

    perms: dict[Cell, dict[str, np.ndarray]] | None
    floors: dict[Cell, dict[str, float]]
    held_out_tested: set[tuple[Cell, str]]


def _null(data: _Inputs, metrics: Sequence[str], est: _Estimates, n_perm: int, n_floor: int,
          rng: np.random.Generator) -> _Null:
    floors = {cell: dict.fromkeys(metrics, math.nan) for cell in data.cells}
    tested = {(cell, "proj_mse") for cell in data.cells
              if est.fns.get("proj_mse") and in_sample_fit_is_exact(data.n, data.widths[("s", cell[1])])}
    if n_perm <= 0:
        return _Null(None, floors, tested)
    idx = permutation_indices(data.n, n_perm, rng)
    opts = est.options
    perms = replicate_values(data.teacher, data.student, data.cells, metrics, perms=idx, center=opts["center"],
                             normalize=opts["normalize"])
    for cell, m in tested:  # the in-sample statistic is 0 under every permutation: test the held-out one
        X, Y = data.pair(cell)
        perms[cell][m] = np.array([est.value(m, X, Y[perm]) for perm in idx])
    # a tested cell's floor averages the held-out null just computed (its first k permutations), not a refit
    k = min(n_floor, n_perm)
    tested_cells = list(dict.fromkeys(cell for cell, _ in tested))
    other_cells = [cell for cell in data.cells if cell not in tested_cells]
    floors = floor_values(data.teacher, data.student, other_cells, metrics, idx[:k], perms, est.fns, opts)
    floors.update(floor_values(data.teacher, data.student, tested_cells, metrics, idx[:k], perms,
                               {**est.fns, "proj_mse": None}, opts))
    return _Null(perms, floors, tested)


def _interval(value: float, reps: np.ndarray, shift: float, ci: float, ci_method: str,
              bounds: tuple[float, float]) -> tuple[float, float]:
    if ci_method == "jackknife":
        return normal_interval(value, jackknife_se(reps), ci, bounds)
    return percentile_interval(reps + shift, ci, value)


def _rows(data: _Inputs, metrics: Sequence[str], est: _Estimates, reps: Any, null: _Null, ci: float,
          ci_method: str) -> list[tuple[Any, ...]]:
    used_cells = {c[0] for c in data.cells}, {c[1] for c in data.cells}
    ranks = {("t", k): effective_rank(v) for k, v in data.teacher.items() if k in used_cells[0]}
    ranks.update({("s", k): effective_rank(v) for k, v in data.student.items() if k in used_cells[1]})
    rows = []
    for cell in data.cells:
        p, q = data.widths[("t", cell[0])], data.widths[("s", cell[1])]
        for m in metrics:
            fn, value = est.fns[m], est.point[cell][m]
            used = "corrected" if fn or m == "cka_debiased" else "plugin"
            lo, hi = math.nan, math.nan
            if reps is not None:
                shift = value - est.plugin[cell][m] if fn and m != "proj_mse" else 0.0
                bounds = CORRECTED_BOUNDS.get(m, get(m).bounds) if fn else get(m).bounds
                lo, hi = _interval(value, reps[cell][m], shift, ci, ci_method, bounds)
            pv = math.nan
            if null.perms is not None:
                observed = value if (cell, m) in null.held_out_tested else est.plugin[cell][m]
                pv = permutation_pvalue(observed, null.perms[cell][m], get(m).kind)
            rows.append((cell[0], cell[1], m, value, null.floors[cell][m], lo, hi, pv, data.n, p, q,
                         ranks[("t", cell[0])], ranks[("s", cell[1])], used, flag(data.n, p, q, m, used)))
    return rows


def audit_features(
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    cells: Sequence[tuple[str, str]] | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    n_perm: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    center: bool = True,
    normalize: Any = "frobenius",
    ci_method: str = "jackknife",
    n_folds: int = 100,
    estimator: str = "corrected",
    n_floor: int = N_FLOOR,
) -> pd.DataFrame:
    """Audit table from pooled features already in memory: ``{layer: rows × dim}`` for each model (e.g. what
    :func:`repgeo.probe.collect` returns). ``cells`` defaults to every (teacher layer, student layer) pair.
    ``groups`` (rows → stimulus id) makes the resampling act on stimuli rather than rows (token pooling).

    Intervals (``ci_method``): ``"jackknife"`` (default) — a delete-one-fold jackknife over ``n_folds`` random
    folds of stimuli (leave-one-stimulus-out when there are fewer stimuli), normal interval ``value ± z·se``
    clipped to the metric's range; ``"bootstrap"`` — ``n_boot`` replicates, bias-corrected percentile
    intervals. The bootstrap duplicates stimuli, which makes every replicate look more aligned than the data
    when there are fewer stimuli than features (n < p, the usual case for sentence-level audits), so its
    intervals are then one-sided; the jackknife never duplicates a stimulus. ``n_boot`` (bootstrap) or
    ``n_folds`` (jackknife) = 0 and ``n_perm`` = 0 turn the intervals / p-values off (NaN).

    ``estimator="corrected"`` (default) reports the bias-aware estimators of
    :mod:`repgeo.metrics.estimators` (cross-fitted nuclear norm for Procrustes / NBS, U-statistic FG, debiased
    CKA, held-out projection-MSE; rows of a stimulus stay in one fold); ``"plugin"`` the plug-in formulas.
    Intervals of a corrected value are its value ± z·SE with the jackknife (or bootstrap) SE of the plug-in
    estimator -- except held-out projection-MSE, whose SE is the jackknife over stimuli of its per-stimulus
    residual ratio -- so they omit the correction's own variance.

    ``p_value`` (one-sided permutation test, student rows shuffled ``n_perm`` times) tests the plug-in statistic:
    a valid test whatever the statistic, and cheap -- except the held-out projection-MSE of a cell whose in-sample
    fit is exact (student width q >= n - 1: the plug-in is 0 under every permutation), which tests the held-out
    statistic itself. ``floor``: the reported estimator's mean over the first ``n_floor`` permutations
    (``min(n_floor, n_perm)``; NaN when ``n_perm = 0``): the value a student with the stimulus pairing broken
    gets. Diagnostics (``n``, ``p``, ``q``, effective ranks, ``flag``): :mod:`repgeo.audit.diagnostics`.
    """
    check_metrics(metrics)
    _check_options(estimator, center, normalize, n_floor, ci, ci_method)
    data = _inputs(teacher, student, cells, groups, metrics)
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    resampled = n_perm > 0 or (n_folds if ci_method == "jackknife" else n_boot) > 0
    est = _estimates(data, metrics, estimator, resampled, seed, center, normalize)
    timings["point"], t0 = time.perf_counter() - t0, time.perf_counter()
    reps = _replicates(data, metrics, est, ci_method, n_folds, n_boot, rng)
    timings[ci_method], t0 = time.perf_counter() - t0, time.perf_counter()
    null = _null(data, metrics, est, n_perm, n_floor, rng)
    timings["permutation+floor"] = time.perf_counter() - t0
    df = pd.DataFrame(_rows(data, metrics, est, reps, null, ci, ci_method), columns=COLUMNS)
    df.attrs.update(
        teacher_layers=list(dict.fromkeys(c[0] for c in data.cells)),
        student_layers=list(dict.fromkeys(c[1] for c in data.cells)),
        metrics=list(metrics), n_rows=data.n, n_stimuli=int(np.unique(data.groups).size),
        uncertainty=("delete-one-fold jackknife over stimuli (normal interval)" if ci_method == "jackknife"
                     else "bootstrap (bias-corrected percentile, stimuli resampled)")
        + " + permutation null (student rows shuffled)",
        p_value_statistic="plug-in, except held-out projection-MSE where the in-sample fit is exact (q >= n - 1)",
        estimator=estimator, n_floor=min(n_floor, n_perm), ci=ci, n_boot=n_boot, n_perm=n_perm, seed=seed,
        center=center, normalize=normalize, timings=timings,
    )
    return df
