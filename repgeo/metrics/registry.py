"""Metric registry: name -> metric, so the CLI, the audit and distillation pick metrics by name.

Each :class:`MetricSpec` records what a caller needs to use a metric without knowing it: whether it is a
distance or a similarity, its value range under the default preprocessing, its smooth loss form (the quantity a
distillation run minimises), the transformations of the student ``Y`` under which it is unchanged (with the
default ``center=True, normalize="frobenius"``), and whether it can be computed from streaming
:class:`~repgeo.metrics.Moments`.

Invariance names: ``orthogonal`` (Y -> YQ, Q orthogonal), ``permutation`` (of feature columns),
``isotropic_scale`` (Y -> cY), ``anisotropic_scale`` (Y -> Y D, D diagonal positive), ``invertible_linear``
(Y -> YM, M invertible), ``translation`` (Y -> Y + 1 b^T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import numpy as np

from ._xp import full_precision
from .cka import cka, cka_from_stats
from .gram import fg, fg_from_stats
from .procrustes import bures, nbs, nbs_from_stats, procrustes, procrustes_from_stats
from .projection import proj_mse, proj_mse_from_stats

SIMILARITY_INVARIANCES = frozenset({"orthogonal", "permutation", "isotropic_scale", "translation"})


@dataclass(frozen=True)
class MetricSpec:
    """Everything the rest of repgeo needs to know about one metric."""

    name: str
    fn: Callable[..., Any]  # fn(X, Y, *, center=..., normalize=...) -> value
    kind: Literal["distance", "similarity"]
    bounds: tuple[float, float]
    loss_name: str
    loss: Callable[..., Any]  # smooth loss form, minimised by distillation; 0 at a perfect match
    invariances: frozenset[str]
    from_stats: Callable[[Any], Any] | None = None  # None: not computable from Moments
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def streamable(self) -> bool:
        return self.from_stats is not None

    def __call__(self, X: object, Y: object = None, **kwargs: Any) -> Any:
        return self.fn(X, Y, **kwargs)


def _one_minus(fn: Callable[..., Any]) -> Callable[..., Any]:
    def loss(X: object, Y: object = None, **kwargs: Any) -> Any:
        return 1 - fn(X, Y, **kwargs)

    return loss


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec, *, overwrite: bool = False) -> MetricSpec:
    """Add a metric (e.g. a user's own) to the registry."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"metric {spec.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MetricSpec:
    """The registered metric called ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        import difflib

        close = []
        if isinstance(name, str):
            close = [n for n in available() if n.lower() == name.lower()] or difflib.get_close_matches(
                name, available(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available())}{hint}") from None


def available(*, streamable: bool | None = None, kind: str | None = None) -> list[str]:
    """Names of the registered metrics, optionally only the streamable ones or one kind."""
    return [
        name
        for name, spec in _REGISTRY.items()
        if (streamable is None or spec.streamable == streamable) and (kind is None or spec.kind == kind)
    ]


_SQRT2 = math.sqrt(2.0)
_procrustes_sq = partial(procrustes, kind="squared")

register(MetricSpec(
    "procrustes", partial(procrustes, kind="euclidean"), "distance", (0.0, _SQRT2),
    "squared Procrustes distance", _procrustes_sq, SIMILARITY_INVARIANCES,
    partial(procrustes_from_stats, kind="euclidean"),
    "orthogonal Procrustes (shape) distance sqrt(|X|^2 + |Y|^2 - 2 |X^T Y|_*)",
))
register(MetricSpec(
    "procrustes_angular", partial(procrustes, kind="angular"), "distance", (0.0, math.pi / 2),
    "1 - NBS", _one_minus(nbs), SIMILARITY_INVARIANCES,
    partial(procrustes_from_stats, kind="angular"),
    "angular Procrustes distance arccos(NBS)",
))
register(MetricSpec(
    "nbs", nbs, "similarity", (0.0, 1.0), "1 - NBS", _one_minus(nbs), SIMILARITY_INVARIANCES,
    nbs_from_stats, "normalised Bures similarity |X^T Y|_* / (|X| |Y|)",
))
register(MetricSpec(
    "bures", bures, "distance", (0.0, _SQRT2), "squared Procrustes distance", _procrustes_sq,
    SIMILARITY_INVARIANCES, partial(procrustes_from_stats, kind="euclidean"),
    "Bures distance between the Gram matrices XX^T and YY^T (= Procrustes)",
))
register(MetricSpec(
    "fg", fg, "distance", (0.0, _SQRT2), "squared FG distance", partial(fg, squared=True),
    SIMILARITY_INVARIANCES, fg_from_stats, "Feature-Gram distance |XX^T - YY^T|_F",
))
register(MetricSpec(
    "cka", cka, "similarity", (0.0, 1.0), "1 - CKA", _one_minus(cka), SIMILARITY_INVARIANCES,
    cka_from_stats, "linear CKA (biased HSIC)",
))
_cka_debiased = partial(cka, debiased=True)
register(MetricSpec(
    "cka_debiased", _cka_debiased, "similarity", (-1.0, 1.0), "1 - debiased CKA", _one_minus(_cka_debiased),
    SIMILARITY_INVARIANCES, None, "linear CKA (unbiased HSIC, Song et al. 2012)",
))
_cka_rbf = partial(cka, kernel="rbf")
register(MetricSpec(
    "cka_rbf", _cka_rbf, "similarity", (0.0, 1.0), "1 - RBF CKA", _one_minus(_cka_rbf),
    SIMILARITY_INVARIANCES, None, "RBF-kernel CKA, median-heuristic bandwidth",
))
register(MetricSpec(
    "proj_mse", proj_mse, "distance", (0.0, 1.0), "projection MSE (closed form)", proj_mse,
    SIMILARITY_INVARIANCES | {"anisotropic_scale", "invertible_linear"}, proj_mse_from_stats,
    "residual of the best linear map from Y onto X (FitNets / TinyBERT projection)",
))



@full_precision
def compare(
    X: object,
    Y: object = None,
    metrics: list[str] | None = None,
    *,
    center: bool = True,
    normalize: Any = "frobenius",
) -> dict[str, Any]:
    """Several metrics of one pair at once, sharing the cross-products they need.

    ``metrics``: registered names (default: all; from a :class:`~repgeo.metrics.Moments`, all streamable
    ones). Returns ``{name: value}``: Python floats for numpy input (they print as numbers in a notebook), 0-d
    tensors for torch input (differentiable, on the inputs' device).
    """
    from ._stats import pair_stats
    from ._xp import to_scalar_output

    from_moments = Y is None and hasattr(X, "stats")
    if metrics is None:
        metrics = available(streamable=True) if from_moments else available()
    specs = [get(name) for name in metrics]
    if from_moments:
        rowwise = [spec.name for spec in specs if not spec.streamable]
        if rowwise:
            raise ValueError(f"metrics {rowwise} need the rows and cannot be computed from Moments")
    s = pair_stats(X, Y, center=center, normalize=normalize)
    out = {}
    for spec in specs:
        if spec.streamable:
            out[spec.name] = to_scalar_output(spec.from_stats(s))
        else:
            out[spec.name] = spec.fn(X, Y, center=center, normalize=normalize)
    return {k: float(v) if isinstance(v, (np.floating, np.ndarray, float)) else v for k, v in out.items()}


__all__ = ["MetricSpec", "available", "compare", "get", "register", "replace"]
