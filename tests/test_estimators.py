"""Bias-aware and held-out estimators against known truths, independent references and their limits."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.linalg
from sklearn.linear_model import Ridge

from repgeo.metrics import fg, nbs, procrustes, proj_mse
from repgeo.metrics.estimators import (
    effective_rank,
    fg_corrected,
    nbs_corrected,
    nuclear_corrected,
    procrustes_corrected,
    proj_mse_heldout,
    projection_residual,
)


def anisotropic_pair(n: int, d: int, rng: np.random.Generator, related: bool = True,
                     maps: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """X = Z A (spectrum i^-0.75), Y = Z A R + noise (related) or independent with its own spectrum."""
    A, R = maps if maps is not None else fixed_maps(d)
    Z = rng.standard_normal((n, d))
    X = Z @ A
    if not related:
        return X, rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.5
    return X, Z @ A @ R + 0.5 * math.sqrt(float(np.sum(A * A)) / d) * rng.standard_normal((n, d))


@functools.cache
def fixed_maps(d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(123)
    s = np.arange(1, d + 1) ** -0.75
    A = s[:, None] * np.linalg.qr(rng.standard_normal((d, d)))[0].T
    return A, np.linalg.qr(rng.standard_normal((d, d)))[0]


def population_procrustes(d: int) -> float:
    A, R = fixed_maps(d)
    Sxx = A.T @ A
    Sxy = Sxx @ R
    Syy = R.T @ Sxx @ R + 0.25 * float(np.sum(A * A)) / d * np.eye(d)
    nbs_pop = float(np.sum(np.linalg.svd(Sxy, compute_uv=False))) / math.sqrt(np.trace(Sxx) * np.trace(Syy))
    return math.sqrt(2 - 2 * nbs_pop)


# ------------------------------------------------------------------------------------------ Procrustes


def test_corrected_procrustes_closer_to_truth_than_plugin_at_n_2d_and_bias_shrinks_with_n():
    d, reps = 24, 12
    truth = population_procrustes(d)
    rng = np.random.default_rng(0)
    bias = {}
    for ratio in (1, 2, 8):
        plug, corr = [], []
        for r in range(reps):
            X, Y = anisotropic_pair(ratio * d, d, rng)
            plug.append(float(procrustes(X, Y)))
            corr.append(procrustes_corrected(X, Y, seed=r))
        bias[ratio] = (np.mean(plug) - truth, np.mean(corr) - truth, np.std(corr) / math.sqrt(reps))
    # the plug-in reads the pair as more alike than it is, shrinking with n
    assert bias[1][0] < bias[2][0] < bias[8][0] < 0
    # corrected: at most a third of the plug-in's bias at n = 2d (and within noise of the truth)
    assert abs(bias[2][1]) <= abs(bias[2][0]) / 3
    assert abs(bias[2][1]) < 4 * bias[2][2] + 0.01
    assert abs(bias[8][1]) < abs(bias[8][0])


def test_corrected_equals_plugin_asymptotically():
    rng = np.random.default_rng(1)
    X, Y = anisotropic_pair(8000, 6, rng)
    assert procrustes_corrected(X, Y) == pytest.approx(float(procrustes(X, Y)), abs=2e-3)
    assert fg_corrected(X, Y) == pytest.approx(float(fg(X, Y)), abs=2e-3)
    assert nbs_corrected(X, Y) == pytest.approx(float(nbs(X, Y)), abs=2e-3)


def test_nuclear_corrected_matches_scipy_orthogonal_procrustes_cross_fit():
    """(K plug-in + (K-1) cross-fit) / (2K-1), the cross-fit built from scipy's orthogonal Procrustes."""
    rng = np.random.default_rng(2)
    X, Y = anisotropic_pair(90, 7, rng)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    labels = np.arange(90) % 3
    cf = 0.0
    for k in range(3):
        tr, te = labels != k, labels == k
        R, _ = scipy.linalg.orthogonal_procrustes(Y[tr], X[tr])  # argmin ||Y R - X||: R = polar(Y^T X)
        cf += float(np.trace(R @ X[te].T @ Y[te]))
    plug = float(np.sum(np.linalg.svd(X.T @ Y, compute_uv=False)))
    assert nuclear_corrected(X, Y, labels) == pytest.approx((3 * plug + 2 * cf) / 5, rel=1e-10)


def test_corrected_nbs_of_unrelated_pair_is_below_the_plugin():
    rng = np.random.default_rng(3)
    vals = [(float(nbs(*p)), nbs_corrected(*p, seed=i)) for i, p in
            enumerate(anisotropic_pair(64, 32, rng, related=False) for _ in range(6))]
    plug, corr = np.mean(vals, axis=0)
    assert corr < 0.6 * plug  # truth 0: the corrected estimator removes about half of the noise


# ------------------------------------------------------------------------------------------ FG


def _hsic_u_reference(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, written out on n x n matrices."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float((np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3)))


def test_fg_corrected_is_the_u_statistic_formula():
    rng = np.random.default_rng(4)
    X, Y = anisotropic_pair(40, 6, rng)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = 40
    tx, ty = np.sum(Xc**2) / (n - 1), np.sum(Yc**2) / (n - 1)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    ref = _hsic_u_reference(K, K) / tx**2 + _hsic_u_reference(L, L) / ty**2 - 2 * _hsic_u_reference(K, L) / (tx * ty)
    assert fg_corrected(X, Y, squared=True) == pytest.approx(ref, rel=1e-9)


# ------------------------------------------------------------------------------------------ projection


def test_heldout_projection_equals_in_sample_closed_form_when_train_is_test():
    rng = np.random.default_rng(5)
    for n, q in ((50, 5), (12, 30)):  # full column rank, and fewer rows than student features (closed form = 0)
        X = rng.standard_normal((n, 8))
        Y = X @ rng.standard_normal((8, q)) + rng.standard_normal((n, q))
        assert projection_residual(X, Y, X, Y, 0.0) == pytest.approx(float(proj_mse(X, Y)), abs=1e-10)


def test_projection_residual_with_ridge_matches_sklearn():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 9))
    Xt, Yt = rng.standard_normal((15, 6)), rng.standard_normal((15, 9))
    Yc = Y - Y.mean(0)
    lam = 0.1 * float(np.sum(Yc**2))
    pred = Ridge(alpha=lam, fit_intercept=True).fit(Y, X).predict(Yt)
    ref = np.sum((Xt - pred) ** 2) / np.sum((Xt - X.mean(0)) ** 2)
    assert projection_residual(X, Y, Xt, Yt, 0.1) == pytest.approx(float(ref), rel=1e-9)


def test_heldout_projection_separates_related_from_unrelated_where_in_sample_cannot():
    """n = 256 stimuli against 384 features: the closed form is 0 for any student; held out it is not."""
    rng = np.random.default_rng(7)
    d = 384
    X, Y_rel = anisotropic_pair(256, d, rng)
    _, Y_unrel = anisotropic_pair(256, d, rng, related=False)
    assert float(proj_mse(X, Y_rel)) == pytest.approx(0, abs=1e-8)
    assert float(proj_mse(X, Y_unrel)) == pytest.approx(0, abs=1e-8)
    rel, unrel = proj_mse_heldout(X, Y_rel), proj_mse_heldout(X, Y_unrel)
    assert rel < 0.5 and 0.95 < unrel < 1.2, (rel, unrel)


# ------------------------------------------------------------------------------------------ diagnostics, errors


def test_effective_rank_participation_ratio():
    rng = np.random.default_rng(8)
    iso = rng.standard_normal((4000, 10))
    assert effective_rank(iso) == pytest.approx(10, rel=0.02)
    assert effective_rank(np.outer(rng.standard_normal(50), rng.standard_normal(7))) == pytest.approx(1.0)
    A = rng.standard_normal((30, 60))  # n < width: through the n x n Gram, same as the covariance eigenvalues
    ev = np.linalg.eigvalsh(np.cov(A.T))
    assert effective_rank(A) == pytest.approx(ev.sum() ** 2 / np.sum(ev**2), rel=1e-9)


def test_bad_options_are_refused_by_name():
    X, Y = np.random.default_rng(9).standard_normal((2, 20, 3))
    with pytest.raises(ValueError, match="center=True"):
        procrustes_corrected(X, Y, center=False)
    with pytest.raises(ValueError, match="normalize"):
        fg_corrected(X, Y, normalize=None)
    with pytest.raises(ValueError, match="folds must be"):
        nbs_corrected(X, Y, folds=1)
    with pytest.raises(ValueError, match="ridge_grid"):
        proj_mse_heldout(X, Y, ridge_grid=())
    with pytest.raises(ValueError, match="groups must have one entry per row"):
        proj_mse_heldout(X, Y, groups=np.arange(5))
    with pytest.raises(ValueError, match="kind must be"):
        procrustes_corrected(X, Y, kind="cosine")


# ----------------------------------------------------------------------------------- row-space reduction


def test_row_space_reduction_leaves_every_metric_and_estimator_unchanged():
    from repgeo.metrics import compare
    from repgeo.metrics.estimators import CORRECTED, row_space

    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 90)) + 3.0  # wide, with column means
    Y = X[:, :70] @ rng.standard_normal((70, 70)) * 0.1 + rng.standard_normal((40, 70))
    Xr, Yr = row_space(X), row_space(Y)
    assert Xr.shape == (40, 40) and Yr.shape == (40, 40)
    np.testing.assert_allclose(Xr @ Xr.T, X @ X.T, atol=1e-10)
    plug = ["procrustes", "procrustes_angular", "nbs", "fg", "cka", "cka_debiased", "cka_rbf", "proj_mse"]
    for m, v in compare(X, Y, plug).items():
        assert float(compare(Xr, Yr, [m])[m]) == pytest.approx(float(v), abs=1e-9), m
    for name, fn in CORRECTED.items():
        assert fn(Xr, Yr, seed=1) == pytest.approx(fn(X, Y, seed=1), abs=1e-9), name
        perm = rng.permutation(40)  # a row permutation commutes with the reduction
        assert fn(Xr, Yr[perm], seed=1) == pytest.approx(fn(X, row_space(Y[perm]), seed=1), abs=1e-9), name
    tall = rng.standard_normal((50, 8))
    assert np.array_equal(row_space(tall), tall)  # n >= width: nothing to reduce
    with pytest.raises(ValueError, match="2-D"):
        row_space(np.zeros(5))
