"""The differentiable backend: same numbers as numpy, dtype rules, finite gradients and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import repgeo
from repgeo.metrics import available, get

from .conftest import related_pair

SHAPES = [(9, 20, 14), (60, 7, 11), (5, 3, 30), (40, 12, 12)]


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", [dict(), dict(center=False, normalize="rows"), dict(normalize=None)])
def test_numpy_and_torch_float64_agree(rng, name, shape, opts):
    X, Y = related_pair(rng, *shape)
    spec = get(name)
    want = spec(X, Y, **opts)
    got = spec(torch.tensor(X), torch.tensor(Y), **opts)
    assert isinstance(want, np.float64) and isinstance(got, torch.Tensor) and got.dtype == torch.float64
    assert float(got) == pytest.approx(float(want), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize(
    ("dtype", "computed"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32),
     (torch.int64, torch.float32)],
)
def test_torch_dtype_promotion(rng, dtype, computed):
    X, Y = related_pair(rng, 30, 6, 5)
    Xt, Yt = torch.tensor(X).to(dtype), torch.tensor(Y).to(dtype)
    value = repgeo.procrustes(Xt, Yt)
    assert value.dtype == computed
    assert float(value) == pytest.approx(float(repgeo.procrustes(Xt.double(), Yt.double())), rel=1e-4)


def test_numpy_integers_and_float32_compute_in_float64(rng):
    X = rng.integers(-5, 5, size=(20, 4))
    Y = rng.integers(-5, 5, size=(20, 3))
    assert repgeo.cka(X, Y) == pytest.approx(repgeo.cka(X.astype(float), Y.astype(float)), rel=1e-15)
    assert repgeo.cka(X.astype(np.float32), Y).dtype == np.float64


LOSS_NAMES = available()


def degenerate_points(rng):
    X = rng.normal(size=(7, 5))
    rank1 = np.outer(rng.normal(size=7), rng.normal(size=4))
    Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    repeated = rng.normal(size=(7, 5))
    u, _, vt = np.linalg.svd(repeated - repeated.mean(0), full_matrices=False)
    repeated = u @ np.diag([1.0, 1.0, 1.0, 0.5, 0.5]) @ vt  # repeated singular values
    return {
        "generic": (X, rng.normal(size=(7, 4))),
        "n_below_width": (rng.normal(size=(4, 9)), rng.normal(size=(4, 11))),
        "rank_one_student": (X, rank1 + 0.0),
        "repeated_singular_values": (repeated, repeated @ Q),
    }


NUCLEAR = {"procrustes", "procrustes_angular", "nbs", "bures"}
# The nuclear norm ||X^T Y||_* is not differentiable where X^T Y has a zero singular value that a perturbation
# of the inputs can make non-zero (|s| has a kink at 0): a rank-one student against a full-rank teacher is such a
# point. There the gradient returned is a finite subgradient, not a derivative; every other point here is smooth.
# The closed-form projection-MSE is not even continuous where the student loses rank: a perturbation that raises
# rank(Y) enlarges the space the teacher is projected onto.
NOT_DIFFERENTIABLE = {(name, "rank_one_student") for name in NUCLEAR | {"proj_mse"}}
POINTS = ["generic", "n_below_width", "rank_one_student", "repeated_singular_values"]


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("point", POINTS)
def test_loss_gradcheck(name, point):
    rng = np.random.default_rng(7)
    X, Y = degenerate_points(rng)[point]
    spec = get(name)
    Xt = torch.tensor(X, requires_grad=True)
    Yt = torch.tensor(Y, requires_grad=True)
    if (name, point) in NOT_DIFFERENTIABLE:
        grads = torch.autograd.grad(spec.loss(Xt, Yt), (Xt, Yt))
        assert all(torch.isfinite(g).all() for g in grads)
        with pytest.raises(GradcheckError):
            torch.autograd.gradcheck(lambda a, b: spec.loss(a, b), (Xt, Yt), eps=1e-6, atol=1e-5)
    else:
        assert torch.autograd.gradcheck(lambda a, b: spec.loss(a, b), (Xt, Yt), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_gradients_finite_at_identical_inputs(name):
    rng = np.random.default_rng(1)
    X = torch.tensor(rng.normal(size=(8, 5)))
    Y = X.clone().requires_grad_(True)
    loss = get(name).loss(X, Y)
    (grad,) = torch.autograd.grad(loss, Y)
    assert torch.isfinite(grad).all()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(grad.abs().max()) < 1e-5  # a minimum: the gradient vanishes


@pytest.mark.parametrize("name", ["procrustes", "fg", "cka"])
def test_loss_descends_to_the_teacher(name):
    """A few steps of gradient descent on the student reduce every smooth loss form."""
    torch.manual_seed(0)
    X = torch.randn(32, 16, dtype=torch.float64)
    Y = torch.randn(32, 8, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([Y], lr=0.05)
    first = float(get(name).loss(X, Y).detach())
    for _ in range(100):
        opt.zero_grad()
        loss = get(name).loss(X, Y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_n_by_n_route_for_small_batches_matches_feature_space_in_torch():
    torch.manual_seed(0)
    X = torch.randn(16, 96, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(16, 64, dtype=torch.float64, requires_grad=True)
    d = repgeo.procrustes(X, Y, kind="squared")
    Xc = X - X.mean(0)
    Yc = Y - Y.mean(0)
    Xc, Yc = Xc / Xc.norm(), Yc / Yc.norm()
    ref = 2 - 2 * torch.linalg.svdvals(Xc.T @ Yc).sum()
    gx, gy = torch.autograd.grad(d, (X, Y))
    rx, ry = torch.autograd.grad(ref, (X, Y))
    assert float(d) == pytest.approx(float(ref), abs=1e-12)
    assert torch.allclose(gx, rx, atol=1e-10) and torch.allclose(gy, ry, atol=1e-10)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_autocast_regions_compute_in_float32(name):
    torch.manual_seed(0)
    X = torch.randn(40, 12)
    Y = torch.randn(40, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = get(name).loss(X.bfloat16(), Y.bfloat16())
    assert loss.dtype == torch.float32
    want = get(name).loss(X.bfloat16().float(), Y.bfloat16().float())
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5, abs=1e-6)
    loss.backward()
    assert torch.isfinite(Y.grad).all()
