"""The fast paths of the metrics core give the same numbers as the plain formulas.

Lazy centring (column means folded into the statistics as rank-one corrections instead of a centred copy) is
taken while the means carry at most ``LAZY_CENTER_MAX_ENERGY_RATIO`` times the centred energy; its stated
rounding bound (repgeo.metrics._prep) and its agreement with a centred-copy reference are checked here.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import repgeo
from repgeo.metrics._prep import LAZY_CENTER_MAX_ENERGY_RATIO, preprocess_scaled_sq


def with_means(n: int, p: int, energy_ratio: float, seed: int) -> np.ndarray:
    """Power-law-spectrum rows plus column means with ``||X||^2 / ||X_c||^2 = energy_ratio`` (in expectation)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p)) * np.arange(1, p + 1) ** -0.8
    A -= A.mean(axis=0)
    mean = rng.standard_normal(p)
    mean *= np.sqrt((energy_ratio - 1) * np.sum(A * A) / n / (mean @ mean))
    return A + mean


def reference_nuclear(X: np.ndarray, Y: np.ndarray) -> float:
    """``||X_c^T Y_c||_* / (||X_c|| ||Y_c||)`` from explicitly centred copies (scipy's SVD)."""
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    C = (Xc / np.linalg.norm(Xc)).T @ (Yc / np.linalg.norm(Yc))
    return float(np.sum(scipy.linalg.svdvals(C)))


@pytest.mark.parametrize("ratio", [1.5, 10.0, 90.0])
def test_lazy_centring_meets_its_stated_bound(ratio):
    n, p, q = 3000, 40, 60
    X = with_means(n, p, ratio, seed=1)
    Y = np.concatenate([X[:, :20], with_means(n, q - 20, ratio, seed=2)], axis=1)
    Y[:, :20] += 0.1 * np.random.default_rng(3).standard_normal((n, 20))
    for A in (X, Y):  # the lazy path is the one taken
        _, mean, _, _ = preprocess_scaled_sq(A, "A", center=True, normalize="frobenius")
        assert mean is not None
    rx = np.sum(X * X) / np.sum((X - X.mean(0)) ** 2)
    ry = np.sum(Y * Y) / np.sum((Y - Y.mean(0)) ** 2)
    assert rx == pytest.approx(ratio, rel=0.2)
    got = float(repgeo.nbs(X, Y))
    want = reference_nuclear(X, Y)
    eps = np.finfo(np.float64).eps
    gamma = n * eps / (1 - n * eps)
    bound = np.sqrt(min(p, q)) * gamma * np.sqrt(rx * ry)
    assert abs(got - want) <= bound
    assert abs(got - want) <= 1e-12  # the observed error, far inside the worst case
    d2 = float(repgeo.procrustes(X, Y, kind="squared"))
    assert d2 == pytest.approx(2 - 2 * want, abs=1e-12)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for name in ("cka", "fg", "proj_mse"):
        assert float(repgeo.get(name)(X, Y)) == pytest.approx(float(repgeo.get(name)(Xc, Yc)), abs=1e-11)


def test_large_means_take_the_centred_copy_and_stay_accurate():
    ratio = 100 * LAZY_CENTER_MAX_ENERGY_RATIO
    X = with_means(2000, 30, ratio, seed=4)
    Y = with_means(2000, 50, ratio, seed=5) + X[:, :1]
    _, mean, _, sq = preprocess_scaled_sq(X, "X", center=True, normalize="frobenius")
    assert mean is None
    assert sq == pytest.approx(np.sum((X - X.mean(0)) ** 2), rel=1e-12)
    assert float(repgeo.nbs(X, Y)) == pytest.approx(reference_nuclear(X, Y), abs=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_nan_is_still_named_when_the_check_rides_on_the_norm():
    X = np.random.default_rng(0).standard_normal((20, 5))
    X[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(1 value\(s\); the first at row 7, column 3\)"):
        repgeo.procrustes(X, np.ones((20, 4)) + np.arange(20)[:, None])
    big = np.full((20, 5), 1e200) * np.random.default_rng(1).standard_normal((20, 5))  # squares overflow, finite
    assert 0 <= float(repgeo.procrustes(big, big[:, :4])) <= np.sqrt(2)


@pytest.mark.parametrize("center", [True, False])
def test_debiased_cka_from_row_terms_matches_the_n_by_n_estimator(center):
    """Song et al.'s HSIC_u on explicit Gram matrices (zeroed diagonals) against the O(n (p + q)) route."""
    n = 300
    X = with_means(n, 20, 10.0, seed=6)
    Y = X[:, :10] @ np.random.default_rng(7).standard_normal((10, 15)) + with_means(n, 15, 10.0, seed=8)
    A, B = (M - M.mean(0) if center else M for M in (X, Y))
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)

    def hsic_u(K: np.ndarray, L: np.ndarray) -> float:
        K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        value = np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        return (value - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

    K, L = A @ A.T, B @ B.T
    want = hsic_u(K, L) / np.sqrt(hsic_u(K, K) * hsic_u(L, L))
    got = float(repgeo.cka(X, Y, debiased=True, center=center))
    assert got == pytest.approx(want, abs=1e-12)


def matrix_with_spectrum(p: int, q: int, sv: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((p, len(sv))))
    V, _ = np.linalg.qr(rng.standard_normal((q, len(sv))))
    return (U * sv) @ V.T


SPECTRA = {
    "decaying": lambda k: np.geomspace(1.0, 1e-6, k),
    "rank_half": lambda k: np.concatenate([np.linspace(1.0, 0.1, k // 2), np.zeros(k - k // 2)]),
    "repeated": lambda k: np.ones(k),
    "one_big": lambda k: np.concatenate([[1e4], np.full(k - 1, 1e-3)]),
}


@pytest.mark.parametrize("shape", [(48, 32), (32, 48)])
@pytest.mark.parametrize("spectrum", sorted(SPECTRA))
def test_float32_nuclear_norm_eigenvalue_route_meets_its_bound(spectrum, shape):
    torch = pytest.importorskip("torch")
    from repgeo.metrics._xp import nuclear_norm

    p, q = shape
    k = min(p, q)
    sv = SPECTRA[spectrum](k)
    M32 = torch.tensor(matrix_with_spectrum(p, q, sv, seed=k), dtype=torch.float32)
    exact = float(np.sum(scipy.linalg.svdvals(M32.double().numpy())))  # of the float32 matrix itself
    got = float(nuclear_norm(torch, M32))
    # the stated bound: k sqrt(c k eps64) sigma_1 (c = 16), plus the float32 rounding of the result
    bound = k * np.sqrt(16 * k * np.finfo(np.float64).eps) * sv.max() + 4 * np.finfo(np.float32).eps * exact
    assert abs(got - exact) <= bound
    # and the float32 SVD (the route it replaces) is no closer to the exact value than the bound allows
    assert abs(float(torch.linalg.svdvals(M32).sum()) - exact) <= bound


def test_float32_nuclear_norm_gradient_is_the_polar_factor_batched():
    torch = pytest.importorskip("torch")
    from repgeo.metrics._xp import nuclear_norm

    g = torch.Generator().manual_seed(0)
    M = torch.randn(3, 40, 25, generator=g)  # a batch of generic (full-rank) matrices
    M.requires_grad_(True)
    nuc = nuclear_norm(torch, M)
    assert nuc.shape == (3,)
    (nuc * torch.tensor([1.0, 2.0, -0.5])).sum().backward()
    for i, w in enumerate((1.0, 2.0, -0.5)):
        U, S, Vh = torch.linalg.svd(M[i].detach().double(), full_matrices=False)
        assert float(nuc[i].detach()) == pytest.approx(float(S.sum()), rel=1e-6)
        torch.testing.assert_close(M.grad[i].double(), w * U @ Vh, atol=2e-6, rtol=0)


def test_float32_procrustes_loss_matches_float64_value_and_gradient():
    torch = pytest.importorskip("torch")
    X = torch.tensor(with_means(600, 30, 5.0, seed=7))
    Y = torch.tensor(with_means(600, 20, 5.0, seed=8)) + 0.5 * X[:, :20]
    grads = {}
    for dtype in (torch.float64, torch.float32):
        Yd = Y.to(dtype).detach().requires_grad_(True)
        value = repgeo.procrustes(X.to(dtype), Yd, kind="squared")
        value.backward()
        grads[dtype] = (float(value.detach()), Yd.grad.double())
    assert grads[torch.float32][0] == pytest.approx(grads[torch.float64][0], rel=1e-5)
    scale = grads[torch.float64][1].abs().max()
    torch.testing.assert_close(grads[torch.float32][1], grads[torch.float64][1], atol=1e-4 * float(scale), rtol=0)


def test_gram_with_one_gemm_backward_matches_autograd():
    torch = pytest.importorskip("torch")
    from repgeo.metrics._xp import gram

    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 7, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(7, 7, generator=g, dtype=torch.float64)  # not symmetric: both halves of the rule are used
    (gram(A) * W).sum().backward()
    B = A.detach().clone().requires_grad_(True)
    ((B.T @ B) * W).sum().backward()
    torch.testing.assert_close(A.grad, B.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(gram(A).detach(), B.T.detach() @ B.detach(), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(gram, (A.detach().clone()[:8, :4].requires_grad_(True),))


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_float32_nuclear_norm_of_a_list_isolates_a_non_finite_matrix_without_host_reads(bad_value):
    """A list of equally shaped float32 matrices (one per layer pair) is stacked by the float64 cast. Inside
    deferred_checks a matrix with a NaN or Inf entry gets a NaN norm and no gradient, the others keep their exact
    values and polar-factor gradients, and nothing is read back to the host (the test reads only C's trace)."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    from repgeo.metrics._xp import nuclear_norm
    from repgeo.metrics.stats import deferred_checks

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(30, 18, generator=g).requires_grad_(True) for _ in range(3)]  # tall
    wide = [m.detach().mT.contiguous().requires_grad_(True) for m in mats]  # the same matrices, wide
    with torch.no_grad():
        poisoned = mats[1].detach().clone()
        poisoned[4, 7] = bad_value
    mats[1] = poisoned.requires_grad_(True)
    with deferred_checks(), CountReads():
        nuc = nuclear_norm(torch, mats)
        (nuc * torch.tensor([1.0, 3.0, 2.0])).sum().backward()  # a NaN total, as a poisoned loss is
    assert CountReads.reads == 0
    assert nuc.shape == (3,) and torch.isnan(nuc[1])
    assert torch.equal(mats[1].grad, torch.zeros_like(mats[1]))
    for i, w in ((0, 1.0), (2, 2.0)):
        U, S, Vh = torch.linalg.svd(mats[i].detach().double(), full_matrices=False)
        assert float(nuc[i].detach()) == pytest.approx(float(S.sum()), rel=1e-6)
        torch.testing.assert_close(mats[i].grad.double(), w * U @ Vh, atol=2e-6, rtol=0)
    # the list route equals the batched-tensor route, in either orientation
    stacked = torch.stack([m.detach() for m in wide])
    torch.testing.assert_close(nuclear_norm(torch, wide), nuclear_norm(torch, stacked))
    torch.testing.assert_close(nuclear_norm(torch, wide)[[0, 2]], nuc.detach()[[0, 2]])
