"""The feature loss: a registered metric's smooth loss form between mapped teacher and student layers.

For a layer map ``{s_k: t_k}`` with weights ``w_k``, teacher rows ``X_k`` (n x p) and student rows ``Y_k``
(n x q), the module returns::

    L_feat = sum_k w_k * D(X_k, Y_k)

where ``D`` is the metric's smooth loss form from :mod:`repgeo.metrics.registry` (squared Procrustes,
1 - CKA, squared FG, ...), computed after the metrics core's preprocessing (centre, then unit Frobenius norm by
default). Rows are pooled sequences (``cls``/``mean``/``last``: one row per example) or every unpadded token
(``tokens``); padding is masked through the attention mask (and an optional token mask, e.g. response tokens).

**Projection-MSE** (``metric="proj_mse"``) uses a *learned* linear projector per layer pair by default
(FitNets / TinyBERT), ``D = ||P(Y) W_k^T - P(X)||_F^2`` (:func:`repgeo.metrics.proj_mse_learned`) with ``P`` the
same preprocessing and ``W_k = nn.Linear(q, p, bias=False)`` (no bias: both sides are centred). Shapes come from
the models' hidden sizes.
Initialisation: ``nn.init.orthogonal_``, i.e. a (semi-)orthogonal map, so at the start the projection keeps the
student's norm and the loss equals a Procrustes-like distance rather than an arbitrary scale. The projectors are
ordinary parameters of this module (the trainer gives them their own optimizer group and saves
``feature_loss.pt`` with every checkpoint). ``projector="closed_form"`` uses the registry's closed-form
``min_W`` instead (no parameters).

**Patient-KD** (``metric="pkd"``, Sun et al. 2019; a loss, not a registered metric: see ``LOSS_ONLY_METRICS``)
compares each row after putting it on the unit sphere, ``D = (1/n) sum_i ||y_i W_k^T / ||y_i W_k^T|| -
x_i / ||x_i|| ||^2`` (:func:`repgeo.metrics.pkd_loss`: the mean over rows where Sun et al. sum over examples;
they pool the ``[CLS]`` vector, ``pooling="cls"``). ``center`` and ``normalize`` do not apply (the per-row
normalisation is the method's own; values other than the defaults are refused, not ignored). A pair whose widths
differ gets a learned projector ``W_k`` as projection-MSE does (same initialisation, optimizer group and
``feature_loss.pt``); a pair of equal widths is compared directly, as in Sun et al. (whose student had the
teacher's width), with no parameters.

**No host synchronisation.** The first forward call checks its inputs eagerly (clear errors at set-up). Every
later call runs the metrics inside :func:`repgeo.metrics.stats.deferred_checks`: no check reads a value back from
the device (``bool``/``item`` of a tensor would stall a GPU pipeline every step); the conditions are combined on
the device into ``FeatureLossOutput.valid`` and :meth:`FeatureLoss.raise_if_invalid` evaluates them (one sync)
whenever the caller chooses, e.g. at logging steps.

**RBF CKA** (``metric="cka_rbf"``) forms two n x n kernel matrices per pair and sorts their n^2 entries for the
median bandwidth: O(n^2) memory and O(n^2 log n) time (measured on one CPU core, forward + backward of one pair
with 768- and 384-d rows: 0.1 s at 512 rows, 0.66 s at 1,024, 2.7 s at 2,048). A loss over more than
``RBF_MAX_ROWS`` rows (after gathering across ranks) is refused with an error naming the alternatives (pooled
rows, or a linear metric) rather than stalling training: token-level RBF CKA is not offered.

All feature losses are computed in float32 with autocast disabled, whatever the training precision. Under data
parallelism rows are gathered from every rank (teacher without, student with gradient) so the loss is that of
the global batch (see :mod:`repgeo.distill.gather`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from repgeo._validation import FEATURE_POOLINGS as POOLINGS
from repgeo.metrics import get as get_metric
from repgeo.metrics import pkd_loss, proj_mse_learned
from repgeo.metrics.procrustes import nbs_from_stats, procrustes_from_stats
from repgeo.metrics.stats import (
    Check,
    FeatureStats,
    all_passed,
    deferred_checks,
    nuclear_norm,
    pair_stats,
    raise_failed,
    to_scalar_output,
)
from repgeo.probe.pooling import pool

from .gather import gather_rows
from .schema import LOSS_ONLY_METRICS

Features = Mapping[int, torch.Tensor]


def pair_name(student_layer: int, teacher_layer: int) -> str:
    """Key of one layer pair, e.g. ``s2_t4``."""
    return f"s{student_layer}_t{teacher_layer}"



def _one_minus_nbs(s: FeatureStats) -> torch.Tensor:
    return 1 - nbs_from_stats(s)


def _procrustes_sq(s: FeatureStats) -> torch.Tensor:
    return procrustes_from_stats(s, "squared")


#: the registry's loss forms of the metrics built on ||X^T Y||_*, as functions of a pair's statistics
NUCLEAR_LOSSES = {"procrustes": _procrustes_sq, "bures": _procrustes_sq, "procrustes_angular": _one_minus_nbs,
                  "nbs": _one_minus_nbs}
RBF_MAX_ROWS = 1024  # rows per pair above which the RBF-CKA loss is refused (module docstring)
MAX_PENDING_CHECKS = 4096  # deferred conditions kept between two raise_if_invalid() calls before they are combined
PENDING_SUMMARY = ("a feature-loss input check failed in an earlier batch (NaN or Inf in the features, or a feature "
                   "matrix that is zero after preprocessing)")


@dataclass
class FeatureLossOutput:
    """The weighted total and the unweighted loss of every layer pair."""

    total: torch.Tensor
    pairs: dict[str, torch.Tensor]
    #: device-side boolean: every deferred input check passed (None when the call checked eagerly)
    valid: torch.Tensor | None = None


class FeatureLoss(nn.Module):
    """Weighted sum of a metric's smooth loss over mapped layer pairs (see the module docstring).

    Parameters
    ----------
    metric: a registered metric name (``repgeo.metrics.available()``) or a loss of ``LOSS_ONLY_METRICS`` (``pkd``).
    layer_map: ``{student_layer: teacher_layer}`` in ``hidden_states`` numbering (0 = embeddings).
    student_dims, teacher_dims: hidden sizes per layer (or one int for all); needed for the learned projector.
    pooling: ``cls``, ``mean``, ``last`` or ``tokens``.
    weights: one weight per pair (a sequence in map order, or ``{student_layer: w}``); default 1 each.
    center, normalize: preprocessing passed to the metric (see :mod:`repgeo.metrics.stats`).
    projector: ``"learned"`` (default for proj_mse) or ``"closed_form"``; ignored by the other metrics; pkd learns
        a projector for every pair of different widths and refuses ``"closed_form"``.
    gather: gather rows across data-parallel ranks (no-op on one process).
    """

    def __init__(
        self,
        metric: str,
        layer_map: Mapping[int, int],
        *,
        student_dims: Mapping[int, int] | int | None = None,
        teacher_dims: Mapping[int, int] | int | None = None,
        pooling: str = "mean",
        weights: Sequence[float] | Mapping[int, float] | None = None,
        center: bool = True,
        normalize: Literal["frobenius", "rows"] | None = "frobenius",
        projector: Literal["learned", "closed_form"] = "learned",
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.spec = None if metric in LOSS_ONLY_METRICS else get_metric(metric)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        if not layer_map:
            raise ValueError("layer_map is empty: map at least one student layer to a teacher layer")
        if projector not in ("learned", "closed_form"):
            raise ValueError(f"projector must be 'learned' or 'closed_form'; got {projector!r}")
        if metric == "pkd" and (center is not True or normalize != "frobenius"):
            raise ValueError(
                f"center={center!r} and normalize={normalize!r} do not apply to pkd: it puts every row on the unit "
                "sphere itself (Sun et al. 2019), so a setting would be ignored; leave both at their defaults "
                "(center=True, normalize='frobenius') or use a registered metric"
            )
        if metric == "pkd" and projector != "learned":
            raise ValueError("projector 'closed_form' does not apply to pkd (a pair of different widths needs a "
                             "learned projector); use projector='learned'")
        self.metric = metric
        self.layer_map = {int(s): int(t) for s, t in layer_map.items()}
        self.pooling = pooling
        self.center = center
        self.normalize = normalize
        self.gather = gather
        self.weights = self._resolve_weights(weights)
        self.learned = metric == "proj_mse" and projector == "learned"
        self.projectors = nn.ModuleDict()
        if self.learned or metric == "pkd":
            self._add_projectors(student_dims, teacher_dims)
        self.validated = False  # set after the first (eagerly checked) forward call
        self.pending_checks: list[Check] = []

    def _add_projectors(self, student_dims: Mapping[int, int] | int | None,
                        teacher_dims: Mapping[int, int] | int | None) -> None:
        """One ``nn.Linear(q, p, bias=False)`` per pair, orthogonally initialised (module docstring); pkd: only for
        pairs of different widths (and none when the widths are not given: they are then taken as equal)."""
        if student_dims is None or teacher_dims is None:
            if self.metric == "pkd":
                return
            raise ValueError("projection-MSE with a learned projector needs student_dims and teacher_dims")
        for s, t in self.layer_map.items():
            q = student_dims if isinstance(student_dims, int) else student_dims[s]
            p = teacher_dims if isinstance(teacher_dims, int) else teacher_dims[t]
            if self.metric == "pkd" and p == q:
                continue
            lin = nn.Linear(q, p, bias=False)
            nn.init.orthogonal_(lin.weight)
            self.projectors[pair_name(s, t)] = lin

    def _resolve_weights(self, weights: Sequence[float] | Mapping[int, float] | None) -> dict[int, float]:
        keys = list(self.layer_map)
        if weights is None:
            return dict.fromkeys(keys, 1.0)
        if isinstance(weights, Mapping):
            extra = set(map(int, weights)) - set(keys)
            if extra:
                raise ValueError(f"layer weights given for student layers {sorted(extra)} that are not mapped")
            return {k: float(weights.get(k, weights.get(str(k), 1.0))) for k in keys}  # type: ignore[call-overload]
        if len(weights) != len(keys):
            raise ValueError(f"{len(weights)} layer weights for {len(keys)} mapped layer pairs")
        return {k: float(w) for k, w in zip(keys, weights, strict=True)}

    @property
    def teacher_layers(self) -> list[int]:
        """The teacher hidden-state indices the loss reads."""
        return sorted(set(self.layer_map.values()))

    def features(
        self,
        hidden_states: Sequence[torch.Tensor],
        layers: Sequence[int],
        attention_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor]:
        """Pooled float32 rows of the given hidden-state indices."""
        return {
            i: pool(hidden_states[i], attention_mask, self.pooling, token_mask, check_empty=not self.validated).float()
            for i in layers
        }

    def teacher_features(
        self,
        hidden_states: Sequence[torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor]:
        """Detached pooled teacher rows for every mapped teacher layer."""
        with torch.no_grad():
            return {
                i: f.detach()
                for i, f in self.features(hidden_states, self.teacher_layers, attention_mask, token_mask).items()
            }

    def pair_loss(self, name: str, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Unweighted loss of one pair on (already gathered) rows X (teacher) and Y (student)."""
        if self.metric == "pkd":
            proj = self.projectors[name].weight.float() if name in self.projectors else None
            return pkd_loss(X, Y, proj)
        if self.learned:
            return proj_mse_learned(X, Y, self.projectors[name].weight.float(), center=self.center,
                                    normalize=self.normalize)
        assert self.spec is not None  # every name without a registry entry is handled above
        return self.spec.loss(X, Y, center=self.center, normalize=self.normalize)

    def forward(
        self,
        teacher: Sequence[torch.Tensor] | Features,
        student: Sequence[torch.Tensor] | Features,
        attention_mask: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> FeatureLossOutput:
        """Loss between teacher and student.

        ``teacher`` / ``student``: a model's ``hidden_states`` tuple, or already pooled rows
        ``{layer: (n, d)}`` (e.g. teacher features from a cache). Masks apply to hidden states only.
        The first call checks its inputs eagerly; later calls make no host synchronisation (module docstring).
        """
        if not self.validated:
            out = self._forward(teacher, student, attention_mask, token_mask)
            self.validated = True
            return out
        with deferred_checks() as pending:
            out = self._forward(teacher, student, attention_mask, token_mask)
        out.valid = all_passed(pending)
        self.pending_checks.extend(pending)
        if len(self.pending_checks) > MAX_PENDING_CHECKS:  # never evaluated by the caller: keep one condition
            self.pending_checks = [(all_passed(self.pending_checks), PENDING_SUMMARY, ValueError)]
        return out

    def raise_if_invalid(self) -> None:
        """Evaluate the deferred input checks of every call since the last evaluation (one host sync), forget
        them, and raise the first failure (so a bad batch is reported even when later batches are fine)."""
        pending, self.pending_checks = self.pending_checks, []
        raise_failed(pending)

    def _forward(
        self,
        teacher: Sequence[torch.Tensor] | Features,
        student: Sequence[torch.Tensor] | Features,
        attention_mask: torch.Tensor | None,
        token_mask: torch.Tensor | None,
    ) -> FeatureLossOutput:
        ref = next(iter(student.values())) if isinstance(student, Mapping) else student[0]
        with torch.autocast(device_type=ref.device.type, enabled=False):
            if not isinstance(teacher, Mapping):
                teacher = self.teacher_features(teacher, attention_mask, token_mask)
            if not isinstance(student, Mapping):
                student = self.features(student, list(self.layer_map), attention_mask, token_mask)
            rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for s, t in self.layer_map.items():
                X = teacher[t].detach().float().to(ref.device)
                Y = student[s].float()
                if X.shape[0] != Y.shape[0]:
                    raise ValueError(
                        f"layer pair {pair_name(s, t)}: teacher has {X.shape[0]} rows, student {Y.shape[0]}; "
                        "teacher and student must see the same tokens (same tokenizer and masks)"
                    )
                if self.gather:
                    X, Y = gather_rows(X, with_grad=False), gather_rows(Y, with_grad=True)
                name = pair_name(s, t)
                if self.metric == "cka_rbf" and X.shape[0] > RBF_MAX_ROWS:
                    raise ValueError(
                        f"layer pair {name}: RBF CKA over {X.shape[0]} rows would form {X.shape[0]} x {X.shape[0]} "
                        f"kernel matrices every step; the loss accepts at most {RBF_MAX_ROWS} rows (use pooling "
                        "'mean', 'cls' or 'last', a smaller batch, or a linear metric such as 'cka')"
                    )
                rows[name] = (X, Y)
            if self.metric in NUCLEAR_LOSSES:
                pairs = self._nuclear_losses(rows)
            else:
                pairs = {name: self.pair_loss(name, X, Y) for name, (X, Y) in rows.items()}
            total = ref.new_zeros((), dtype=torch.float32)
            for s, t in self.layer_map.items():
                total = total + self.weights[s] * pairs[pair_name(s, t)]
        return FeatureLossOutput(total, pairs)

    def _nuclear_losses(self, rows: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The Procrustes-family losses with one nuclear-norm call per group of pairs with equal shapes.

        Each pair's statistics are formed as the metric forms them; the p x q matrices whose singular values give
        ``||X^T Y||_*`` are stacked per shape, so a layer map of equal widths makes one batched decomposition
        (one set of kernels on a GPU instead of one per pair). Values equal the metric's own loss.
        """
        stats = {name: pair_stats(X, Y, center=self.center, normalize=self.normalize) for name, (X, Y) in rows.items()}
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, st in stats.items():
            groups.setdefault(tuple(st.cross_matrix().shape), []).append(name)
        for names in groups.values():
            if len(names) > 1:
                mats = [stats[name].cross_matrix() for name in names]
                for name, nuc in zip(names, nuclear_norm(torch, mats), strict=True):
                    stats[name].preset_nuclear = nuc
        loss = NUCLEAR_LOSSES[self.metric]
        return {name: to_scalar_output(loss(st)) for name, st in stats.items()}

    def extra_repr(self) -> str:
        return f"metric={self.metric!r}, pooling={self.pooling!r}, layer_map={self.layer_map}"
