"""The training loss makes no device-to-host synchronisation after its first (eagerly checked) call.

``.item()``, ``bool()``, ``float()`` and ``int()`` of a tensor all dispatch ``aten::_local_scalar_dense``, the
operator that copies a value to the host (on a GPU: waits for every queued kernel). A ``TorchDispatchMode``
counts it during a feature-loss forward + backward, for every registered metric and the Patient-KD loss (``pkd``, a
loss without a registry entry), pooled and token-level rows.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from repgeo.distill import FeatureLoss
from repgeo.distill.schema import LOSS_ONLY_METRICS
from repgeo.metrics import available

LAYER_MAP = {1: 2, 2: 4}


class CountScalarReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            import traceback

            self.reads.append("".join(traceback.format_stack(limit=6)))
        return func(*args, **(kwargs or {}))


def hidden_states(seed: int, batch: int = 6, seq: int = 10, dims: tuple[int, ...] = (16,) * 5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, d, generator=g) for d in dims]


def attention_mask(batch: int = 6, seq: int = 10) -> torch.Tensor:
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0
    mask[4, 3:] = 0
    return mask


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
@pytest.mark.parametrize("metric", [*available(), *LOSS_ONLY_METRICS])
def test_feature_loss_forward_backward_reads_no_scalar(metric, pooling):
    teacher = hidden_states(0, dims=(24,) * 5)
    mask = attention_mask()
    fl = FeatureLoss(metric, LAYER_MAP, student_dims=16, teacher_dims=24, pooling=pooling)
    student = [h.requires_grad_(True) for h in hidden_states(1)]
    with CountScalarReads() as setup:
        first = fl(teacher, student, mask)  # set-up: checked eagerly
    assert first.valid is None
    assert setup.reads, "the counter saw no read in the eagerly checked call: it would not see one later either"
    student = [h.detach().requires_grad_(True) for h in hidden_states(2)]
    with CountScalarReads() as counter:
        out = fl(teacher, student, mask)
        out.total.backward()
    assert counter.reads == [], f"{len(counter.reads)} host read(s); the first from:\n{counter.reads[0]}"
    assert bool(out.valid)
    assert all(h.grad is not None and torch.isfinite(h.grad).all() for h in student[1:3])
    # the deferred path computes the same loss as the eager one
    eager = FeatureLoss(metric, LAYER_MAP, student_dims=16, teacher_dims=24, pooling=pooling)
    eager.load_state_dict(fl.state_dict())
    want = eager(teacher, [h.detach() for h in student], mask)
    assert float(out.total.detach()) == pytest.approx(float(want.total.detach()), rel=2e-4, abs=2e-5)


@pytest.mark.parametrize("normalize", ["frobenius", "rows", None])
def test_deferred_checks_still_catch_bad_inputs(normalize):
    fl = FeatureLoss("procrustes", {1: 1}, pooling="mean", normalize=normalize)
    teacher = {1: torch.randn(8, 5)}
    fl(teacher, {1: torch.randn(8, 4)})
    fl.raise_if_invalid()  # nothing pending yet: passes
    bad = torch.randn(8, 4)
    bad[3, 2] = float("nan")
    out = fl(teacher, {1: bad})
    assert not bool(out.valid)
    with pytest.raises(ValueError, match="Y contains NaN"):
        fl.raise_if_invalid()
    out = fl(teacher, {1: torch.randn(8, 4)})
    assert bool(out.valid)
    fl.raise_if_invalid()


def test_deferred_checks_catch_a_constant_student():
    fl = FeatureLoss("cka", {1: 1}, pooling="mean")
    teacher = {1: torch.randn(8, 5)}
    fl(teacher, {1: torch.randn(8, 4)})
    out = fl(teacher, {1: torch.ones(8, 4)})
    assert not bool(out.valid)
    with pytest.raises(ValueError, match="Y is zero after preprocessing"):
        fl.raise_if_invalid()


def test_first_call_is_checked_eagerly():
    fl = FeatureLoss("fg", {1: 1}, pooling="mean")
    bad = torch.randn(8, 4)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="Y contains NaN or Inf"):
        fl({1: torch.randn(8, 5)}, {1: bad})
