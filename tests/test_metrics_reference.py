"""Metric values against independent references: scipy, scikit-learn and explicit n x n formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import pdist
from sklearn.linear_model import LinearRegression, Ridge

import repgeo
from repgeo.metrics.stats import ArrayStats

from .conftest import related_pair

PREPS = [
    dict(center=True, normalize="frobenius"),
    dict(center=False, normalize="frobenius"),
    dict(center=True, normalize="rows"),
    dict(center=False, normalize="rows"),
    dict(center=True, normalize=None),
]
# (n, p, q): n x n space and feature space, n below and above the widths
SHAPES = [(9, 20, 14), (60, 7, 11), (40, 12, 12), (5, 3, 30)]


def prep(A: np.ndarray, center: bool, normalize: str | None) -> np.ndarray:
    """Independent implementation of the documented preprocessing order."""
    A = np.array(A, dtype=float)
    if center:
        A = A - A.mean(axis=0)
    if normalize == "rows":  # unit rows, each sample weighted 1/n
        A = A / np.linalg.norm(A, axis=1, keepdims=True) / np.sqrt(A.shape[0])
    if normalize == "frobenius":
        A = A / np.linalg.norm(A)
    return A


def padded(A: np.ndarray, width: int) -> np.ndarray:
    return np.pad(A, ((0, 0), (0, width - A.shape[1])))


def psd_sqrt(M: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((M + M.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H))


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, written with explicit n x n matrices."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    term = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return float(term / (n * (n - 3)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", PREPS)
def test_procrustes_matches_scipy_on_zero_padded_inputs(rng, shape, opts):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, **opts), prep(Y, **opts)
    width = max(Xp.shape[1], Yp.shape[1])
    A, B = padded(Xp, width), padded(Yp, width)
    R, _ = scipy.linalg.orthogonal_procrustes(B, A)
    ref = np.linalg.norm(A - B @ R)
    assert repgeo.procrustes(X, Y, **opts) == pytest.approx(ref, abs=1e-10)
    assert repgeo.procrustes(X, Y, kind="squared", **opts) == pytest.approx(ref**2, abs=1e-10)
    cos = np.trace(A.T @ B @ R) / (np.linalg.norm(A) * np.linalg.norm(B))
    assert repgeo.nbs(X, Y, **opts) == pytest.approx(cos, abs=1e-10)
    assert repgeo.procrustes(X, Y, kind="angular", **opts) == pytest.approx(np.arccos(min(cos, 1.0)), abs=1e-7)


@pytest.mark.parametrize("shape", [(12, 5, 7), (8, 20, 3), (15, 6, 6)])
def test_bures_distance_of_gram_matrices_equals_procrustes(rng, shape):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")
    K, L = Xp @ Xp.T, Yp @ Yp.T
    rk = psd_sqrt(K)
    fidelity = np.trace(psd_sqrt(rk @ L @ rk))
    ref = np.sqrt(max(np.trace(K) + np.trace(L) - 2 * fidelity, 0.0))
    assert repgeo.bures(X, Y) == pytest.approx(ref, abs=1e-6)  # eigh square roots of singular PSD: ~sqrt(eps)
    assert repgeo.bures(X, Y) == pytest.approx(repgeo.procrustes(X, Y), abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", PREPS)
def test_fg_matches_explicit_gram_difference(rng, shape, opts):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, **opts), prep(Y, **opts)
    ref = np.linalg.norm(Xp @ Xp.T - Yp @ Yp.T)
    assert repgeo.fg(X, Y, **opts) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert repgeo.fg(X, Y, squared=True, **opts) == pytest.approx(ref**2, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", PREPS)
def test_linear_cka_matches_explicit_hsic(rng, shape, opts):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, **opts), prep(Y, **opts)
    K, L = Xp @ Xp.T, Yp @ Yp.T
    if opts["center"] and opts["normalize"] != "rows":
        ref = hsic_biased(K, L) / np.sqrt(hsic_biased(K, K) * hsic_biased(L, L))
    else:  # uncentred alignment: cosine of the Gram matrices ("rows" centres before the sphere, not after)
        ref = np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))
    assert repgeo.cka(X, Y, **opts) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_debiased_cka_matches_explicit_unbiased_hsic(rng, shape):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")
    K, L = Xp @ Xp.T, Yp @ Yp.T
    ref = hsic_unbiased(K, L) / np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))
    assert repgeo.cka(X, Y, debiased=True) == pytest.approx(ref, rel=1e-9)


def test_debiased_cka_is_near_zero_for_independent_data_where_biased_is_not(rng):
    X, Y = rng.normal(size=(50, 200)), rng.normal(size=(50, 200))
    assert abs(repgeo.cka(X, Y, debiased=True)) < 0.05
    assert repgeo.cka(X, Y) > 0.5  # the biased estimator's known high-dimension bias


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_explicit_kernel_with_median_heuristic(rng, debiased):
    X, Y = related_pair(rng, 30, 6, 9)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")

    def kernel(A):
        d2 = pdist(A, "sqeuclidean")
        s2 = np.median(d2)
        D2 = scipy.spatial.distance.squareform(d2)
        return np.exp(-D2 / (2 * s2))

    K, L = kernel(Xp), kernel(Yp)
    hsic = hsic_unbiased if debiased else hsic_biased
    ref = hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
    assert repgeo.cka(X, Y, kernel="rbf", debiased=debiased) == pytest.approx(ref, rel=1e-9)
    fixed = np.exp(-scipy.spatial.distance.squareform(pdist(Xp, "sqeuclidean")) / (2 * 0.3**2))
    Lf = np.exp(-scipy.spatial.distance.squareform(pdist(Yp, "sqeuclidean")) / (2 * 0.3**2))
    ref_fixed = hsic_biased(fixed, Lf) / np.sqrt(hsic_biased(fixed, fixed) * hsic_biased(Lf, Lf))
    if not debiased:
        assert repgeo.cka(X, Y, kernel="rbf", sigma=0.3) == pytest.approx(ref_fixed, rel=1e-9)


@pytest.mark.parametrize("shape", [(60, 7, 11), (40, 12, 12), (200, 30, 8)])
@pytest.mark.parametrize("opts", PREPS)
def test_proj_mse_matches_sklearn_linear_regression(rng, shape, opts):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, **opts), prep(Y, **opts)
    fit = LinearRegression(fit_intercept=False).fit(Yp, Xp)
    ref = np.sum((fit.predict(Yp) - Xp) ** 2)
    assert repgeo.proj_mse(X, Y, **opts) == pytest.approx(ref, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("ridge", [1e-3, 0.1, 2.0])
def test_proj_mse_ridge_matches_sklearn_ridge(rng, ridge):
    X, Y = related_pair(rng, 80, 10, 14)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")
    fit = Ridge(alpha=ridge, fit_intercept=False, solver="cholesky").fit(Yp, Xp)
    ref = np.sum((fit.predict(Yp) - Xp) ** 2)
    assert repgeo.proj_mse(X, Y, ridge=ridge) == pytest.approx(ref, rel=1e-9)


def test_proj_mse_is_fraction_unexplained_with_frobenius_normalisation(rng):
    X, Y = related_pair(rng, 300, 10, 12)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")
    r2 = LinearRegression(fit_intercept=False).fit(Yp, Xp).score(Yp, Xp, sample_weight=None)
    # sklearn's multi-output R^2 averages per column; compare with the pooled definition instead
    resid = 1 - np.sum((LinearRegression(fit_intercept=False).fit(Yp, Xp).predict(Yp)) ** 2)
    assert repgeo.proj_mse(X, Y) == pytest.approx(resid, rel=1e-8)
    assert 0 <= repgeo.proj_mse(X, Y) <= 1 and r2 <= 1


def test_rank_deficient_student_gives_exact_projection(rng):
    Z = rng.normal(size=(50, 4))
    X = Z @ rng.normal(size=(4, 9))
    Y = np.hstack([Z, Z @ rng.normal(size=(4, 6))])  # rank 4 in 10 columns
    assert repgeo.proj_mse(X, Y) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(6, 40, 50), (300, 20, 25)])
def test_sample_and_feature_space_paths_agree(rng, shape):
    X, Y = related_pair(rng, *shape)
    Xp, Yp = prep(X, True, "frobenius"), prep(Y, True, "frobenius")
    s = ArrayStats(Xp, Yp)
    feature = super(ArrayStats, s)
    kk, ll, kl = s.gram_inner()
    fk, fl, fkl = feature.gram_inner()
    np.testing.assert_allclose([kk, ll, kl], [fk, fl, fkl], rtol=1e-10)
    assert s.gram_dist_sq() == pytest.approx(feature.gram_dist_sq(), rel=1e-9, abs=1e-14)
    np.testing.assert_allclose(np.sort(s.cross_svdvals())[::-1][: min(shape)],
                               feature.cross_svdvals()[: min(shape)], atol=1e-12)


def test_compare_equals_individual_calls(rng):
    X, Y = related_pair(rng, 50, 8, 6)
    values = repgeo.compare(X, Y)
    assert set(values) == set(repgeo.available())
    for name, value in values.items():
        assert value == pytest.approx(repgeo.get(name)(X, Y), rel=1e-12, abs=1e-14)
