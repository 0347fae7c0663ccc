"""Debiased linear CKA on float32 tensors: float32 products on centred rows against a float64 reference.

The float64 reference is the same estimator on the same float32 inputs cast to float64 (so the error measured is
the computation's alone); the error estimate checked is the one stated in
:func:`repgeo.metrics.cka._cka_debiased_float32`: ``sqrt(n) u32 max(<K, K> / N_KK, <L, L> / N_LL)`` with
``N_KK = n (n - 3) HSIC_u(K, K)`` for the centred, normalised inputs (and the worst-case first-order bound
``4 g_n max(rho_K, rho_L)``, ``rho_K = ||K||_F tr(K) / N_KK``, which must hold everywhere).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import repgeo
from repgeo.metrics.cka import hsic_unbiased_from_rows

U32 = 2.0**-24  # float32 unit roundoff
N, P, Q = 2048, 192, 96  # token-like: n well above the widths


def _hsic_u64(A: np.ndarray, B: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) from explicit n x n Gram matrices, float64."""
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    value = np.sum(K * L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ K @ L @ one)
    return value / (n * (n - 3))


def _ratios(M: np.ndarray) -> tuple[float, float]:
    """``(<K,K> / N_KK, ||K||_F tr(K) / N_KK)`` for the centred, Frobenius-normalised M, in float64."""
    A = M - M.mean(0)
    A = A / np.linalg.norm(A)
    n = A.shape[0]
    kk = np.sum((A.T @ A) ** 2)
    d = np.sum(A * A, axis=1)
    nkk = hsic_unbiased_from_rows(np, kk, d, d, A @ A.sum(0), A @ A.sum(0))
    return kk / (n * (n - 3) * nkk), np.sqrt(kk) / (n * (n - 3) * nkk)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((N, P))
    W = rng.standard_normal((P, Q)) / np.sqrt(P)
    mx, my = 10 * rng.standard_normal(P), 10 * rng.standard_normal(Q)  # column means ~10x the spread
    Z, Z2 = rng.standard_normal((N, 8)), rng.standard_normal((N, 8))
    low_x = Z @ rng.standard_normal((8, P)) + 1e-3 * rng.standard_normal((N, P)) + mx
    R = np.linalg.qr(rng.standard_normal((P, P)))[0]
    spiky_x, spiky_y = X + mx, X @ W + 0.5 * rng.standard_normal((N, Q)) + my
    spiky_x[::128, :3] += 300.0  # one "massive activation" row per 128-token sequence
    spiky_y[::128, :2] += 200.0
    spiky_x[5, :3] += 3000.0  # and one extreme row
    return {
        "random_independent": (X, rng.standard_normal((N, Q))),
        "random_linear_map": (X, X @ W + 0.5 * rng.standard_normal((N, Q))),
        "means_10x_independent": (X + mx, rng.standard_normal((N, Q)) + my),
        "means_10x_linear_map": (X + mx, X @ W + 0.5 * rng.standard_normal((N, Q)) + my),
        "low_rank_aligned_near_1": (low_x, Z @ rng.standard_normal((8, Q)) + 1e-3 * rng.standard_normal((N, Q)) + my),
        "low_rank_unrelated_near_0": (low_x, Z2 @ rng.standard_normal((8, Q)) + my),
        "rotation_near_1": (X + mx, (X + mx) @ R + 1e-4 * rng.standard_normal((N, P))),
        "outlier_rows": (spiky_x, spiky_y),
        "n_below_width": (rng.standard_normal((64, P)) + mx, rng.standard_normal((64, Q)) @ np.eye(Q) + my),
    }


CASES = _cases()


def test_unbiased_hsic_is_exactly_invariant_to_translating_the_rows():
    """HSIC_u(K, L) does not change when every row of A (or B) moves by a constant vector (U-centring)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((50, 7)), rng.standard_normal((50, 5))
    shifted = _hsic_u64(A + 3 * rng.standard_normal(7), B + 5 * rng.standard_normal(5))
    assert shifted == pytest.approx(_hsic_u64(A, B), rel=1e-9)  # float64 rounding of the larger shifted Grams


@pytest.mark.parametrize("case", list(CASES))
def test_float32_route_matches_the_float64_reference_within_the_stated_error(case):
    X, Y = (M.astype(np.float32) for M in CASES[case])
    want = float(repgeo.cka(X.astype(np.float64), Y.astype(np.float64), debiased=True))
    got = repgeo.cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=True)
    assert got.dtype == torch.float32
    (rk, rho_k), (rl, rho_l) = _ratios(X.astype(np.float64)), _ratios(Y.astype(np.float64))
    n = X.shape[0]
    typical = math.sqrt(n) * U32 * max(rk, rl)
    g_n = n * U32 / (1 - n * U32)
    err = abs(float(got) - want)
    assert err <= typical, (case, err, typical)
    assert err <= 4 * g_n * max(rho_k, rho_l)
    assert err <= 1e-6  # far inside the 1e-3 that would make the float32 route unusable
    if case.endswith("near_1"):
        assert want > 0.95
    if case.endswith(("near_0", "independent")):
        assert abs(want) < 0.01


@pytest.mark.parametrize("case", ["means_10x_linear_map", "outlier_rows", "low_rank_aligned_near_1"])
def test_float32_gradient_matches_the_float64_gradient(case):
    X, Y = (torch.from_numpy(M.astype(np.float32)) for M in CASES[case])
    grads = []
    for dtype in (torch.float32, torch.float64):
        Xg, Yg = (M.to(dtype).clone().requires_grad_(True) for M in (X, Y))
        (1 - repgeo.cka(Xg, Yg, debiased=True)).backward()
        grads.append((Xg.grad.double(), Yg.grad.double()))
    for g32, g64 in zip(*grads, strict=True):
        assert float(torch.linalg.norm(g32 - g64) / torch.linalg.norm(g64)) < 1e-5


@pytest.mark.parametrize("opts", [dict(center=False), dict(normalize="rows"), dict(normalize=None)])
def test_float32_route_with_uncentred_or_row_normalised_inputs(opts):
    """Row sums K 1 are not small here: they must keep their value and their gradient."""
    rng = np.random.default_rng(5)
    X = (rng.standard_normal((300, 20)) + 1.0).astype(np.float32)
    Y = (X @ rng.standard_normal((20, 12)) + rng.standard_normal((300, 12))).astype(np.float32)
    want = float(repgeo.cka(X.astype(np.float64), Y.astype(np.float64), debiased=True, **opts))
    Yt = torch.from_numpy(Y).requires_grad_(True)
    Y64 = torch.from_numpy(Y).double().requires_grad_(True)
    got = repgeo.cka(torch.from_numpy(X), Yt, debiased=True, **opts)
    assert float(got) == pytest.approx(want, abs=1e-5)
    got.backward()
    repgeo.cka(torch.from_numpy(X).double(), Y64, debiased=True, **opts).backward()
    assert float(torch.linalg.norm(Yt.grad.double() - Y64.grad) / torch.linalg.norm(Y64.grad)) < 1e-4


class _RecordProducts(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.products: list[tuple[str, torch.dtype, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in ("mm", "addmm", "bmm", "mv", "addmv"):
            self.products.append((func.__name__, args[0].dtype, tuple(args[0].shape)))
        return func(*args, **(kwargs or {}))


def test_the_matrix_products_run_in_float32():
    X, Y = (torch.from_numpy(M.astype(np.float32)) for M in CASES["means_10x_linear_map"])
    Y.requires_grad_(True)
    with _RecordProducts() as rec:
        (1 - repgeo.cka(X, Y, debiased=True)).backward()
    assert rec.products, "no matrix product was recorded"
    assert {dtype for _, dtype, _ in rec.products} == {torch.float32}, rec.products


def test_float32_route_refuses_a_self_hsic_at_rounding_level():
    """K proportional to the centring matrix (equal singular values, n <= width): HSIC_u(K, K) = 0."""
    rng = np.random.default_rng(3)
    u, _, vt = np.linalg.svd(rng.normal(size=(41, 56)), full_matrices=False)
    X = torch.from_numpy((u @ vt).astype(np.float32))
    with pytest.raises(ValueError, match="not positive beyond rounding"):
        repgeo.cka(X, torch.from_numpy(rng.normal(size=(41, 18)).astype(np.float32)), debiased=True)


@pytest.mark.parametrize("scale", [1e-12, 1e12])
@pytest.mark.parametrize("shape", [(36, 35, 43), (400, 12, 9)])  # n x n Grams / feature-space products
def test_float32_route_at_extreme_scales(scale, shape):
    """Unnormalised float32 products at 1e-12 (squares ~1e-24) are multiplied only after the cast to float64."""
    n, p, q = shape
    rng = np.random.default_rng(8)
    X = rng.standard_normal((n, p))
    Y = np.hstack([X, rng.standard_normal((n, q))])[:, :q] + 0.1 * rng.standard_normal((n, q))
    X32, Y32 = (scale * X).astype(np.float32), (scale * Y).astype(np.float32)
    want = float(repgeo.cka(X32.astype(np.float64), Y32.astype(np.float64), debiased=True))
    got = float(repgeo.cka(torch.from_numpy(X32), torch.from_numpy(Y32), debiased=True))
    assert abs(want) > 0.1
    assert got == pytest.approx(want, abs=1e-5)


def test_sync_free_loss_gradient_matches_the_float64_gradient():
    """The training loss's path (deferred checks: fused centring, no host reads) gives the float64 gradient too."""
    from repgeo.metrics.stats import deferred_checks

    X, Y = (torch.from_numpy(M.astype(np.float32)) for M in CASES["means_10x_linear_map"])
    grads, values = [], []
    for dtype in (torch.float32, torch.float64):
        Yg = Y.to(dtype).clone().requires_grad_(True)
        with deferred_checks():
            loss = 1 - repgeo.cka(X.to(dtype), Yg, debiased=True)
        loss.backward()
        grads.append(Yg.grad.double())
        values.append(float(loss.detach()))
    assert values[0] == pytest.approx(values[1], abs=1e-6)
    assert float(torch.linalg.norm(grads[0] - grads[1]) / torch.linalg.norm(grads[1])) < 1e-5
