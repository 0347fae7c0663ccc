"""Bad input raises a clear error naming the argument; nothing is silently NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repgeo
from repgeo.metrics import available, get

rng = np.random.default_rng(0)
X = rng.normal(size=(10, 4))
Y = rng.normal(size=(10, 3))


@pytest.mark.parametrize(
    ("Xb", "Yb", "error", "match"),
    [
        (X, Y[:9], ValueError, "same number of rows"),
        (X[:1], Y[:1], ValueError, r"at least \d rows; got 1"),
        (X[0], Y, ValueError, "X must be 2-D"),
        (X, Y[None], ValueError, "Y must be 2-D"),
        (np.where(np.eye(10, 4) > 0, np.nan, X), Y, ValueError, "X contains NaN or Inf"),
        (X, np.where(np.eye(10, 3) > 0, np.inf, Y), ValueError, "Y contains NaN or Inf"),
        (X.astype(complex), Y, TypeError, "X has dtype complex"),
        (X > 0, Y, TypeError, "X has dtype bool"),
        (X, Y.astype(object), TypeError, "Y has dtype object"),
        (X, torch.tensor(Y), TypeError, "same backend"),
        (np.ones((10, 4)), Y, ValueError, "X is zero after preprocessing"),
        (X, np.zeros((10, 0)), ValueError, "Y has no feature columns"),
        ([[1.0, 2.0], [3.0]], Y, TypeError, "X cannot be converted"),
    ],
)
@pytest.mark.parametrize("name", available())
def test_bad_pairs(name, Xb, Yb, error, match):
    with pytest.raises(error, match=match):
        get(name)(Xb, Yb)


def test_bad_options():
    with pytest.raises(ValueError, match="normalize must be one of"):
        repgeo.cka(X, Y, normalize="l2")
    with pytest.raises(TypeError, match="center must be True or False"):
        repgeo.cka(X, Y, center="yes")
    with pytest.raises(ValueError, match="kind must be one of"):
        repgeo.procrustes(X, Y, kind="cosine")
    with pytest.raises(ValueError, match="kernel must be"):
        repgeo.cka(X, Y, kernel="poly")
    with pytest.raises(ValueError, match="sigma must be a positive"):
        repgeo.cka(X, Y, kernel="rbf", sigma=-1.0)
    with pytest.raises(ValueError, match="ridge must be a non-negative"):
        repgeo.proj_mse(X, Y, ridge=-0.1)
    with pytest.raises(ValueError, match="unknown metric 'cca'; available: procrustes"):
        repgeo.get("cca")
    with pytest.raises(TypeError, match="Y is missing"):
        repgeo.fg(X)


def test_debiased_cka_needs_four_rows():
    with pytest.raises(ValueError, match="at least 4 rows"):
        repgeo.cka(X[:3], Y[:3], debiased=True)


def test_zero_row_on_the_sphere_and_zero_scale_without_normalisation():
    Xz = X.copy()
    Xz[3] = 0
    with pytest.raises(ValueError, match="X has an all-zero row"):
        repgeo.procrustes(Xz, Y, center=False, normalize="rows")
    Xm = X.copy()
    Xm[3] = np.delete(X, 3, axis=0).mean(axis=0)  # the row equal to the column means is zero once centred
    with pytest.raises(ValueError, match=r"X has an all-zero row \(after centring"):
        repgeo.procrustes(Xm, Y, normalize="rows")
    with pytest.raises(ValueError, match="CKA is undefined: Y is zero"):
        repgeo.cka(X, np.ones((10, 3)), normalize=None)
    # the distance itself is defined without normalisation: d(X, 0) = ||X_c||
    Xc = X - X.mean(0)
    assert repgeo.procrustes(X, np.ones((10, 3)), normalize=None) == pytest.approx(np.linalg.norm(Xc))


def test_torch_tensors_on_different_devices_or_dtypes():
    a, b = torch.tensor(X), torch.tensor(Y, dtype=torch.float32)
    value = repgeo.cka(a, b)  # mixed float widths are computed in the wider one
    assert value.dtype == torch.float64
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="different devices"):
            repgeo.cka(a.cuda(), torch.tensor(Y))
    with pytest.raises(TypeError, match=r"X has dtype torch\.bool"):
        repgeo.cka(a > 0, torch.tensor(Y))


def test_clamping_only_absorbs_rounding():
    """Values are clamped to their ranges; the unclamped values are within rounding of them."""
    from repgeo.metrics.stats import prepare_pair

    Xp, Yp = prepare_pair(X, X @ np.linalg.qr(rng.normal(size=(4, 4)))[0], center=True, normalize="frobenius")
    nuc = np.linalg.svd(Xp.T @ Yp, compute_uv=False).sum()
    raw_cos = nuc / np.sqrt(np.sum(Xp**2) * np.sum(Yp**2))
    raw_d2 = np.sum(Xp**2) + np.sum(Yp**2) - 2 * nuc
    assert abs(raw_cos - 1) < 1e-14 and abs(raw_d2) < 1e-14
    assert repgeo.nbs(Xp, Yp) <= 1.0 and repgeo.procrustes(Xp, Yp, kind="squared") >= 0.0


def test_debiased_cka_refuses_a_self_hsic_at_rounding_level():
    """Equal singular values with n <= width make K proportional to the centring matrix: HSIC_u(K, K) = 0."""
    rng = np.random.default_rng(3)
    u, _, vt = np.linalg.svd(rng.normal(size=(41, 56)), full_matrices=False)
    X = u @ vt
    with pytest.raises(ValueError, match="not positive beyond rounding"):
        repgeo.cka(X, rng.normal(size=(41, 18)), debiased=True)


def test_float32_torch_inputs_of_row_wise_estimators_match_float64():
    """Near-duplicate rows: closed-form projection-MSE is computed in float64, linear debiased CKA from float32
    products of centred rows with float64 row terms (tests/test_cka_float32.py); both agree with float64."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(86, 9)).astype(np.float32)
    X[43:] = X[:43] + np.float32(1e-6) * rng.normal(size=(43, 9)).astype(np.float32)  # near-duplicate rows
    Y = np.hstack([X, X @ rng.normal(size=(9, 33)).astype(np.float32)])
    for fn in (repgeo.proj_mse, lambda a, b: repgeo.cka(a, b, debiased=True)):
        want = float(fn(X.astype(np.float64), Y.astype(np.float64)))
        got = fn(torch.from_numpy(X), torch.from_numpy(Y))
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(want, abs=1e-6)
