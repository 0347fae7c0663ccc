"""Centred kernel alignment (CKA): linear (biased and debiased HSIC) and RBF.

With K = X X^T and L = Y Y^T the sample Gram matrices of the preprocessed inputs and H = I - 11^T/n::

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   HSIC(K, L) = <HKH, HLH>_F   (biased)

For the linear kernel on centred inputs ``<K, L> = ||X^T Y||_F^2``, so linear CKA is computed in feature space
(``||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F)``) and never forms n x n matrices when n is large; it lies in
[0, 1]. Centring is part of the definition (Kornblith et al. 2019): ``center=False`` gives the *uncentred*
alignment (cosine of the raw Gram matrices), which is a different quantity.

``debiased=True`` uses the unbiased HSIC estimator of Song et al. (2012, JMLR 13, eq. 5), as proposed for CKA
by Nguyen, Raghu & Kornblith (2021)::

    HSIC_u(K, L) = [tr(K~L~) + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))

with K~, L~ the Gram matrices with zeroed diagonals; it needs n >= 4. For the linear kernel every term beyond
biased CKA's three Gram inner products comes from the diagonals of K and L and their row sums K 1 = X (X^T 1)
(zero on centred data), in O(n (p + q)) time and O(n) memory: no copy of the data is formed. Debiased CKA is
an inner-product cosine of U-centred matrices, so it lies in [-1, 1]: it can be slightly negative for unrelated
inputs, by construction. It needs the rows themselves (not only second moments), so it is not computable from
:class:`~repgeo.metrics.Moments`.

``kernel="rbf"``: K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)). Bandwidth rule for ``sigma=None``:
``sigma^2 = median`` of the squared pairwise distances (i != j), chosen separately for X and Y (the median
heuristic, as in Kornblith et al. 2019 with threshold 1); a float ``sigma`` is used for both sides. The RBF
kernel forms n x n matrices (O(n^2) memory, and an O(n^2 log n) sort for the median), so the distillation loss
refuses more than ``repgeo.distill.feature_loss.RBF_MAX_ROWS`` (1,024) rows per pair.
"""

from __future__ import annotations

from typing import Any, Literal

from ._prep import Normalize
from ._stats import ArrayStats, FeatureStats, pair_stats
from ._xp import Array, eps, float_dtype, full_precision, gram, in_float64, is_torch, require, row_sq, to_scalar_output

Kernel = Literal["linear", "rbf"]


def cka_from_stats(s: FeatureStats) -> Array:
    """Biased linear CKA from second-order statistics."""
    s.check_nonzero("CKA")
    xp = s.xp
    kk, ll, kl = s.gram_inner()
    return xp.clip(kl / xp.sqrt(kk * ll), min=0.0, max=1.0)


def _hsic_unbiased_linear(A: Array, B: Array, cross_fro_sq: Array) -> Array:
    """HSIC_u for linear kernels K = AA^T, L = BB^T, given ``||A^T B||_F^2`` (feature space)."""
    from ._xp import namespace, row_sq

    xp = namespace(A, B)
    da, db = row_sq(A), row_sq(B)  # diagonals of K and L
    return hsic_unbiased_from_rows(xp, cross_fro_sq, da, db, A @ xp.sum(A, axis=0), B @ xp.sum(B, axis=0))


def hsic_unbiased_from_rows(xp: Any, cross_fro_sq: Array, da: Array, db: Array, k1: Array, l1: Array) -> Array:
    """HSIC_u from ``<K, L>`` and O(n) row terms: the diagonals ``da``, ``db`` and row sums ``K 1``, ``L 1``.

    With K~ = K - diag(da): ``tr(K~ L~) = <K, L> - da.db``, ``K~ 1 = K 1 - da``, ``1^T K~ 1 = 1^T K 1 - sum da``.
    """
    n = da.shape[0]
    trace_term = cross_fro_sq - da @ db  # tr(K~ L~)
    ka1, kb1 = k1 - da, l1 - db  # K~ 1, L~ 1
    sum_a, sum_b = xp.sum(ka1), xp.sum(kb1)  # 1^T K~ 1, 1^T L~ 1
    value = trace_term + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ka1 @ kb1)
    return value / (n * (n - 3))


def _hsic_unbiased_matrix(xp: Any, K: Array, L: Array) -> Array:
    """HSIC_u for explicit kernel matrices (used by the RBF kernel)."""
    n = K.shape[0]
    mask = 1.0 - xp.eye(n, dtype=K.dtype, device=getattr(K, "device", None))
    Kt, Lt = K * mask, L * mask
    k1, l1 = xp.sum(Kt, axis=1), xp.sum(Lt, axis=1)
    value = xp.sum(Kt * Lt) + xp.sum(k1) * xp.sum(l1) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * xp.sum(k1 * l1)
    return value / (n * (n - 3))


def _centered_inner(xp: Any, K: Array, L: Array) -> Array:
    """Biased HSIC numerator ``<HKH, HLH>`` for explicit kernel matrices."""

    def center(M: Array) -> Array:
        return M - xp.mean(M, axis=0, keepdims=True) - xp.mean(M, axis=1, keepdims=True) + xp.mean(M)

    return xp.sum(center(K) * center(L))


def _cosine(
    xp: Any, kl: Array, kk: Array, ll: Array, name: str, lo: float, scales: tuple[Array, Array, int] | None = None,
    unit: float | None = None,
) -> Array:
    """``kl / sqrt(kk ll)``, refusing self-HSICs that are not positive beyond rounding.

    ``scales``: magnitudes of the terms the unbiased estimator cancels (``<K,K>/(n(n-3))``, same for L) and n;
    a self-HSIC below
    ``64 n eps`` times it is rounding noise (e.g. K proportional to the centring matrix, whose U-centred form is
    0), and the cosine would be noise too.
    """
    floor_k, floor_l = (0.0, 0.0)
    if scales is not None:
        tol = 64 * scales[2] * eps(kk) if unit is None else 64 * scales[2] ** 0.5 * unit
        floor_k, floor_l = tol * scales[0], tol * scales[1]
    require(
        (kk > floor_k) & (ll > floor_l),
        f"{name} is undefined: the HSIC of X or Y with itself is not positive beyond rounding "
        "(a constant input, too few distinct rows, or equal singular values with n <= width)",
    )
    return xp.clip(kl / xp.sqrt(kk * ll), min=lo, max=1.0)


def _sq_dists(xp: Any, A: Array) -> Array:
    d = xp.sum(A * A, axis=1)
    D2 = xp.clip(d[:, None] + d[None, :] - 2 * (A @ A.T), min=0.0)
    n = A.shape[0]
    return D2 * (1.0 - xp.eye(n, dtype=A.dtype, device=getattr(A, "device", None)))


def rbf_gram(A: Array, sigma: float | None = None) -> Array:
    """RBF kernel matrix with the median-heuristic bandwidth when ``sigma`` is None (see module docstring)."""
    from ._xp import namespace

    xp = namespace(A)
    D2 = _sq_dists(xp, A)
    if sigma is None:
        n = A.shape[0]
        off = xp.sort(xp.reshape(D2, (-1,)))[n:]  # drop the n zeros of the diagonal
        m = off.shape[0]
        s2 = (off[(m - 1) // 2] + off[m // 2]) / 2
        require(s2 > 0, "the RBF bandwidth is zero: more than half of the rows are identical")
    else:
        s2 = sigma**2
    return xp.exp(-D2 / (2 * s2))


@full_precision
def cka(
    X: object,
    Y: object = None,
    *,
    debiased: bool = False,
    kernel: Kernel = "linear",
    sigma: float | None = None,
    center: bool = True,
    normalize: Normalize = "frobenius",
) -> Array:
    """Centred kernel alignment between teacher ``X`` and student ``Y`` (a similarity; 1 = identical geometry).

    Linear biased CKA lies in [0, 1]; ``debiased=True`` (needs n >= 4) in [-1, 1]. ``kernel="rbf"`` with
    bandwidth ``sigma`` (None: median heuristic). Only biased linear CKA can take a
    :class:`~repgeo.metrics.Moments` as ``X``. On the torch backend, linear debiased CKA of float32 (or half)
    tensors forms its matrix products in float32 from explicitly centred rows and everything else in float64
    (error bound and measurements: :func:`_cka_debiased_float32`); the RBF kernel's debiased estimator is computed
    in float64 and returned in the input's dtype.
    """
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number or None; got {sigma!r}")
    if debiased and kernel == "linear" and _computed_in_float32(X, Y):
        return _cka_debiased_float32(X, Y, center=center, normalize=normalize)
    if debiased:
        return _cka_rowwise_float64(X, Y, kernel=kernel, sigma=sigma, center=center, normalize=normalize)
    return _cka(X, Y, debiased=False, kernel=kernel, sigma=sigma, center=center, normalize=normalize)


@in_float64
def _cka_rowwise_float64(X: object, Y: object = None, **kwargs: object) -> Array:
    return _cka(X, Y, debiased=True, **kwargs)


def _computed_in_float32(X: object, Y: object) -> bool:
    """Whether ``(X, Y)`` are floating tensors whose compute dtype is float32 (float32, float16 or bfloat16)."""
    if not (is_torch(X) and is_torch(Y) and X.dtype.is_floating_point and Y.dtype.is_floating_point):
        return False
    import torch

    return float_dtype(None, X) == torch.float32 and float_dtype(None, Y) == torch.float32


def _sum_sq64(M: Array) -> Array:
    """``||M||_F^2`` of a float32 tensor, accumulated in float64 (one reduction; no float64 copy is kept)."""
    import torch

    return torch.linalg.vector_norm(M, dtype=torch.float64).square()


def _gram_inner_float32(s: ArrayStats, A: Array, B: Array) -> tuple[Array, Array, Array]:
    """``(<K,K>, <L,L>, <K,L>)`` of K = AA^T, L = BB^T: products in float32, their sums in float64.

    Feature space (``A^T A``, ``B^T B``, ``A^T B``) or sample space (n x n Grams) as :class:`ArrayStats` chooses.
    """
    import torch

    if s.sample_space:
        K, L = A @ A.T, B @ B.T
        return _sum_sq64(K), _sum_sq64(L), torch.sum(K.to(torch.float64) * L.to(torch.float64))
    return _sum_sq64(gram(A)), _sum_sq64(gram(B)), _sum_sq64(A.T @ B)


def _cka_debiased_float32(X: object, Y: object, *, center: bool, normalize: Normalize) -> Array:
    """Linear debiased CKA of float32 tensors: products in float32 on explicitly centred rows, the rest in float64.

    Every O(n p q) product (``A^T B``, ``A^T A``, ``B^T B``; n x n Grams when those are cheaper) is a float32
    GEMM of the *centred* matrices A, B (centring applied to copies, never folded into uncentred products); their
    Frobenius norms are accumulated in float64, the O(n) row terms (``da``, ``db``, ``K 1``, ``L 1``) and the
    U-statistic combination run in float64, and the result is returned in float32. Why this is accurate:

    * HSIC_u is exactly invariant under translating all rows of A (or of B) by a constant vector t: the Gram
      matrix changes by ``u 1^T + 1 u^T + c 1 1^T`` (``u = A t``) off its diagonal, which U-centring removes,
      and the diagonal is not used. So the rounding of the float32 column means, a constant offset per column,
      changes nothing; only the relative rounding of each centred entry (<= u32 = 2^-24 = 6e-8) perturbs the
      data. The row sums ``K 1 = A (A^T 1)`` of the rounded centred matrix (tiny, not zero) are kept, so the
      estimator is that of the matrix at hand. When the rows are centred (``center=True``, ``normalize`` not
      ``"rows"``) they enter without a gradient: ``d(w.K1)/dA = w (A^T 1)^T + 1 (A^T w)^T``, whose second term
      the centring's backward removes exactly and whose first is of the order of the rounded column sums
      ``A^T 1`` (the float64 gradient keeps it; the tests compare the two).
    * What remains is cancellation: ``N_KL = n (n - 3) HSIC_u(K, L) = <K, L> - da.db + (row-sum terms)``
      subtracts the diagonal energy ``da.db`` from ``<K, L> = ||A^T B||_F^2``. The float32 GEMM's error
      (Higham, Thm 3.5: ``|dC| <= g_n |A|^T |B|``, ``g_n = n u32 / (1 - n u32)``) gives
      ``|d<K, L>| <= 2 g_n ||A^T B||_F ||A||_F ||B||_F``; with the amplification ratios
      ``rho_K = ||K||_F tr(K) / N_KK`` (>= 1 for centred K; ``rho_L`` likewise) the debiased CKA's absolute error
      is, to first order, ``|d CKA_u| <= 2 g_n (sqrt(rho_K rho_L) + |CKA_u| (rho_K + rho_L) / 2)
      <= 4 g_n max(rho_K, rho_L)`` (the float32 row norms add ``2 g_p`` times the same ratios).
      Rounding errors accumulate like ``sqrt(n) u32``, not ``n u32``, and ``||K||_F tr(K)`` overstates ``<K, K>``
      by up to sqrt(rank K), so the typical error is ``~ sqrt(n) u32 max(<K, K> / N_KK, <L, L> / N_LL)``. For
      centred features with n well above the widths the diagonal is a small share of ``<K, K>`` and these ratios
      are close to 1 (1.0-1.2 for real MPNet / MiniLM token features and random data at n = 4,096, widths 768
      and 384; errors 2e-11 to 5e-8 against a float64 reference, gradients within 1e-6): see
      ``tests/test_cka_float32.py``. The ratios grow when rows are nearly orthogonal (n at most the width) or a
      few rows carry most of the energy (4.2 at n = 64 rows of width 192; 3.9 with massive-activation rows).
      The rounding floor below refuses ratios above ``1 / (128 sqrt(n) u32)``, where the typical error would
      exceed 1/128. The analysis assumes IEEE float32 products: with TF32 matrix multiplication enabled on a GPU
      (``torch.set_float32_matmul_precision("high")``) u32 becomes 2^-11 for the products.

    A self-HSIC below ``64 sqrt(n) eps32`` (``eps32 = 2 u32``) times ``<K, K> / (n (n - 3))`` is refused as
    rounding noise: the float64 route's ``64 n eps64`` with float32's typical ``sqrt(n)`` growth (``64 n eps32``
    would refuse every input from n ~ 130,000 rows on, since ``N_KK <= <K, K>``).
    """
    import torch

    s = pair_stats(X, Y, center=center, normalize=normalize, min_rows=4)
    assert isinstance(s, ArrayStats)  # two tensors: the rows are at hand
    A, B, sa, sb = s.centred_rows()
    f64 = torch.float64
    sa2 = torch.as_tensor(sa, device=A.device).to(f64) ** 2
    sb2 = torch.as_tensor(sb, device=B.device).to(f64) ** 2
    kk_f, ll_f, kl_f = _gram_inner_float32(s, A, B)
    kk_f, ll_f, kl_f = kk_f / (sa2 * sa2), ll_f / (sb2 * sb2), kl_f / (sa2 * sb2)
    da, db = row_sq(A).to(f64) / sa2, row_sq(B).to(f64) / sb2
    centred = center and normalize != "rows"
    k1, l1 = (_row_sums(M, detach=centred).to(f64) / s2 for M, s2 in ((A, sa2), (B, sb2)))
    kk = hsic_unbiased_from_rows(torch, kk_f, da, da, k1, k1)
    ll = hsic_unbiased_from_rows(torch, ll_f, db, db, l1, l1)
    kl = hsic_unbiased_from_rows(torch, kl_f, da, db, k1, l1)
    n = s.n
    scales = (kk_f / (n * (n - 3)), ll_f / (n * (n - 3)), n)
    value = _cosine(torch, kl, kk, ll, "debiased CKA", -1.0, scales, unit=float(torch.finfo(torch.float32).eps))
    return to_scalar_output(value.to(torch.float32))


def _row_sums(A: Array, *, detach: bool) -> Array:
    """``K 1 = A (A^T 1)`` for K = AA^T, without a gradient when ``detach`` (centred rows: see above)."""
    if detach:
        A = A.detach()
    return A @ A.sum(dim=0)


def _cka(
    X: object, Y: object, *, debiased: bool, kernel: Kernel, sigma: float | None, center: bool, normalize: Normalize
) -> Array:
    s = pair_stats(X, Y, center=center, normalize=normalize, min_rows=4 if debiased else 2)
    if kernel == "linear" and not debiased:
        return to_scalar_output(cka_from_stats(s))
    if not isinstance(s, ArrayStats):
        what = "debiased CKA" if debiased else "RBF CKA"
        raise ValueError(f"{what} needs the rows themselves and cannot be computed from Moments")
    xp = s.xp
    if kernel == "linear":  # the biased CKA's three Gram inner products plus O(n (p + q)) row terms
        kk_f, ll_f, kl_f = s.gram_inner()
        (da, k1), (db, l1) = s.gram_rows
        kk = hsic_unbiased_from_rows(xp, kk_f, da, da, k1, k1)
        ll = hsic_unbiased_from_rows(xp, ll_f, db, db, l1, l1)
        kl = hsic_unbiased_from_rows(xp, kl_f, da, db, k1, l1)
        n = s.n
        scales = (kk_f / (n * (n - 3)), ll_f / (n * (n - 3)), n)
        return to_scalar_output(_cosine(xp, kl, kk, ll, "debiased CKA", -1.0, scales))
    A, B = s.data
    K, L = rbf_gram(A, sigma), rbf_gram(B, sigma)
    if debiased:
        n = s.n
        terms = (_hsic_unbiased_matrix(xp, K, L), _hsic_unbiased_matrix(xp, K, K), _hsic_unbiased_matrix(xp, L, L))
        scales = (xp.sum(K * K) / (n * (n - 3)), xp.sum(L * L) / (n * (n - 3)), n)
        return to_scalar_output(_cosine(xp, *terms, "debiased RBF CKA", -1.0, scales))
    terms = (_centered_inner(xp, K, L), _centered_inner(xp, K, K), _centered_inner(xp, L, L))
    return to_scalar_output(_cosine(xp, *terms, "RBF CKA", 0.0))
