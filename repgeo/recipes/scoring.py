"""Accuracy statistics of classifiers scored on the same test examples: binomial and paired standard errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def accuracy_se(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` examples."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1))


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of model A minus that of model B on the same ``n`` test examples, with its paired standard error."""

    delta: float
    se: float
    n: int

    @property
    def z(self) -> float:
        """``delta / se`` (inf when every example changed the same way, nan when none changed)."""
        if self.se > 0:
            return self.delta / self.se
        return math.nan if self.delta == 0 else math.copysign(math.inf, self.delta)

    def __str__(self) -> str:
        return f"{100 * self.delta:+.1f} points (paired SE {100 * self.se:.1f})"


def paired_difference(pred_a: Any, pred_b: Any, y: Any) -> PairedDifference:
    """Paired comparison of two classifiers on the same test examples: with ``d_i = 1[a_i = y_i] - 1[b_i = y_i]``,

        delta = mean(d),   SE = sd(d) / sqrt(n)   (sd with n - 1 degrees of freedom),

    the standard error of the difference of accuracies when both were measured on the same ``n`` examples (much
    smaller than the unpaired ``sqrt(se_a² + se_b²)`` when the two models mostly agree)."""
    a, b, t = (np.asarray(v).reshape(-1) for v in (pred_a, pred_b, y))
    if not len(a) == len(b) == len(t):
        raise ValueError(f"pred_a, pred_b and y must have the same length; got {len(a)}, {len(b)} and {len(t)}")
    if len(t) < 2:
        raise ValueError(f"a paired standard error needs at least 2 examples; got {len(t)}")
    d = (a == t).astype(float) - (b == t).astype(float)
    return PairedDifference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d))
