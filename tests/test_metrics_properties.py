"""Invariances, non-invariances and axioms of every metric, as properties over random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repgeo
from repgeo.metrics import available, get

SYMMETRIC = ["procrustes", "procrustes_angular", "nbs", "bures", "fg", "cka", "cka_debiased", "cka_rbf"]


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


TRANSFORMS = {
    "orthogonal": lambda rng, Y: Y @ random_orthogonal(rng, Y.shape[1]),
    "permutation": lambda rng, Y: Y[:, rng.permutation(Y.shape[1])],
    "isotropic_scale": lambda rng, Y: 7.3 * Y,
    "anisotropic_scale": lambda rng, Y: Y * np.exp(rng.normal(size=Y.shape[1])),
    "invertible_linear": lambda rng, Y: Y @ (np.eye(Y.shape[1]) + 0.8 * rng.normal(size=(Y.shape[1],) * 2)),
    "translation": lambda rng, Y: Y + 10 * rng.normal(size=Y.shape[1]),
}

seeds = st.integers(0, 2**31 - 1)
shapes = st.tuples(st.integers(6, 40), st.integers(2, 12), st.integers(2, 12))


def pair(seed: int, n: int, p: int, q: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, q)) + 0.5 * rng.normal(size=(n, q))
    return rng, X, Y


def rounding_tol(name: str, regressor: np.ndarray, default: float) -> float:
    """Absolute tolerance for a value that is exact in real arithmetic. Projection-MSE solves normal equations,
    so its documented accuracy is about ``eps * cond(Y)^2`` for the centred regressor Y (the student)."""
    if name != "proj_mse":
        return default
    cond = np.linalg.cond(regressor - regressor.mean(0))
    return max(default, 10 * np.finfo(float).eps * cond**2)


DECLARED = [(name, t) for name in available() for t in sorted(get(name).invariances)]


@pytest.mark.parametrize(("name", "transform"), DECLARED)
@settings(max_examples=15, deadline=None)
@given(seed=seeds, shape=shapes)
def test_declared_invariances_hold(name, transform, seed, shape):
    rng, X, Y = pair(seed, *shape)
    spec = get(name)
    Y2 = TRANSFORMS[transform](rng, Y)
    tol = max(rounding_tol(name, Y, 1e-9), rounding_tol(name, Y2, 1e-9))
    assert spec(X, Y2) == pytest.approx(spec(X, Y), rel=1e-7, abs=tol)


@pytest.mark.parametrize("name", ["procrustes", "procrustes_angular", "nbs", "fg", "cka", "cka_debiased", "cka_rbf"])
@pytest.mark.parametrize("transform", ["invertible_linear", "anisotropic_scale"])
def test_geometric_metrics_see_non_orthogonal_maps(name, transform):
    """The counter-property: a non-orthogonal map changes every metric except projection-MSE."""
    _, X, Y = pair(3, 60, 8, 8)
    spec = get(name)
    assert transform not in spec.invariances
    changed = [abs(spec(X, TRANSFORMS[transform](np.random.default_rng(s), Y)) - spec(X, Y)) for s in range(3)]
    assert max(changed) > 1e-3


def test_proj_mse_is_blind_to_invertible_maps_of_the_student_but_not_of_the_teacher():
    rng, X, Y = pair(5, 80, 6, 9)
    M = np.eye(6) + rng.normal(size=(6, 6))
    N = np.eye(9) + rng.normal(size=(9, 9))
    assert repgeo.proj_mse(X, Y @ N) == pytest.approx(repgeo.proj_mse(X, Y), rel=1e-8)
    assert abs(repgeo.proj_mse(X @ M, Y) - repgeo.proj_mse(X, Y)) > 1e-3


@pytest.mark.parametrize("name", SYMMETRIC)
@settings(max_examples=20, deadline=None)
@given(seed=seeds, shape=shapes)
def test_symmetry(name, seed, shape):
    _, X, Y = pair(seed, *shape)
    spec = get(name)
    assert spec(X, Y) == pytest.approx(spec(Y, X), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", available())
@settings(max_examples=20, deadline=None)
@given(seed=seeds, shape=shapes)
def test_identical_inputs_are_a_perfect_match(name, seed, shape):
    _, X, _ = pair(seed, *shape)
    spec = get(name)
    value = spec(X, X.copy())
    best = spec.bounds[1] if spec.kind == "similarity" else 0.0
    sqrt_of_eps = name in ("procrustes", "bures", "procrustes_angular", "fg")  # values are square roots
    assert value == pytest.approx(best, abs=2e-7 if sqrt_of_eps else rounding_tol(name, X, 1e-9))
    assert spec.loss(X, X.copy()) == pytest.approx(0.0, abs=rounding_tol(name, X, 1e-12))


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n=st.integers(5, 30), widths=st.tuples(*[st.integers(1, 10)] * 3))
def test_angular_procrustes_triangle_inequality(seed, n, widths):
    rng = np.random.default_rng(seed)
    A, B, C = (rng.normal(size=(n, w)) for w in widths)
    d = lambda U, V: repgeo.procrustes(U, V, kind="angular")  # noqa: E731
    assert d(A, C) <= d(A, B) + d(B, C) + 1e-9


@pytest.mark.parametrize("name", available())
@settings(max_examples=25, deadline=None)
@given(seed=seeds, shape=shapes, scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8, 1e30]))
def test_values_lie_in_the_documented_range(name, seed, shape, scale):
    rng = np.random.default_rng(seed)
    n, p, q = shape
    X, Y = scale * rng.normal(size=(n, p)), scale * rng.normal(size=(n, q))
    spec = get(name)
    value = spec(X, Y)
    lo, hi = spec.bounds
    assert np.isfinite(value) and lo <= value <= hi


def test_procrustes_and_fg_vanish_together_under_a_partial_isometry():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    Q = np.linalg.qr(rng.normal(size=(9, 5)))[0]  # 9 x 5, orthonormal columns
    Y = X @ Q.T  # a wider student, same geometry
    assert repgeo.procrustes(X, Y) == pytest.approx(0, abs=2e-7)
    assert repgeo.fg(X, Y) == pytest.approx(0, abs=2e-7)
    assert repgeo.cka(X, Y) == pytest.approx(1, abs=1e-12)
