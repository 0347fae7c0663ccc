"""Projection-MSE: how well a linear map of the student reproduces the teacher (FitNets / TinyBERT).

For preprocessed X (n x p, teacher) and Y (n x q, student)::

    proj_mse(X, Y) = min_W ||Y W - X||_F^2 = ||X||_F^2 - tr(X^T Y (Y^T Y)^+ Y^T X)        (ridge = 0)

and with ``ridge = lam > 0`` the residual ``||Y W_lam - X||_F^2`` of the ridge solution
``W_lam = (Y^T Y + lam I)^-1 Y^T X`` (scikit-learn's ``Ridge(alpha=lam, fit_intercept=False)`` on the
preprocessed data). With the default unit-Frobenius normalisation it is the fraction of the teacher left
unexplained, in [0, 1]. It is invariant to any invertible linear map of Y — which is exactly why it can be 0
while the geometries differ (see :mod:`repgeo.counterexamples`).

Computed from the feature-space moments ``Y^T Y`` and ``Y^T X``; the pseudo-inverse discards eigenvalues of
``Y^T Y`` below ``rtol = q * eps`` times the largest, so the absolute accuracy is about ``eps * cond(Y)^2``.
This is the analysis form. On the torch backend it is computed in float64 whatever the input dtype (float32
errors reached 1e-2 on ill-conditioned students) and returned in the input's dtype.

The distillation loss learns W instead (FitNets / TinyBERT): :func:`proj_mse_learned` is
``||P(Y) W^T - P(X)||_F^2`` for a given map ``W`` (p x q, the weight of ``torch.nn.Linear(q, p, bias=False)``),
with ``P`` the same preprocessing as above, computed in the inputs' dtype and differentiable in ``Y`` and ``W``.
At the least-squares ``W`` (ridge 0) it equals :func:`proj_mse`; any other ``W`` gives more.

:func:`pkd_loss` is the Patient-KD loss (Sun et al. 2019), a distillation loss rather than a metric (it has no
invariances to record and is not in the registry): rows are compared after each is put on the unit sphere, with an
optional map ``W`` of the student onto the teacher's width applied first.
"""

from __future__ import annotations

from ._prep import Normalize, check_options, check_pair, preprocess, unit_rows
from ._stats import FeatureStats, pair_stats
from ._xp import (
    Array,
    eps,
    full_precision,
    in_float64,
    is_torch,
    namespace,
    pinv_hermitian,
    require,
    solve,
    to_scalar_output,
)


def proj_mse_from_stats(s: FeatureStats, ridge: float = 0.0) -> Array:
    xp = s.xp
    yy, yx = s.yy, s.xy.T
    if ridge == 0:
        W = pinv_hermitian(xp, yy, rtol=s.q * eps(yy)) @ yx
        residual = s.x_sq - xp.sum(yx * W)
    else:
        eye = xp.eye(s.q, dtype=yy.dtype, device=getattr(yy, "device", None))
        W = solve(xp, yy + ridge * eye, yx)
        residual = s.x_sq - 2 * xp.sum(yx * W) + xp.sum(W * (yy @ W))
    return xp.clip(residual, min=0.0)


@full_precision
@in_float64
def proj_mse(
    X: object,
    Y: object = None,
    *,
    ridge: float = 0.0,
    center: bool = True,
    normalize: Normalize = "frobenius",
) -> Array:
    """Residual of the best linear map from student ``Y`` onto teacher ``X``: ``min_W ||YW - X||_F^2``.

    Not symmetric: ``X`` is what is explained. ``ridge`` >= 0 is the L2 penalty on W. ``X`` may instead be a
    :class:`~repgeo.metrics.Moments` (then ``Y`` is omitted).
    """
    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise ValueError(f"ridge must be a non-negative number; got {ridge!r}")
    s = pair_stats(X, Y, center=center, normalize=normalize)
    return to_scalar_output(proj_mse_from_stats(s, float(ridge)))


def proj_mse_learned(
    X: object,
    Y: object,
    W: object,
    *,
    center: bool = True,
    normalize: Normalize = "frobenius",
) -> Array:
    """``||P(Y) W^T - P(X)||_F^2``: the residual of the student ``Y`` (n x q) mapped onto the teacher ``X``
    (n x p) by a given linear map ``W`` (p x q; a learned projector's weight), after the metrics' preprocessing
    ``P`` (see :mod:`repgeo.metrics._prep`). The loss form of projection-MSE with a learned projector; equals
    :func:`proj_mse` when ``W`` is the least-squares map of the preprocessed pair.

    Same backend and dtype rules as the other metrics, except that torch inputs are not promoted to float64 (a
    training loss runs in float32); ``W`` must be on the same backend and device as ``Y``.
    """
    check_options(center, normalize)
    Xm, Ym = check_pair(X, Y, min_rows=1, finite=False)  # preprocess checks NaN/Inf from the sums it forms
    _check_map(W, Xm, Ym)
    Xp = preprocess(Xm, "X", center=center, normalize=normalize)
    Yp = preprocess(Ym, "Y", center=center, normalize=normalize)
    residual = _mapped(Yp, W) - Xp
    return to_scalar_output(namespace(residual).sum(residual * residual))


def _check_map(W: object, Xm: Array, Ym: Array) -> None:
    if is_torch(W) != is_torch(Ym):
        raise TypeError("W must use the same backend as X and Y (a torch tensor with tensors, numpy with arrays)")
    p, q = Xm.shape[1], Ym.shape[1]
    if tuple(W.shape) != (p, q):  # type: ignore[attr-defined]
        raise ValueError(f"W must have shape (p, q) = ({p}, {q}) (teacher width x student width); "
                         f"got {tuple(W.shape)}")  # type: ignore[attr-defined]


def _mapped(Y: Array, W: object) -> Array:
    """``Y W^T`` with ``W`` in ``Y``'s dtype."""
    return Y @ (W.to(Y.dtype) if is_torch(W) else W).T  # type: ignore[attr-defined]


def _directions(x: Array, name: str) -> Array:
    """Every row divided by its Euclidean norm; a zero row (no direction) is an error naming ``name``."""
    xp = namespace(x)
    require(xp.all(xp.max(xp.abs(x), axis=1) > 0),
            f"{name} has an all-zero row, which has no direction (Patient-KD normalises every row)")
    return unit_rows(x, name)


def pkd_loss(X: object, Y: object, W: object = None) -> Array:
    """Patient-KD loss (Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression")::

        pkd(X, Y; W) = (1/n) sum_i || y_i W^T / ||y_i W^T||_2  -  x_i / ||x_i||_2 ||_2^2

    for teacher rows ``x_i`` (``X``: n x p) and student rows ``y_i`` (``Y``: n x q), with ``W`` (p x q; a learned
    projector's weight) mapping the student onto the teacher's width, or no map (``W=None``, needs p = q: Sun et
    al.'s student had the teacher's width). Equivalently ``2 - 2 * mean_i cos(y_i W^T, x_i)``, in [0, 4]; 0 iff
    every mapped student row points along its teacher row (any positive per-row scale).

    Convention: the **mean** over the n rows, where Sun et al. sum over examples (their loss is ``n`` times this)
    -- a per-batch mean like every other term of the distillation loss, so its scale does not grow with the batch.
    No centring or matrix normalisation (the per-row normalisation is the method's own). Sun et al. compare the
    ``[CLS]`` vectors; the rows are whatever the caller pools.

    Computed in the inputs' dtype (torch: not promoted to float64; a training loss runs in float32) and
    differentiable in ``Y`` and ``W``. Bad input raises as for the metrics (NaN/Inf, row counts, backends), and an
    all-zero row (of ``X`` or of the mapped ``Y``) is refused: it has no direction. Inside
    :func:`~repgeo.metrics.stats.deferred_checks` these value checks make no host synchronisation.
    """
    Xm, Ym = check_pair(X, Y, min_rows=1)
    if W is None:
        if Xm.shape[1] != Ym.shape[1]:
            raise ValueError(f"X has {Xm.shape[1]} columns and Y {Ym.shape[1]}: without a map W (p x q) Patient-KD "
                             "compares rows of equal width")
    else:
        _check_map(W, Xm, Ym)
        Ym = _mapped(Ym, W)
    diff = _directions(Ym, "Y W^T" if W is not None else "Y") - _directions(Xm, "X")
    xp = namespace(diff)
    return to_scalar_output(xp.sum(diff * diff) / Xm.shape[0])
