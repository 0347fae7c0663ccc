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
