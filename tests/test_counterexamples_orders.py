"""Orders of blindness (eps sweeps and fitted slopes) and mutation tests: every certificate fails when its
construction is changed in the way its claims say matters."""

from __future__ import annotations

import numpy as np
import pytest

import repgeo.counterexamples.projection as projection_module
import repgeo.counterexamples.theorem1 as theorem1_module
from repgeo.counterexamples import (
    cka_antiparallel,
    cka_dominant_direction,
    cka_theorem1_prediction,
    cka_translation,
    procrustes_fg_equivalence,
    projection_invertible,
    projection_minibatch,
)
from repgeo.counterexamples._core import standardise
from repgeo.counterexamples.certificate import single_threaded
from repgeo.counterexamples.orders import EPS_GRID, ORDER_TOL, distances, order_claims, orders, slope, sweep


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _failed(cx) -> list[str]:
    return [c.statement for c in cx.claims() if not c.passed]


# ------------------------------------------------------------------------------------------- the sweeps


def test_slope_recovers_a_power_law_and_orders_flag_blindness():
    e = np.array(EPS_GRID)
    assert slope(e, 3.0 * e**2) == pytest.approx(2.0, abs=1e-12)
    assert slope(e, 0.5 * e**0.5) == pytest.approx(0.5, abs=1e-12)
    assert np.isnan(slope(e, np.r_[0.0, e[1:]]))
    assert EPS_GRID[0] == pytest.approx(0.01) and EPS_GRID[-1] == pytest.approx(0.3) and len(EPS_GRID) == 8
    X = standardise(np.random.default_rng(0).normal(size=(30, 5)))
    table = sweep(lambda eps: (X, X))
    assert all(np.isnan(v) for v in orders(table).values())
    claims = order_claims(table, {"fg": None, "procrustes": 1.0}, "X vs X")
    assert claims[0].passed and not claims[1].passed  # blind: a claimed first order fails


def test_distances_are_the_documented_forms():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 6)), rng.normal(size=(20, 4))
    d = distances(X, Y)
    from repgeo.metrics import get

    assert d["cka"] == pytest.approx(np.sqrt(2 * (1 - float(get("cka").fn(X, Y)))), rel=1e-12)
    assert d["cka_debiased"] == pytest.approx(np.sqrt(2 * (1 - float(get("cka_debiased").fn(X, Y)))), rel=1e-12)
    assert d["projection"] == pytest.approx(np.sqrt(float(get("proj_mse").fn(X, Y))), rel=1e-12)
    assert d["procrustes"] == pytest.approx(float(get("procrustes").fn(X, Y)), rel=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"n": 40, "m": 3, "p": 8, "q": 2}, {"n": 200, "m": 60, "p": 80, "seed": 3}])
def test_theorem1_orders(kwargs):
    """The issue's number: over eps in [0.01, 0.3], D_P slope 1, D_FG and sqrt(2(1 - CKA)) slope 2 (+-0.15),
    debiased CKA blind; the sweep's D_P and D_FG are the closed forms."""
    cx = cka_antiparallel(**kwargs)
    table = cx.data["orders"]
    fitted = orders(table)
    assert abs(fitted["procrustes"] - 1) <= ORDER_TOL and abs(fitted["projection"] - 1) <= ORDER_TOL
    assert abs(fitted["fg"] - 2) <= ORDER_TOL and abs(fitted["cka"] - 2) <= ORDER_TOL
    assert np.isnan(fitted["cka_debiased"])
    n, m = cx.params["n"], cx.params["m"]
    for row in table.itertuples():
        pred = cka_theorem1_prediction(n, m, row.eps)
        assert row.procrustes == pytest.approx(pred["procrustes"], abs=1e-9)
        assert row.fg == pytest.approx(pred["fg"], abs=1e-9)


def test_the_theorem1_ratio_cka_distance_to_fg_stays_bounded():
    """The issue's observation: sqrt(2(1 - CKA)) / D_FG is ~ constant over eps (same order), D_P / D_FG ~ 1/eps."""
    table = cka_antiparallel().data["orders"]
    ratio = table["fg"] / table["cka"]
    assert ratio.max() / ratio.min() < 1.05
    assert (table["procrustes"] / table["fg"]).iloc[0] > 10 * (table["procrustes"] / table["fg"]).iloc[-1]


# ------------------------------------------------------------------------------------------ mutations

_THEOREM1_ARRAYS = theorem1_module._theorem1_arrays  # the original, before a test replaces it


def _theorem1_shared_direction(n, p, q, m, eps, seed):
    """Theorem 1 with one perturbation direction e shared by all m moved points (not one each)."""
    rng = np.random.default_rng(seed)
    s = np.repeat([1.0, -1.0], n // 2)
    v, e = np.linalg.qr(rng.normal(size=(p, 2)))[0].T
    a = np.outer(s, v)
    b = a.copy()
    b[rng.choice(n, size=m, replace=False)] += eps * e
    c = np.outer(s, np.eye(q)[0])
    return {"a": standardise(a), "b": standardise(b), "c": standardise(c)}


def _theorem1_along_v(n, p, q, m, eps, seed):
    """Theorem 1 with the points moved along v itself (not orthogonally to it)."""
    A = _THEOREM1_ARRAYS(n, p, q, m, 0.0, seed)
    raw = A["a"] * np.sqrt(n)  # +-v rows (standardise divided by sqrt n)
    moved = np.arange(m)
    raw[moved] *= 1 + eps
    return {"a": A["a"], "b": standardise(raw), "c": A["c"]}


def test_mutation_shared_direction_breaks_theorem1(monkeypatch):
    monkeypatch.setattr(theorem1_module, "_theorem1_arrays", _theorem1_shared_direction)
    failed = _failed(cka_antiparallel())
    assert "debiased CKA(a,c) - debiased CKA(b,c) = 0 exactly" in failed
    assert any("sqrt(2(1 - debiased CKA)) blind" in f for f in failed)


def test_mutation_parallel_perturbation_breaks_the_orders(monkeypatch):
    monkeypatch.setattr(theorem1_module, "_theorem1_arrays", _theorem1_along_v)
    failed = _failed(cka_antiparallel())
    assert any(f.startswith("order of D_FG") for f in failed)  # now first order, like D_P
    assert any(f.startswith("order of sqrt(2(1 - CKA))") for f in failed)


def test_mutation_orthogonal_student_breaks_theorem2(monkeypatch):
    original = projection_module._projection_pair

    def orthogonal_map(n, p, q, cond, seed):
        X, _, M = original(n, p, q, cond, seed)
        Q = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, q)))[0]  # Y = X Q: an isometry of X's span
        return X, standardise(X @ Q), M

    monkeypatch.setattr(projection_module, "_projection_pair", orthogonal_map)
    failed = _failed(projection_invertible(n=80, p=16))
    assert "Procrustes D_P(X, Y) = closed form (grows with cond)" in failed
    assert "the fitted W is not orthogonal: cond(W) = cond" in failed
    assert any(f.startswith("order of D_P") for f in failed)


def test_mutation_rank_deficient_student_breaks_the_minibatch_case():
    cx = projection_minibatch(n=32, p=64, q=128)
    assert cx.holds()
    rng = np.random.default_rng(0)
    cx.Y = cx.arrays["Y"] = standardise(rng.normal(size=(32, 16)) @ rng.normal(size=(16, 128)))  # rank 16 < 31
    assert "proj_mse(X, noise) = 0" in _failed(cx)


def test_mutation_partial_translation_breaks_the_translation_case():
    cx = cka_translation()
    Y = cx.Y.copy()
    Y[::2] -= Y.mean(axis=0)  # only half the rows translated: no longer a translation
    cx.Y = cx.arrays["Y"] = Y
    assert "CKA(X, X + 1b^T) = 1" in _failed(cx)


def test_mutation_unshared_direction_breaks_the_dominant_direction_case():
    cx = cka_dominant_direction(n=300, p=16, q=12)
    rng = np.random.default_rng(5)
    pairs = cx.data["pairs"]
    for rho, (X, Y) in pairs.items():  # the student's big direction no longer the teacher's
        Y = Y.copy()
        Y[:, 0] = rng.permutation(Y[:, 0])
        pairs[rho] = (X, standardise(Y))
    assert any(f.startswith("slope of log(1 - CKA)") for f in _failed(cx))


def test_mutation_non_isometry_and_swapped_pairs_break_the_equivalence_case():
    cx = procrustes_fg_equivalence()
    A = cx.arrays
    A["XQ"] = standardise(A["XQ"] * np.linspace(0.5, 2.0, A["XQ"].shape[1]))
    A["near_a"], A["near_b"] = A["near_b"], A["near_a"]
    failed = _failed(cx)
    assert "D_P = 0 for a (partial) isometry" in failed
    assert "near-zero pairs: D_P(B) / D_P(A) > 1" in failed
