"""Identities that hold for every input (moved out of the counterexample certificates, where they tested the
metric code rather than a construction), and the spherical preprocessing ``normalize="rows"``: unit rows, and a
scale that does not grow with the batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repgeo
from repgeo.metrics.stats import preprocess

from .conftest import related_pair


def _std(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(axis=0)
    return A / np.linalg.norm(A)


def _op(A: np.ndarray) -> float:
    return float(np.linalg.norm(A, 2))


# --------------------------------------------------------------------------------------- spherical rows


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_rows_preprocessing_gives_unit_rows_weighted_one_over_n(rng, center, backend):
    A = rng.normal(size=(37, 9)) * np.linspace(0.1, 10, 9) + 3.0  # anisotropic, far from centred
    x = torch.from_numpy(A) if backend == "torch" else A
    P = np.asarray(preprocess(x, "X", center=center, normalize="rows"))
    np.testing.assert_allclose(np.linalg.norm(np.sqrt(37) * P, axis=1), 1.0, atol=1e-12)
    assert np.linalg.norm(P) == pytest.approx(1.0, abs=1e-12)
    ref = A - A.mean(axis=0) if center else A  # centre first, then the sphere
    np.testing.assert_allclose(np.sqrt(37) * P, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-12)


def test_rows_fg_is_the_rms_change_of_cosines(rng):
    X, Y = related_pair(rng, 40, 12, 7)

    def cosines(A):
        A = A - A.mean(axis=0)
        U = A / np.linalg.norm(A, axis=1, keepdims=True)
        return U @ U.T

    n = X.shape[0]
    assert repgeo.fg(X, Y, normalize="rows") == pytest.approx(np.linalg.norm(cosines(X) - cosines(Y)) / n, rel=1e-12)


def test_rows_fg_expectation_is_flat_in_n():
    """Independent isotropic Gaussian X (p) and Y (q): a cosine between two of n centred samples has E cos^2
    = 1/p, so E D_FG^2 = (1 - 1/n)(1/p + 1/q) (the diagonal of the cosine matrices agrees): the mean over pairs,
    D_FG^2 n/(n-1), has the same expectation at every n. Under the old order (sphere, then centre) D_FG grew
    like sqrt(n)."""
    p, q = 16, 8
    means, ses = [], []
    for n in (50, 100, 200, 400, 800):
        rng = np.random.default_rng(n)
        reps = 40 if n <= 200 else 20
        v = np.array([float(repgeo.fg(rng.standard_normal((n, p)), rng.standard_normal((n, q)), normalize="rows"))
                      for _ in range(reps)]) ** 2 * n / (n - 1)
        means.append(v.mean())
        ses.append(v.std(ddof=1) / np.sqrt(reps))
        assert abs(v.mean() - (1 / p + 1 / q)) <= 4 * ses[-1], (n, v.mean(), ses[-1])
    m, s = np.array(means), np.array(ses)
    assert np.all(np.abs(m - m[-1]) <= 4 * np.sqrt(s**2 + s[-1] ** 2)), (m, s)
    # the distance itself (not only its square) moves by less than the 1 - 1/n factor allows
    assert abs(np.sqrt(m[0] * 49 / 50) / np.sqrt(m[-1] * 799 / 800) - 1) < 0.02


def test_rows_loss_scale_does_not_grow_with_the_batch():
    """The registry's loss forms under "rows" on a related pair: a batch 16 times larger changes each by less
    than 30% (a population quantity estimated from n samples: the small batch fits a little better by chance),
    where the old sums over samples grew 19-fold (Procrustes, projection-MSE) and 276-fold (FG)."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(12, 6))
    values = {}
    for n in (50, 800):
        X = rng.normal(size=(n, 12))
        Y = X @ A + 0.5 * rng.normal(size=(n, 6))
        values[n] = {m: float(repgeo.get(m).loss(X, Y, normalize="rows")) for m in ("fg", "procrustes", "proj_mse")}
    for m in ("fg", "procrustes", "proj_mse"):
        assert values[800][m] == pytest.approx(values[50][m], rel=0.3), (m, values)


# --------------------------------------------------------------------------- identities for every input


@pytest.mark.parametrize("seed", range(4))
def test_fg_of_a_linear_image_is_y_wwt_minus_i_yt(seed):
    """X = Y W (both centred, ||X||_F = 1): X X^T - Y Y^T = Y (W W^T - I) Y^T (Theorem 2's identity)."""
    rng = np.random.default_rng(seed)
    n, q, p = 30, 6, 10
    Y = _std(rng.normal(size=(n, q)))
    W = rng.normal(size=(q, p))
    W /= np.linalg.norm(Y @ W)
    X = Y @ W
    assert repgeo.fg(X, Y) == pytest.approx(np.linalg.norm(Y @ (W @ W.T - np.eye(q)) @ Y.T), rel=1e-10)


def _pairs(rng):
    n = 40
    X = _std(rng.normal(size=(n, 8)) * np.geomspace(1, 0.05, 8))
    Q = np.linalg.qr(rng.normal(size=(12, 12)))[0][:8]
    yield X, _std(rng.normal(size=(n, 12)))  # unrelated
    yield X, X @ Q  # isometry: both zero
    for d in (1e-1, 1e-3, 1e-6):
        yield X, _std(X @ Q + d * rng.normal(size=(n, 12)))  # near zero
    yield X, _std(X[:, :3])  # narrower, same samples


@pytest.mark.parametrize("seed", range(3))
def test_procrustes_fg_equivalence_inequalities(seed):
    """For unit-Frobenius centred inputs, with K = XX^T, L = YY^T:
    D_FG <= (||X||_op + ||Y||_op) D_P (XX^T - ZZ^T = X(X - Z)^T + (X - Z)Z^T, Z = Y Q*), and
    D_P^2 <= ||K - L||_* <= sqrt(rank(K - L)) D_FG (Bures <= trace distance; Cauchy-Schwarz): each distance is
    zero exactly when the other is."""
    rng = np.random.default_rng(seed)
    for X, Y in _pairs(rng):
        dp, dfg = float(repgeo.procrustes(X, Y)), float(repgeo.fg(X, Y))
        assert dfg**2 <= (_op(X) + _op(Y)) ** 2 * dp**2 + 1e-12
        ev = np.linalg.eigvalsh(X @ X.T - Y @ Y.T)
        trace_norm = float(np.abs(ev).sum())
        rank = int((np.abs(ev) > 1e-12).sum())
        assert dp**2 <= trace_norm + 1e-12
        assert trace_norm <= np.sqrt(max(rank, 1)) * dfg + 1e-9


def test_spherical_fg_bounds_every_cosine_change_and_procrustes(rng):
    """On the sphere (center=False, "rows"): D_FG >= max_ij |cos x_ij - cos y_ij| / n (a Frobenius norm bounds
    every entry) and D_P >= D_FG / (||X||_op + ||Y||_op) (as for any pair)."""
    sphere = {"center": False, "normalize": "rows"}
    X, Y = rng.normal(size=(25, 6)), rng.normal(size=(25, 4)) + 2.0

    def cos(A):
        U = A / np.linalg.norm(A, axis=1, keepdims=True)
        return U @ U.T

    dfg = float(repgeo.fg(X, Y, **sphere))
    assert dfg >= np.abs(cos(X) - cos(Y)).max() / 25 - 1e-12
    Xs, Ys = (preprocess(A, "A", **sphere) for A in (X, Y))
    assert float(repgeo.procrustes(X, Y, **sphere)) >= dfg / (_op(Xs) + _op(Ys)) - 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_cka_distance_and_fg_are_equivalent(seed):
    """Centred unit-Frobenius inputs (tr K = tr L = 1), r = max(rank K, rank L), d_CKA = sqrt(2(1 - CKA)):
    d_CKA <= 2 sqrt(r) D_FG and D_FG <= (1 + sqrt(2r)) d_CKA — so no perturbation separates CKA from FG by an
    order (repgeo.counterexamples.orders states the argument). Checked on pairs from far apart to near zero."""
    rng = np.random.default_rng(seed)
    for X, Y in _pairs(rng):
        Xs, Ys = _std(X), _std(Y)
        r = max(np.linalg.matrix_rank(Xs), np.linalg.matrix_rank(Ys))
        d_cka = np.sqrt(max(2 * (1 - float(repgeo.cka(X, Y))), 0.0))
        d_fg = float(repgeo.fg(X, Y))
        assert d_cka <= 2 * np.sqrt(r) * d_fg + 1e-7
        assert d_fg <= (1 + np.sqrt(2 * r)) * d_cka + 1e-7
        K, L = Xs @ Xs.T, Ys @ Ys.T  # d_CKA is the Frobenius distance of the unit-Frobenius Gram matrices
        assert d_cka == pytest.approx(np.linalg.norm(K / np.linalg.norm(K) - L / np.linalg.norm(L)), abs=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_rank_r_teacher_bounds(seed):
    """Any unit-Frobenius rank-r teacher X and any student (L = YY^T, eigenvalues lambda decreasing):
    D_FG >= sqrt(sum_{i>r} lambda_i^2) (Eckart-Young-Mirsky) and D_P^2 >= 2 - 2 sqrt(sum_{i<=r} lambda_i)
    (||X^T Y||_* <= sum_{i<=r} sigma_i(X) sigma_i(Y), then Cauchy-Schwarz)."""
    rng = np.random.default_rng(seed)
    n, r = 24, 3
    X = _std(rng.normal(size=(n, r)) @ rng.normal(size=(r, 10)))
    for Y in (rng.normal(size=(n, 40)), rng.normal(size=(n, 5)) * np.geomspace(1, 0.1, 5)):
        Ys = _std(Y)
        lam = np.clip(np.sort(np.linalg.eigvalsh(Ys @ Ys.T))[::-1], 0.0, None)
        assert float(repgeo.fg(X, Y)) >= np.sqrt((lam[r:] ** 2).sum()) - 1e-12
        assert float(repgeo.procrustes(X, Y)) ** 2 >= 2 - 2 * np.sqrt(lam[:r].sum()) - 1e-12


# ------------------------------------------------------------------------- learned-projector projection-MSE


@pytest.mark.parametrize("normalize", ["frobenius", "rows", None])
@pytest.mark.parametrize("center", [True, False])
def test_learned_projector_loss_at_the_least_squares_map_is_the_closed_form(rng, center, normalize):
    X = rng.normal(size=(50, 7)) @ rng.normal(size=(7, 7)) + 1.5
    Y = np.hstack([X[:, :3] @ rng.normal(size=(3, 3)), rng.normal(size=(50, 2))])  # partly explains X
    Xp, Yp = (np.asarray(preprocess(A, "A", center=center, normalize=normalize)) for A in (X, Y))
    W = np.linalg.lstsq(Yp, Xp, rcond=None)[0].T  # (p, q): the weight of nn.Linear(q, p)
    closed = repgeo.proj_mse(X, Y, center=center, normalize=normalize)
    learned = repgeo.metrics.proj_mse_learned(X, Y, W, center=center, normalize=normalize)
    assert 0.05 < closed and learned == pytest.approx(closed, rel=1e-10)
    # any other map explains less; the loss is the plain residual of the given map
    W2 = W + 0.1 * rng.normal(size=W.shape)
    worse = repgeo.metrics.proj_mse_learned(X, Y, W2, center=center, normalize=normalize)
    assert worse > closed + 1e-6
    assert worse == pytest.approx(np.sum((Yp @ W2.T - Xp) ** 2), rel=1e-12)


def test_learned_projector_loss_in_torch_matches_numpy_and_is_stationary_at_the_optimum(rng):
    X, Y = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
    Xp, Yp = (np.asarray(preprocess(A, "A", center=True, normalize="frobenius")) for A in (X, Y))
    W = torch.tensor(np.linalg.lstsq(Yp, Xp, rcond=None)[0].T, requires_grad=True)
    loss = repgeo.metrics.proj_mse_learned(torch.from_numpy(X), torch.from_numpy(Y), W)
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx(repgeo.proj_mse(X, Y), rel=1e-10)
    loss.backward()
    assert float(W.grad.abs().max()) < 1e-10  # the least-squares map is the minimum
    f32 = repgeo.metrics.proj_mse_learned(torch.from_numpy(X).float(), torch.from_numpy(Y).float(), W.detach().float())
    assert f32.dtype == torch.float32  # a training loss stays in float32


def test_learned_projector_loss_names_a_wrong_map():
    X, Y = np.ones((5, 3)) + np.eye(5, 3), np.eye(5, 2)
    with pytest.raises(ValueError, match=r"W must have shape \(p, q\) = \(3, 2\).*got \(2, 3\)"):
        repgeo.metrics.proj_mse_learned(X, Y, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="same backend"):
        repgeo.metrics.proj_mse_learned(X, Y, torch.zeros(3, 2))
