"""Feature-Gram (FG) distance between the sample Gram matrices.

For preprocessed X (n x p) and Y (n x q)::

    D_FG(X, Y) = ||X X^T - Y Y^T||_F
    D_FG^2     = ||X^T X||_F^2 + ||Y^T Y||_F^2 - 2 ||X^T Y||_F^2

The first form is computed directly when n x n Gram matrices are cheaper (small minibatches,
``n (p + q) < p^2 + q^2 + pq``), the second otherwise (large n, and always from
:class:`~repgeo.metrics.Moments`), so nothing n x n is formed when n is large. Both give the same number; the
feature-space form loses absolute precision ~ eps * ||X||^4 to cancellation when X and Y are nearly equal.
D_P = 0 <=> D_FG = 0 (the paper's equivalence): both vanish exactly when Y = X Q for a partial isometry Q.

Smoothness: ``squared=True`` is the loss form (a polynomial in X and Y); the distance itself has an infinite
slope at 0.
"""

from __future__ import annotations

from ._prep import Normalize
from ._stats import FeatureStats, pair_stats
from ._xp import Array, full_precision, to_scalar_output


def fg_from_stats(s: FeatureStats, squared: bool = False) -> Array:
    d2 = s.gram_dist_sq()
    return d2 if squared else s.xp.sqrt(d2)


@full_precision
def fg(
    X: object,
    Y: object = None,
    *,
    squared: bool = False,
    center: bool = True,
    normalize: Normalize = "frobenius",
) -> Array:
    """Feature-Gram distance ``||XX^T - YY^T||_F`` between teacher ``X`` and student ``Y``.

    With unit-Frobenius inputs it lies in [0, sqrt(2)]. ``squared=True`` returns the smooth loss form.
    ``X`` may instead be a :class:`~repgeo.metrics.Moments` (then ``Y`` is omitted).
    """
    s = pair_stats(X, Y, center=center, normalize=normalize)
    return to_scalar_output(fg_from_stats(s, squared))
