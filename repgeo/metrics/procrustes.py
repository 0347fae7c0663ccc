"""Orthogonal Procrustes (shape) distance, its angular form, normalised Bures similarity and Bures distance.

For preprocessed X (n x p) and Y (n x q) (see :mod:`repgeo.metrics._prep` for the conventions)::

    d_P(X, Y)^2 = min_{Q: Q^T Q = I} ||X - Y Q||_F^2 = ||X||_F^2 + ||Y||_F^2 - 2 ||X^T Y||_*

where ``||.||_*`` is the nuclear norm (sum of singular values). The closed form needs no padding or projection
when p != q: it equals zero-padding the narrower side to the wider one. The angular form is
``arccos(||X^T Y||_* / (||X||_F ||Y||_F))`` in [0, pi/2]; its cosine is the normalised Bures similarity (NBS,
Harvey, Larsen & Williams 2023). The Bures distance between the n x n Gram matrices K = XX^T and L = YY^T,
``B(K, L)^2 = tr K + tr L - 2 tr (K^1/2 L K^1/2)^1/2``, equals d_P because the fidelity term
``tr (K^1/2 L K^1/2)^1/2 = ||X^T Y||_*``.

Column means without a centred copy: ``X_c^T Y_c = X^T Y - n m_x m_y^T`` and ``||X_c||_F^2 = ||X||_F^2 - n ||m_x||^2``
while the means carry ``r = ||X||_F^2 / ||X_c||_F^2 <= 100`` (8 in float32). Accuracy bound: the normalised
cross-product's rounding error is at most ``g_n sqrt(r_x r_y)`` in Frobenius norm (``g_n = n eps / (1 - n eps)``,
the GEMM's bound), so ``|NBS - NBS_exact| <= sqrt(min(p, q)) g_n sqrt(r_x r_y)``: the centred copy's bound times
``sqrt(r_x r_y) <= 100``. Larger means are removed from a copy. Observed errors are ~1e-14 at n = 50,000
(``benchmarks/results/metrics_speed_realistic.json``); ``tests/test_metrics_speed_paths.py`` checks the bound with
means up to 90x the centred energy and the copy beyond it.

Smoothness: ``kind="squared"`` is the loss form. ``sqrt`` (euclidean) and ``arccos`` (angular) have infinite
slopes where the distance is 0, so they are not differentiable at identical inputs. Nuclear norms are taken
with ``linalg.svdvals`` (float64 and numpy), whose gradient U V^T stays finite at repeated singular values; float32
tensors (training losses) take a float64 symmetric-eigenvalue route with the same gradient, whose error bound
(within the float32 rounding of X^T Y itself) is stated in :func:`repgeo.metrics._xp._nuclear_eigh`.
"""

from __future__ import annotations

from typing import Literal

from repgeo._validation import PROCRUSTES_KINDS as KINDS
from repgeo._validation import check_choice

from ._prep import Normalize
from ._stats import FeatureStats, pair_stats
from ._xp import Array, full_precision, to_scalar_output

Kind = Literal["euclidean", "squared", "angular"]


def nuclear_cross(s: FeatureStats) -> Array:
    """``||X^T Y||_*``, the fidelity between the Gram matrices."""
    return s.nuclear_norm()


def procrustes_from_stats(s: FeatureStats, kind: Kind = "euclidean") -> Array:
    check_choice("kind", kind, KINDS)
    xp = s.xp
    nuc = nuclear_cross(s)
    if kind == "angular":
        return xp.acos(nbs_from_stats(s, nuc))
    d2 = xp.clip(s.x_sq + s.y_sq - 2 * nuc, min=0.0)
    return d2 if kind == "squared" else xp.sqrt(d2)


def nbs_from_stats(s: FeatureStats, nuc: Array | None = None) -> Array:
    s.check_nonzero("NBS / angular Procrustes")
    xp = s.xp
    if nuc is None:
        nuc = nuclear_cross(s)
    return xp.clip(nuc / xp.sqrt(s.x_sq * s.y_sq), min=0.0, max=1.0)


@full_precision
def procrustes(
    X: object,
    Y: object = None,
    *,
    kind: Kind = "euclidean",
    center: bool = True,
    normalize: Normalize = "frobenius",
) -> Array:
    """Orthogonal Procrustes distance between teacher ``X`` (n x p) and student ``Y`` (n x q).

    ``kind``: ``"euclidean"`` (``d_P``), ``"squared"`` (``d_P^2``, the smooth loss form) or ``"angular"``
    (``arccos NBS``, in [0, pi/2]). With the default unit-Frobenius normalisation the euclidean distance lies in
    [0, sqrt(2)]. ``X`` may instead be a :class:`~repgeo.metrics.Moments` (then ``Y`` is omitted).
    """
    s = pair_stats(X, Y, center=center, normalize=normalize)
    return to_scalar_output(procrustes_from_stats(s, kind))


@full_precision
def nbs(X: object, Y: object = None, *, center: bool = True, normalize: Normalize = "frobenius") -> Array:
    """Normalised Bures similarity ``||X^T Y||_* / (||X||_F ||Y||_F)`` in [0, 1] (cosine of angular Procrustes)."""
    s = pair_stats(X, Y, center=center, normalize=normalize)
    return to_scalar_output(nbs_from_stats(s))


def bures(X: object, Y: object = None, *, center: bool = True, normalize: Normalize = "frobenius") -> Array:
    """Bures distance between the sample Gram matrices XX^T and YY^T; equal to ``procrustes(kind="euclidean")``.

    Computed through the fidelity identity ``tr (K^1/2 L K^1/2)^1/2 = ||X^T Y||_*`` in feature space, so it
    never forms n x n matrices.
    """
    return procrustes(X, Y, kind="euclidean", center=center, normalize=normalize)
