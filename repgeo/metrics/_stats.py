"""Second-order statistics of a preprocessed pair: the one input every linear metric is a function of.

For preprocessed X (n x p) and Y (n x q) the linear metrics need only

* ``x_sq = ||X||_F^2``, ``y_sq = ||Y||_F^2``;
* the cross-product ``xy = X^T Y`` (p x q) and, for some metrics, ``xx = X^T X`` and ``yy = Y^T Y``;
* the three inner products of the n x n sample Gram matrices K = X X^T and L = Y Y^T,
  ``<K, K> = ||X^T X||_F^2``, ``<L, L> = ||Y^T Y||_F^2``, ``<K, L> = ||X^T Y||_F^2``.

:class:`ArrayStats` computes them lazily from arrays in memory, choosing the cheaper of feature space
(GEMMs of shape p x q) and sample space (n x n Grams) for the Gram inner products; :class:`FeatureStats`
holds them ready-made, as :class:`repgeo.metrics.Moments` produces them from a stream. A metric written
against this interface therefore gives the same number from both.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ._xp import Array, col_mean, gram, is_torch, namespace, nuclear_norm, require, row_sq, svdvals


class FeatureStats:
    """Statistics given in feature space (``xx``, ``yy``, ``xy`` already formed)."""

    def __init__(
        self, n: int, xx: Array | None, yy: Array | None, xy: Array, *, x_sq: Array | None = None,
        y_sq: Array | None = None, missing: str = "",
    ) -> None:
        """``xx``/``yy`` may be None when only their traces ``x_sq``/``y_sq`` are known (``missing`` says why)."""
        self.xp: Any = namespace(xy)
        self.n = n
        self.p, self.q = xy.shape
        self._xx, self._yy, self.xy = xx, yy, xy
        self._missing = missing
        if x_sq is not None:
            self.__dict__["x_sq"] = x_sq
        if y_sq is not None:
            self.__dict__["y_sq"] = y_sq

    #: arrays of the rows, for metrics that are not functions of the moments (None here)
    data: tuple[Array, Array] | None = None

    def _held(self, value: Array | None, what: str) -> Array:
        if value is None:
            raise ValueError(f"{what} was not accumulated: {self._missing}")
        return value

    @property
    def xx(self) -> Array:
        return self._held(self._xx, "X^T X")

    @property
    def yy(self) -> Array:
        return self._held(self._yy, "Y^T Y")

    @cached_property
    def x_sq(self) -> Array:
        return self.xp.linalg.trace(self.xx)

    @cached_property
    def y_sq(self) -> Array:
        return self.xp.linalg.trace(self.yy)

    def gram_inner(self) -> tuple[Array, Array, Array]:
        """``(<K,K>, <L,L>, <K,L>)`` for the sample Gram matrices K = XX^T, L = YY^T."""
        xp = self.xp
        return xp.sum(self.xx * self.xx), xp.sum(self.yy * self.yy), xp.sum(self.xy * self.xy)

    def gram_dist_sq(self) -> Array:
        """``||K - L||_F^2`` (clamped at 0 against rounding)."""
        kk, ll, kl = self.gram_inner()
        return self.xp.clip(kk + ll - 2 * kl, min=0.0)

    #: ``||X^T Y||_*`` computed elsewhere (the feature loss batches pairs of equal shapes into one call)
    preset_nuclear: Array | None = None

    def cross_matrix(self) -> Array:
        """A matrix with the singular values of ``X^T Y`` (here ``X^T Y`` itself)."""
        return self.xy

    def cross_svdvals(self) -> Array:
        """Singular values of ``X^T Y`` (whose sum is the nuclear norm used by Procrustes)."""
        return svdvals(self.xp, self.cross_matrix())

    def nuclear_norm(self) -> Array:
        """``||X^T Y||_*``; float32 tensors through :func:`repgeo.metrics._xp.nuclear_norm`'s eigenvalue route."""
        if self.preset_nuclear is not None:
            return self.preset_nuclear
        if type(self).cross_svdvals is not FeatureStats.cross_svdvals:  # a subclass supplies its own values
            return self.xp.sum(self.cross_svdvals())
        M = self.cross_matrix()
        if is_torch(M) and M.dtype == self.xp.float32:
            return nuclear_norm(self.xp, M)
        return self.xp.sum(svdvals(self.xp, M))

    def check_nonzero(self, metric: str) -> None:
        """Raise if either side is zero, where ``metric`` would divide by its norm."""
        for name, value in (("X", self.x_sq), ("Y", self.y_sq)):
            require(
                value > 0,
                f"{metric} is undefined: {name} is zero after preprocessing (constant columns are zero once centred)",
            )


class ArrayStats(FeatureStats):
    """Statistics of preprocessed arrays in memory, computed on demand and cached.

    The preprocessed matrices are ``(X - 1 mx^T) / sx`` and ``(Y - 1 my^T) / sy`` (see
    :func:`repgeo.metrics._prep.preprocess_scaled`): means (None: already centred) and Frobenius scales are
    applied to the statistics rather than to copies of the data.
    """

    def __init__(
        self,
        X: Array,
        Y: Array,
        sx: Array | float = 1.0,
        sy: Array | float = 1.0,
        mx: Array | None = None,
        my: Array | None = None,
        sqx: Array | None = None,
        sqy: Array | None = None,
    ) -> None:
        self.xp = namespace(X, Y)
        self.n, self.p = X.shape
        self.q = Y.shape[1]
        self._raw = (X, Y)
        self._sx, self._sy = sx, sy
        self._mx, self._my = mx, my
        self._sqx, self._sqy = sqx, sqy  # ||X - 1 mx^T||_F^2 when the preprocessing formed it

    @cached_property
    def data(self) -> tuple[Array, Array]:  # type: ignore[override]
        """The preprocessed matrices, materialised."""
        (X, Y), sx, sy = self._raw, self._sx, self._sy
        if self._mx is not None:
            X = X - self._mx
        if self._my is not None:
            Y = Y - self._my
        return X / sx, Y / sy

    def _cross(self, A: Array, B: Array, ma: Array | None, mb: Array | None) -> Array:
        """``(A - 1 ma^T)^T (B - 1 mb^T)`` without forming the centred copies."""
        out = gram(A) if A is B else A.T @ B
        if ma is not None or mb is not None:
            ma = col_mean(self.xp, A) if ma is None else ma
            mb = col_mean(self.xp, B) if mb is None else mb
            out = out - self.n * (ma.T @ mb)
        return out

    def _sq(self, A: Array, m: Array | None) -> Array:
        flat = self.xp.reshape(A, (-1,))
        out = flat @ flat
        if m is not None:
            mf = self.xp.reshape(m, (-1,))
            out = out - self.n * (mf @ mf)
        return out

    @property
    def sample_space(self) -> bool:
        """Whether n x n Gram matrices are cheaper than p x q cross-products."""
        n, p, q = self.n, self.p, self.q
        return n * (p + q) < p * p + q * q + p * q

    @cached_property
    def xy(self) -> Array:  # type: ignore[override]
        X, Y = self._raw
        return self._cross(X, Y, self._mx, self._my) / (self._sx * self._sy)

    @cached_property
    def xx(self) -> Array:  # type: ignore[override]
        X = self._raw[0]
        return self._cross(X, X, self._mx, self._mx) / self._sx**2

    @cached_property
    def yy(self) -> Array:  # type: ignore[override]
        Y = self._raw[1]
        return self._cross(Y, Y, self._my, self._my) / self._sy**2

    @cached_property
    def x_sq(self) -> Array:
        sq = self._sq(self._raw[0], self._mx) if self._sqx is None else self._sqx
        return sq / self._sx**2

    @cached_property
    def y_sq(self) -> Array:
        sq = self._sq(self._raw[1], self._my) if self._sqy is None else self._sqy
        return sq / self._sy**2

    @cached_property
    def gram_rows(self) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
        """For K = XX^T and L = YY^T: ``((diag K, K 1), (diag L, L 1))``, in O(n (p + q)), no n x p copies.

        With the lazy preprocessing ``A = (A' - 1 m^T) / s``: ``diag(AA^T)_i = (||a'_i||^2 - 2 a'_i.m + ||m||^2)
        / s^2`` and ``AA^T 1 = A (A^T 1)``, which is exactly 0 when ``m`` is the column mean (centred data).
        """
        (X, Y), (sx, sy), (mx, my) = self._raw, (self._sx, self._sy), (self._mx, self._my)
        return self._gram_row_terms(X, mx, sx), self._gram_row_terms(Y, my, sy)

    def _gram_row_terms(self, A: Array, m: Array | None, s: Array | float) -> tuple[Array, Array]:
        xp = self.xp
        d = row_sq(A)
        if m is not None:  # m is A's column mean: the centred rows sum to 0, so K 1 = 0
            mf = xp.reshape(m, (-1,))
            d = d - 2 * (A @ mf) + mf @ mf
            return d / s**2, xp.zeros_like(d)
        return d / s**2, (A @ xp.sum(A, axis=0)) / s**2

    def centred_rows(self) -> tuple[Array, Array, Array | float, Array | float]:
        """``(A, B, sx, sy)`` with the preprocessed matrices ``A / sx`` and ``B / sy``: the centring is applied to
        copies where it was folded into the statistics (``mx``/``my``), the scales are not applied.

        For estimators that must not subtract the rank-one mean correction from uncentred products (it cancels
        the means' energy in the working precision; see :func:`repgeo.metrics.cka.cka`'s float32 route).
        """
        (X, Y), (mx, my) = self._raw, (self._mx, self._my)
        return (X if mx is None else X - mx), (Y if my is None else Y - my), self._sx, self._sy

    @cached_property
    def grams(self) -> tuple[Array, Array]:
        X, Y = self.data
        return X @ X.T, Y @ Y.T

    def cross_matrix(self) -> Array:
        """A matrix with the singular values of ``X^T Y``; n x n factors when n < min(p, q).

        With orthonormal bases ``Q_x`` (p x n) and ``Q_y`` (q x n) of the row spaces of X and Y (from QR of
        X^T and Y^T, which span them whatever the rank), ``X^T Y = Q_x (X Q_x)^T (Y Q_y) Q_y^T``, so the
        singular values are those of the n x n matrix ``(X Q_x)^T (Y Q_y)``: O(n^2 (p + q)) instead of
        O(pq min(p, q)). The bases are held constant for autograd; the gradient is exact wherever the
        nuclear norm is differentiable, because it lies in those row spaces.
        """
        n, p, q = self.n, self.p, self.q
        if n >= min(p, q):
            return self.xy
        X, Y = self.data
        if is_torch(X):
            import torch

            with torch.no_grad():
                Qx, Qy = torch.linalg.qr(X.T).Q, torch.linalg.qr(Y.T).Q
        else:
            Qx, Qy = np.linalg.qr(X.T).Q, np.linalg.qr(Y.T).Q
        return (X @ Qx).T @ (Y @ Qy)

    def gram_inner(self) -> tuple[Array, Array, Array]:
        if not self.sample_space:
            return super().gram_inner()
        xp = self.xp
        K, L = self.grams
        return xp.sum(K * K), xp.sum(L * L), xp.sum(K * L)

    def gram_dist_sq(self) -> Array:
        if not self.sample_space:
            return super().gram_dist_sq()
        K, L = self.grams
        D = K - L
        return self.xp.sum(D * D)


def pair_stats(
    X: object, Y: object = None, *, center: bool, normalize: Any, min_rows: int = 2
) -> FeatureStats:
    """Statistics of ``(X, Y)`` arrays, or of a :class:`~repgeo.metrics.Moments` given alone as ``X``."""
    from ._prep import check_options, check_pair, preprocess_scaled_sq

    check_options(center, normalize)
    if Y is None and hasattr(X, "stats"):
        return X.stats(center=center, normalize=normalize, min_rows=min_rows)
    if Y is None:
        raise TypeError("Y is missing: pass two arrays (X, Y) or a single Moments object")
    # one pass for the column sums and one for the squared norm per input; NaN/Inf are caught from the latter
    Xm, Ym = check_pair(X, Y, min_rows=min_rows, finite=False)
    Xp, mx, sx, sqx = preprocess_scaled_sq(Xm, "X", center=center, normalize=normalize)
    Yp, my, sy, sqy = preprocess_scaled_sq(Ym, "Y", center=center, normalize=normalize)
    return ArrayStats(Xp, Yp, sx, sy, mx, my, sqx, sqy)
