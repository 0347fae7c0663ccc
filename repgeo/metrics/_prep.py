"""Input checks and preprocessing shared by every metric.

Conventions (stated once for the whole package)
-----------------------------------------------
* ``X`` is the reference (teacher), shape (n, p); ``Y`` the candidate (student), shape (n, q). Rows are the
  same n stimuli (sentences or tokens); columns are features, and p != q is normal.
* Preprocessing always runs in this order:

  1. ``center=True``: column means are removed;
  2. ``normalize="rows"``: every (centred) row is divided by its Euclidean norm, so each sample lies on the unit
     sphere, and the matrix is then divided by ``sqrt(n)``: every sample carries the weight ``1/n``, so sums
     over samples become means and ``||X||_F = 1`` (the same scale as ``"frobenius"``). Hence under "rows"
     ``sqrt(n) X`` has unit rows, ``D_FG = ||C_X - C_Y||_F / n`` where ``C`` is the n x n matrix of cosines
     between the (centred) samples (the root-mean-square change of a cosine over all ordered pairs), and
     ``D_P^2 = 2 - 2 ||X^T Y||_*``: values (and a loss's scale) do not grow with the batch size n. Rows are not
     re-centred afterwards: centring after the projection would move them off the sphere;
  3. ``normalize="frobenius"``: each matrix is divided by its Frobenius norm (so ``||X||_F = 1``);
     ``normalize=None`` leaves the scale alone.

* Bad input raises ``TypeError`` / ``ValueError`` naming the argument: different row counts, too few rows,
  not 2-D, NaN or Inf, complex/bool/object dtypes, numpy mixed with torch, tensors on different devices, a
  zero row under ``normalize="rows"`` (after centring: a row equal to the column means), and a matrix that is
  zero after preprocessing when the metric must divide by its norm (the metric is undefined there; we raise
  rather than return NaN).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from repgeo._validation import NORMALIZATIONS, check_bool, check_choice

from ._xp import Array, checks_deferred, col_mean, float_dtype, is_torch, namespace, require

Normalize = Literal["frobenius", "rows"] | None


def as_matrix(a: object, name: str, *, finite: bool = True) -> Array:
    """Validate one input matrix and convert it to the backend's compute dtype.

    Integers are converted to floating point; bool, complex and object dtypes are refused. ``finite=False``
    leaves the NaN/Inf check to the caller (:func:`preprocess_scaled` makes it from a sum it forms anyway).
    """
    if is_torch(a):
        import torch

        if a.dtype == torch.bool or a.is_complex():
            raise TypeError(f"{name} has dtype {a.dtype}; expected a real floating or integer tensor")
        x = a.to(float_dtype(None, a))
    else:
        if isinstance(a, np.ndarray):
            arr = a
        else:
            try:
                arr = np.asarray(a)
            except Exception as exc:  # ragged lists and the like
                raise TypeError(f"{name} cannot be converted to an array: {exc}") from exc
        if arr.dtype == bool or arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} has dtype {arr.dtype}; expected a real floating or integer array")
        x = arr.astype(np.float64, copy=False)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n samples x features); got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns (shape {tuple(x.shape)})")
    xp = namespace(x)
    if checks_deferred() and is_torch(x):  # no host sync: a NaN or Inf makes the sum non-finite
        if finite:  # (otherwise _preprocess_sync_free checks it from the range it reads anyway)
            require(xp.isfinite(xp.sum(x)), f"{name} contains NaN or Inf (or values whose sum overflows)")
        return x
    # one cheap pass: a NaN or Inf makes the sum non-finite; only then (or on overflow) look element-wise
    if finite and not bool(xp.isfinite(xp.sum(x))):
        check_finite(x, name)
    return x


def check_finite(x: Array, name: str) -> None:
    """Element-wise NaN/Inf check, naming the first bad entry (run only when a sum came out non-finite)."""
    xp = namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        bad = np.argwhere(~np.isfinite(np.asarray(x.detach().cpu() if is_torch(x) else x)))
        r, c = (int(v) for v in bad[0])
        raise ValueError(
            f"{name} contains NaN or Inf ({len(bad)} value(s); the first at row {r}, column {c})"
        )


def check_pair(X: object, Y: object, *, min_rows: int = 2, finite: bool = True) -> tuple[Array, Array]:
    """Validate a pair: same backend, same device, same row count, at least ``min_rows`` rows.

    ``finite=False``: the NaN/Inf check is left to :func:`preprocess_scaled` (see :func:`as_matrix`).
    """
    if is_torch(X) != is_torch(Y):
        kinds = {True: "a torch tensor", False: "a numpy array"}
        raise TypeError(
            f"X and Y must use the same backend; X is {kinds[is_torch(X)]} and Y is {kinds[is_torch(Y)]}"
        )
    Xm, Ym = as_matrix(X, "X", finite=finite), as_matrix(Y, "Y", finite=finite)
    if is_torch(Xm) and Xm.device != Ym.device:
        raise ValueError(f"X and Y are on different devices ({Xm.device} and {Ym.device})")
    if is_torch(Xm) and Xm.dtype != Ym.dtype:
        wider = Xm.dtype if Xm.dtype.itemsize >= Ym.dtype.itemsize else Ym.dtype
        Xm, Ym = Xm.to(wider), Ym.to(wider)
    if Xm.shape[0] != Ym.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (stimuli); got {Xm.shape[0]} and {Ym.shape[0]}"
        )
    if Xm.shape[0] < min_rows:
        raise ValueError(f"X and Y need at least {min_rows} rows; got {Xm.shape[0]}")
    return Xm, Ym


def check_options(center: object, normalize: object) -> None:
    check_bool("center", center)
    check_choice("normalize", normalize, NORMALIZATIONS)


def _sum_sq(xp: Any, x: Array) -> Array:
    """``sum(x**2)`` without a temporary (a BLAS dot product of the flattened array)."""
    flat = xp.reshape(x, (-1,))
    return flat @ flat


def unit_rows(x: Array, name: str) -> Array:
    """Divide every row by its Euclidean norm (overflow-safe); a zero row is an error."""
    xp = namespace(x)
    scale = xp.max(xp.abs(x), axis=1, keepdims=True)
    require(
        xp.all(scale > 0),
        f"{name} has an all-zero row (after centring when center=True: a row equal to the column means), "
        "which cannot be put on the unit sphere (normalize='rows')",
    )
    xs = x / scale
    return xs / xp.sqrt(xp.sum(xs * xs, axis=1, keepdims=True))


def sphere_rows(x: Array, name: str, *, center: bool) -> Array:
    """``normalize="rows"``: centre (if ``center``), put every row on the unit sphere, divide by ``sqrt(n)``.

    A row that centring leaves at rounding level (max |entry| <= 8 eps max|x|, e.g. a row equal to the column
    means) has no direction and is refused like a zero row, rather than turned into a unit vector of noise.
    """
    xp = namespace(x)
    if center:
        big = xp.max(xp.abs(x))
        x = x - col_mean(xp, x)
        floor = 8 * xp.finfo(x.dtype).eps * big
        x = xp.where(xp.max(xp.abs(x), axis=1, keepdims=True) <= floor, xp.zeros_like(x), x)
    return unit_rows(x, name) / (x.shape[0] ** 0.5)


def frobenius_norm(x: Array, name: str) -> Array:
    """``||x||_F``, computed without overflow or underflow; an all-zero matrix is an error."""
    xp = namespace(x)
    sq = _sum_sq(xp, x)
    info = xp.finfo(x.dtype)
    if bool(xp.isfinite(sq)) and bool(sq > info.smallest_normal / info.eps):  # no overflow, no underflow
        return xp.sqrt(sq)
    scale = xp.max(xp.abs(x))
    if not bool(scale > 0):
        raise ValueError(
            f"{name} is zero after preprocessing (constant columns are zero once centred); "
            "the metric is undefined for it"
        )
    return scale * xp.sqrt(_sum_sq(xp, x / scale))


# Centring is folded into the statistics (X_c^T Y_c = X^T Y - n m_x m_y^T, ||X_c||^2 = ||X||^2 - n ||m_x||^2)
# instead of copying the data while r = ||X||_F^2 / ||X_c||_F^2 (the energy share of the column means) is at most
# this. Accuracy bound (Higham, Thm 3.5 for the GEMM): fl(X^T Y) = X^T Y + E with ||E||_F <= g_n ||X||_F ||Y||_F,
# g_n = n eps / (1 - n eps), so after the rank-one correction and the normalisation by ||X_c|| ||Y_c|| the
# cross-product's error is at most g_n sqrt(r_x r_y) (and the nuclear norm's sqrt(min(p, q)) times that): the
# bound of the centred copy (r = 1) times sqrt(r_x r_y) <= 100, at most two decimal digits. Observed errors are
# far below the worst case (rounding errors grow like sqrt(n) eps, not n eps): 1e-14 at n = 50,000 with r ~ 10
# (benchmarks/results/metrics_speed_realistic.json); tests/test_metrics_speed_paths.py checks bound and agreement.
# In float32 (torch inputs) the ratio stays at 8 (about one digit), since its eps leaves fewer digits to lose.
LAZY_CENTER_MAX_ENERGY_RATIO = 100.0
LAZY_CENTER_MAX_ENERGY_RATIO_FLOAT32 = 8.0


def lazy_center_max_ratio(xp: Any, x: Array) -> float:
    """The largest mean-energy ratio centred lazily in ``x``'s dtype (see above)."""
    return LAZY_CENTER_MAX_ENERGY_RATIO if xp.finfo(x.dtype).eps < 1e-10 else LAZY_CENTER_MAX_ENERGY_RATIO_FLOAT32


def _well_scaled(xp: Any, x: Array, sq: Array) -> bool:
    """Whether a sum of squares neither overflowed nor lost precision to underflow in ``x``'s dtype.

    Then every product the metrics form (bounded by such norms, by Cauchy-Schwarz) is representable too.
    """
    info = xp.finfo(x.dtype)
    return bool(xp.isfinite(sq)) and bool(sq > info.smallest_normal / info.eps)


def preprocess_scaled(
    x: Array, name: str, *, center: bool, normalize: Normalize
) -> tuple[Array, Array | None, Array | float]:
    """Preprocess without copying the data where possible.

    Returns ``(x', m, s)``: the preprocessed matrix is ``(x' - 1 m^T) / s``, with ``m`` None when ``x'`` is
    already centred (or ``center=False``, or ``normalize="rows"``, which materialises its centred unit rows) and
    ``s = 1`` unless ``normalize="frobenius"``. Metrics apply ``m``
    and ``s`` to the statistics; :func:`preprocess` materialises the matrix. Inputs so large or small that
    their squares leave the dtype's range are rescaled explicitly (Frobenius normalisation) or refused with an
    error naming the argument (no normalisation), never turned into inf or a silent 0.
    """
    return preprocess_scaled_sq(x, name, center=center, normalize=normalize)[:3]


def preprocess_scaled_sq(
    x: Array, name: str, *, center: bool, normalize: Normalize
) -> tuple[Array, Array | None, Array | float, Array | None]:
    """:func:`preprocess_scaled` plus ``||x' - 1 m^T||_F^2`` (None where not formed), from one pass each.

    The squared norm it forms anyway doubles as the NaN/Inf check (a non-finite entry makes it non-finite; only
    then is the matrix searched element-wise), so an input checked with ``finite=False`` is still checked.
    """
    xp = namespace(x)
    if checks_deferred() and is_torch(x):
        return _preprocess_sync_free(xp, x, name, center=center, normalize=normalize)
    total = _sum_sq(xp, x)
    if not bool(xp.isfinite(total)):
        check_finite(x, name)  # NaN or Inf: raises; otherwise the squares overflowed (handled below)
    if normalize == "rows":
        return sphere_rows(x, name, center=center), None, 1.0, None
    mean, sq = None, total
    if center:
        mean = col_mean(xp, x)
        centred = total - x.shape[0] * _sum_sq(xp, mean) if _well_scaled(xp, x, total) else None
        if centred is None or not bool(total <= lazy_center_max_ratio(xp, x) * centred):
            x, mean = x - mean, None
            sq = _sum_sq(xp, x)
        else:
            sq = centred
    if _well_scaled(xp, x, sq):
        return x, mean, (xp.sqrt(sq) if normalize == "frobenius" else 1.0), sq
    if mean is not None:
        x = x - mean
    if normalize == "frobenius":  # extreme scale: divide first (overflow-safe norm), then form products
        return x / frobenius_norm(x, name), None, 1.0, None
    if bool(xp.max(xp.abs(x)) > 0):
        raise ValueError(
            f"{name}'s squared norm is outside the range of {x.dtype} (values too large or too small); "
            "pass float64 inputs or use normalize='frobenius'"
        )
    return x, None, 1.0, None


def _preprocess_sync_free(
    xp: Any, x: Array, name: str, *, center: bool, normalize: Normalize
) -> tuple[Array, None, Array | float, Array | None]:
    """The branch-free preprocessing used inside :func:`~repgeo.metrics._xp.deferred_checks` (a training loss).

    Returns :func:`preprocess_scaled_sq`'s ``(x', None, s, ||x'||_F^2)``. For ``"frobenius"``: ``x' = (x - 1 m^T)
    2^-e`` in one fused pass, with ``2^e`` the power of two just above ``max |x|`` (so no square overflows or
    underflows whatever the scale, and the scaling is exact: ``x' = fl(x - m) 2^-e``), held constant for autograd
    (the unit-norm result does not depend on it, so the gradient is exact); the norm ``s`` is applied to the p x q
    statistics, not to the n x p matrix. Centring is explicit (a lazy rank-one correction would need a host-side
    test of its accuracy). The conditions an eager call would test are recorded instead.
    """
    if normalize != "frobenius":
        require(xp.isfinite(xp.sum(x)), f"{name} contains NaN or Inf (or values whose sum overflows)")
    if normalize == "rows":
        return sphere_rows(x, name, center=center), None, 1.0, None
    if normalize == "frobenius":
        import torch

        lo, hi = torch.aminmax(x.detach())
        big = torch.maximum(hi, -lo)
        require(torch.isfinite(big), f"{name} contains NaN or Inf")
        # 2^-e with 2^(e-1) <= big < 2^e; e is kept >= that of the smallest normal, so 2^-e stays finite for a
        # subnormal big (the scaled values are then below 1, which is all the scaling needs)
        e_min = math.frexp(float(xp.finfo(x.dtype).smallest_normal))[1]
        inv = torch.ldexp(torch.ones_like(big), -torch.frexp(big).exponent.clamp(min=e_min))
        x = torch.addcmul(col_mean(xp, x) * -inv, x, inv) if center else x * inv
        sq = _sum_sq(xp, x)
        require(
            sq > 0,
            f"{name} is zero after preprocessing (constant columns are zero once centred); "
            "the metric is undefined for it",
        )
        return x, None, xp.sqrt(sq), sq
    if center:
        x = x - col_mean(xp, x)
    info = xp.finfo(x.dtype)
    sq = _sum_sq(xp, x)
    require(
        xp.isfinite(sq) & ((sq > info.smallest_normal / info.eps) | (xp.max(xp.abs(x)) == 0)),
        f"{name}'s squared norm is outside the range of {x.dtype} (values too large or too small); "
        "pass float64 inputs or use normalize='frobenius'",
    )
    return x, None, 1.0, sq


def preprocess(x: Array, name: str, *, center: bool, normalize: Normalize) -> Array:
    """Apply center -> rows -> frobenius, in that order (see module docstring)."""
    x, mean, scale = preprocess_scaled(x, name, center=center, normalize=normalize)
    if mean is not None:
        x = x - mean
    return x / scale if normalize == "frobenius" else x


def prepare_pair(
    X: object, Y: object, *, center: bool, normalize: Normalize, min_rows: int = 2
) -> tuple[Array, Array]:
    """Validate and preprocess a pair; returns arrays in the backend's compute dtype."""
    check_options(center, normalize)
    Xm, Ym = check_pair(X, Y, min_rows=min_rows)
    return (
        preprocess(Xm, "X", center=center, normalize=normalize),
        preprocess(Ym, "Y", center=center, normalize=normalize),
    )
