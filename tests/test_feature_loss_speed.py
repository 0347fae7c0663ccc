"""The feature loss's fast paths give the metric's value; its size limits refuse with clear errors."""

from __future__ import annotations

import pytest
import torch

import repgeo
from repgeo.distill import FeatureLoss
from repgeo.distill import feature_loss as feature_loss_module


def test_rbf_cka_loss_refuses_more_rows_than_its_limit(monkeypatch):
    monkeypatch.setattr(feature_loss_module, "RBF_MAX_ROWS", 16)
    fl = FeatureLoss("cka_rbf", {1: 1}, pooling="tokens")
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(16, 6, generator=g), torch.randn(16, 5, generator=g)
    at_limit = fl({1: X}, {1: Y})  # 16 rows: computed, and equal to the metric
    assert float(at_limit.total) == pytest.approx(1 - float(repgeo.cka(X, Y, kernel="rbf")), abs=1e-6)
    with pytest.raises(ValueError, match=r"RBF CKA over 17 rows .* at most 16 rows \(use pooling"):
        fl({1: torch.randn(17, 6, generator=g)}, {1: torch.randn(17, 5, generator=g)})


@pytest.mark.parametrize("metric", ["procrustes", "procrustes_angular", "nbs", "bures"])
@pytest.mark.parametrize("rows", [200, 8])  # feature-space matrices, and n x n factors (n < widths)
def test_pairs_of_equal_shapes_share_one_nuclear_norm_call_and_keep_their_values(metric, rows):
    g = torch.Generator().manual_seed(rows)
    widths = {1: (12, 10), 2: (12, 10), 3: (9, 14)}  # pairs 1 and 2 are stacked, pair 3 is alone
    teacher = {t: torch.randn(rows, p, generator=g) + 3.0 for t, (p, _) in widths.items()}
    student = {s: torch.randn(rows, q, generator=g).requires_grad_(True) for s, (_, q) in widths.items()}
    fl = FeatureLoss(metric, {s: s for s in widths}, pooling="tokens")
    calls = []
    original = feature_loss_module.nuclear_norm
    monkey = pytest.MonkeyPatch()

    def recording(xp, mats):
        calls.append((len(mats), *mats[0].shape) if isinstance(mats, list) else tuple(mats.shape))
        return original(xp, mats)

    monkey.setattr(feature_loss_module, "nuclear_norm", recording)
    try:
        out = fl(teacher, student)
    finally:
        monkey.undo()
    # n x n factors make every pair's matrix 8 x 8: all three stack
    assert calls == ([(3, rows, rows)] if rows < 9 else [(2, 12, 10)])
    out.total.backward()
    loss = repgeo.get(metric).loss
    for s in widths:
        X64, Y64 = teacher[s].double(), student[s].detach().double().requires_grad_(True)
        want = loss(X64, Y64)
        want.backward()
        assert float(out.pairs[f"s{s}_t{s}"].detach()) == pytest.approx(float(want.detach()), abs=2e-6)
        torch.testing.assert_close(student[s].grad.double(), Y64.grad, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("normalize", ["rows", None, "frobenius"])
@pytest.mark.parametrize("metric", ["procrustes", "cka", "fg", "proj_mse"])
def test_sync_free_calls_preprocess_as_the_eager_first_call_does(metric, normalize):
    """Every call after the first runs without host syncs; it must still apply the same preprocessing (before
    this test, normalize='rows' lost its row normalisation there: Procrustes 7,654 instead of 1.40)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(50, 12, generator=g) * torch.linspace(0.1, 5, 12) + 2.0
    Y = torch.randn(50, 9, generator=g) * torch.linspace(0.1, 5, 9) - 1.0
    fl = FeatureLoss(metric, {1: 1}, pooling="mean", normalize=normalize, projector="closed_form")
    eager = fl({1: X}, {1: Y})
    assert eager.valid is None
    deferred = fl({1: X}, {1: Y})
    assert deferred.valid is not None and bool(deferred.valid)
    want = repgeo.get(metric).loss(X.double(), Y.double(), normalize=normalize)
    for out in (eager, deferred):
        assert float(out.total) == pytest.approx(float(want), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("scale", [1e-41, 1e-30, 1.0, 1e30, 1e37])
@pytest.mark.parametrize("metric", ["procrustes", "cka"])
def test_sync_free_preprocessing_handles_extreme_scales_like_the_eager_call(metric, scale):
    """float32 features whose squares underflow (subnormal values) or overflow: the sync-free pass scales by a power
    of two first, so it gives the eager value (which rescales through an overflow-safe norm) and a finite gradient
    wherever the exact one is representable (the loss is scale-invariant, so its gradient scales like 1/scale)."""
    g = torch.Generator().manual_seed(2)
    base_x, base_y = torch.randn(40, 8, generator=g), torch.randn(40, 6, generator=g)
    X, Y = base_x * scale, (base_y + base_x[:, :6]) * scale
    assert X.dtype == torch.float32 and torch.isfinite(X).all() and (X != 0).any()
    fl = FeatureLoss(metric, {1: 1}, pooling="mean")
    eager = fl({1: X}, {1: Y})
    leaf = Y.clone().requires_grad_(True)
    deferred = fl({1: X}, {1: leaf})
    deferred.total.backward()
    assert bool(deferred.valid)
    want = repgeo.get(metric).loss(base_x.double(), (base_y + base_x[:, :6]).double())  # scale-invariant metric
    tol = 1e-3 if scale == 1e-41 else 1e-5  # subnormal inputs carry only a few significant bits
    assert float(eager.total) == pytest.approx(float(want), abs=tol)
    assert float(deferred.total.detach()) == pytest.approx(float(want), abs=tol)
    if scale >= 1e-30:
        assert torch.isfinite(leaf.grad).all()
