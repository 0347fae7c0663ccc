"""Fuzzing every registered metric on both backends: each output is finite and in range, or a clear error.

Shapes from 2 rows up (p != q, n < p and n >> p), scales from 1e-30 to 1e30, rank-deficient and near-duplicate
rows, repeated singular values, constant columns, float16/bfloat16/float32/float64, non-contiguous and
transposed arrays. ``pytest --slow`` multiplies the budgets by 20.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repgeo.metrics import available, get

from .conftest import slow_mode

BUDGET = 20 if slow_mode() else 1
CLEAR_ERRORS = (ValueError, TypeError, FloatingPointError)
STRUCTURES = ["generic", "rank_one", "near_duplicate_rows", "repeated_singular_values", "constant_column",
              "identical"]


def build(seed: int, n: int, p: int, q: int, structure: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = rng.normal(size=(n, q))
    if structure == "rank_one":
        Y = np.outer(rng.normal(size=n), rng.normal(size=q))
    elif structure == "near_duplicate_rows":
        X[n // 2 :] = X[: n - n // 2] + 1e-9 * rng.normal(size=(n - n // 2, p))
        Y[n // 2 :] = Y[: n - n // 2]
    elif structure == "repeated_singular_values":
        u, _, vt = np.linalg.svd(X, full_matrices=False)
        X = u @ vt
        Y = X[:, : min(p, q)] if q <= p else np.hstack([X, np.zeros((n, q - p))])
    elif structure == "constant_column":
        X[:, 0] = 3.0
        Y[:, -1] = -1.0
    elif structure == "identical":
        Y = X.copy()
    return scale * X, scale * Y


def layout(A, kind: str):
    if kind == "transposed":  # same values, Fortran order / transposed strides
        return A.T.copy().T if isinstance(A, np.ndarray) else A.T.contiguous().T
    if kind == "strided":  # every other column of a wider array
        wide = np.repeat(A, 2, axis=1) if isinstance(A, np.ndarray) else A.repeat_interleave(2, dim=1)
        return wide[:, ::2]
    return A


def check(name: str, X, Y) -> None:
    spec = get(name)
    try:
        value = spec(X, Y)
    except CLEAR_ERRORS as exc:
        assert str(exc), "an error must say what is wrong"
        return
    v = float(value)
    lo, hi = spec.bounds
    assert np.isfinite(v), f"{name} returned {v}"
    assert lo <= v <= hi, f"{name} = {v} outside [{lo}, {hi}]"


fuzz_settings = settings(max_examples=30 * BUDGET, deadline=None, suppress_health_check=[HealthCheck.too_slow])
shape = st.tuples(st.integers(2, 40), st.integers(1, 24), st.integers(1, 24))
scales = st.sampled_from([1e-30, 1e-12, 1e-3, 1.0, 1e3, 1e12, 1e30])


@pytest.mark.parametrize("name", available())
@fuzz_settings
@given(seed=st.integers(0, 2**32 - 1), shape=shape, structure=st.sampled_from(STRUCTURES), scale=scales,
       dtype=st.sampled_from(["float64", "float32"]), kind=st.sampled_from(["plain", "transposed", "strided"]))
def test_numpy_backend(name, seed, shape, structure, scale, dtype, kind):
    X, Y = build(seed, *shape, structure, scale)
    check(name, layout(X.astype(dtype), kind), layout(Y.astype(dtype), kind))


TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("name", available())
@fuzz_settings
@given(seed=st.integers(0, 2**32 - 1), shape=shape, structure=st.sampled_from(STRUCTURES), scale=scales,
       dtype=st.sampled_from(list(TORCH_DTYPES)), kind=st.sampled_from(["plain", "transposed", "strided"]))
def test_torch_backend(name, seed, shape, structure, scale, dtype, kind):
    X, Y = build(seed, *shape, structure, scale)
    Xt, Yt = torch.tensor(X).to(TORCH_DTYPES[dtype]), torch.tensor(Y).to(TORCH_DTYPES[dtype])
    check(name, layout(Xt, kind), layout(Yt, kind))


def degenerate_minibatches(rng: np.random.Generator, count: int):
    kinds = ["identical", "constant_rows", "rank_one", "two_rows", "duplicate_rows"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        n, p, q = int(rng.integers(2, 12)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
        X, Y = rng.normal(size=(n, p)), rng.normal(size=(n, q))
        if kind == "identical":
            Y = X.copy()
        elif kind == "constant_rows":  # every row the same vector plus a tiny spread
            X = np.tile(rng.normal(size=p), (n, 1)) + 1e-3 * rng.normal(size=(n, p))
        elif kind == "rank_one":
            Y = np.outer(rng.normal(size=n), rng.normal(size=q))
        elif kind == "two_rows":
            X, Y = X[:2], Y[:2]
        elif kind == "duplicate_rows":
            X[1:] = X[0]
            X[-1] += 1.0
        yield kind, X, Y


@pytest.mark.parametrize("name", available())
def test_loss_gradients_finite_on_degenerate_minibatches(name):
    """1,000 degenerate minibatches per loss (10,000 under --slow): a finite gradient or a clear error."""
    spec = get(name)
    rng = np.random.default_rng(2024)
    finite = 0
    for kind, X, Y in degenerate_minibatches(rng, 1000 * (10 if slow_mode() else 1)):
        Xt = torch.tensor(X, requires_grad=True)
        Yt = torch.tensor(Y, requires_grad=True)
        try:
            loss = spec.loss(Xt, Yt)
        except CLEAR_ERRORS:
            continue
        gx, gy = torch.autograd.grad(loss, (Xt, Yt))
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all(), (name, kind, X, Y)
        finite += 1
    # non-vacuous: many are defined, not refused (debiased CKA refuses n < 4, e.g. every two-row batch)
    assert finite > 400 * (10 if slow_mode() else 1)
