"""Array-namespace helpers: one code path for numpy (analysis) and torch (differentiable).

Every metric is written once against the array API (through ``array-api-compat``). The backend is chosen by
the inputs:

* numpy (or anything ``numpy.asarray`` accepts) in -> computed and returned in float64 numpy;
* torch in -> computed in torch on the tensors' device, differentiable; float16/bfloat16 are promoted to
  float32, float32 and float64 are kept, integers become the default float dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import array_api_compat
import numpy as np

Array = Any  # a numpy array or a torch tensor

# A check is (condition, message, exception type); a list while checks are deferred (see deferred_checks)
Check = tuple[Array, "str | Callable[[], str]", type]
_PENDING: contextvars.ContextVar[list[Check] | None] = contextvars.ContextVar("repgeo_pending_checks", default=None)


@contextlib.contextmanager
def deferred_checks() -> Iterator[list[Check]]:
    """Run metrics without device-to-host synchronisation: value checks are collected, not evaluated.

    Inside the block every check that needs a tensor's value (finite inputs, non-zero norms, a finite result)
    appends its boolean condition to the yielded list instead of reading it back (``bool(tensor)`` waits for the
    device), and preprocessing takes its branch-free path (centred and scaled explicitly). The caller evaluates
    the conditions later, all at once, with :func:`raise_failed`. Numpy inputs are still checked at once (they
    cost no synchronisation).
    """
    pending: list[Check] = []
    token = _PENDING.set(pending)
    try:
        yield pending
    finally:
        _PENDING.reset(token)


def checks_deferred() -> bool:
    """Whether value checks are being deferred (inside :func:`deferred_checks`)."""
    return _PENDING.get() is not None


def require(ok: Array, message: str | Callable[[], str], exc: type = ValueError) -> None:
    """Raise ``exc(message)`` unless the boolean ``ok`` holds; deferred inside :func:`deferred_checks`."""
    pending = _PENDING.get()
    if pending is not None and is_torch(ok):
        pending.append((ok.detach(), message, exc))
        return
    if not bool(ok):
        raise exc(message() if callable(message) else message)


def all_passed(checks: list[Check]) -> Array | None:
    """One boolean tensor: whether every deferred condition holds (computed on the device, no sync)."""
    if not checks:
        return None
    import torch

    conds = [c.reshape(()).to(device=checks[0][0].device) for c, _, _ in checks]
    return torch.stack(conds).all()


def raise_failed(checks: list[Check]) -> None:
    """Evaluate deferred conditions with one synchronisation; raise the first failure's error."""
    ok = all_passed(checks)
    if ok is None or bool(ok):
        return
    for cond, message, exc in checks:
        if not bool(cond):
            raise exc(message() if callable(message) else message)


def is_torch(x: object) -> bool:
    """True for a torch tensor (without importing torch when it is not loaded)."""
    return array_api_compat.is_torch_array(x)


def namespace(*arrays: Array) -> Any:
    """The array-API namespace shared by ``arrays`` (numpy or torch)."""
    return array_api_compat.array_namespace(*arrays)


def float_dtype(xp: Any, x: Array) -> Any:
    """The floating dtype a metric computes in for input ``x`` (see module docstring)."""
    if not is_torch(x):
        return np.float64
    import torch

    if x.dtype in (torch.float32, torch.float64):
        return x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return torch.get_default_dtype()


def eps(x: Array) -> float:
    """Machine epsilon of ``x``'s dtype."""
    if is_torch(x):
        import torch

        return float(torch.finfo(x.dtype).eps)
    return float(np.finfo(x.dtype).eps)


def row_sq(a: Array) -> Array:
    """Squared Euclidean norm of every row, without an n x p temporary in the forward pass.

    numpy: an einsum contraction. torch: ``vector_norm(a, dim=1)**2``, a plain reduction (torch's einsum runs this
    contraction as n batched 1 x p x 1 products: 8.5 against 0.5 ms forward, 36 against 7.5 ms forward + backward
    at 4,096 x 768 float32 on one CPU thread), with a one-pass backward ``2 a * grad[:, None]``.
    """
    if is_torch(a):
        return _row_sq_function().apply(a) if a.requires_grad else _row_sq_torch(a)
    return np.einsum("ij,ij->i", a, a)


def _row_sq_torch(a: Array) -> Array:
    return _torch().linalg.vector_norm(a, dim=1).square()


@functools.cache
def _row_sq_function() -> Any:
    torch = _torch()

    class RowSq(torch.autograd.Function):
        """Squared row norms with the one-pass backward ``2 a * grad[:, None]``."""

        @staticmethod
        def forward(ctx: Any, a: Array) -> Array:
            ctx.save_for_backward(a)
            return _row_sq_torch(a)

        @staticmethod
        def backward(ctx: Any, grad: Array) -> Array:
            (a,) = ctx.saved_tensors
            return a * (2 * grad).unsqueeze(1)

    return RowSq


def col_mean(xp: Any, a: Array) -> Array:
    """Column means, shape (1, p), as one matrix-vector product ``1^T A / n``.

    A BLAS GEMV reads the matrix once at memory speed; torch's strided column reduction took 3.5x as long
    (160 vs 45 ms at 50,000 x 768 float64, one thread), numpy's 1.3x. Rounding: a dot product's error bound,
    ``n eps`` times the mean of ``|a_ij|`` per column (observed ~``sqrt(n) eps``), as for a summation.
    """
    ones = xp.ones((a.shape[0],), dtype=a.dtype, device=getattr(a, "device", None))
    return xp.reshape(ones @ a, (1, -1)) / a.shape[0]


def _nan_safe(decomposition: Callable[[Array], Array], a: Array) -> Array:
    """``decomposition(a)``; inside :func:`deferred_checks` a non-finite ``a`` gives NaN instead of an error.

    A LAPACK routine refuses non-finite input (reading its status is a host sync on a GPU); the deferred checks
    already record the bad input, so the decomposition runs on zeros and its result is set to NaN.
    """
    if not (checks_deferred() and is_torch(a)):
        return decomposition(a)
    import torch

    ok = torch.isfinite(a).all()
    out = decomposition(torch.where(ok, a, torch.zeros_like(a)))
    return torch.where(ok, out, torch.full_like(out, float("nan")))


def svdvals(xp: Any, a: Array) -> Array:
    """Singular values. Through ``linalg.svdvals``, whose gradient is stable at repeated values."""
    return _nan_safe(xp.linalg.svdvals, a)


def gram(a: Array) -> Array:
    """``a^T a``. For a tensor that needs a gradient, the backward is one GEMM, ``a (G + G^T)``, where autograd's
    matrix-product rule would make two (it does not know both factors are ``a``)."""
    if not (is_torch(a) and a.requires_grad):
        return a.T @ a
    return _gram_function().apply(a)


@functools.cache
def _gram_function() -> Any:
    torch = _torch()

    class Gram(torch.autograd.Function):
        """``a^T a`` with a one-GEMM backward (see :func:`gram`)."""

        @staticmethod
        def forward(ctx: Any, a: Array) -> Array:
            ctx.save_for_backward(a)
            return a.T @ a

        @staticmethod
        def backward(ctx: Any, grad: Array) -> Array:
            (a,) = ctx.saved_tensors
            return a @ (grad + grad.T)

    return Gram


def nuclear_norm(xp: Any, a: Array | Sequence[Array]) -> Array:
    """``||a||_*`` (sum of singular values) over the last two axes; torch float32 through :func:`_nuclear_eigh`.

    Float64 and numpy inputs sum ``svdvals`` (backward-stable to ``eps64``: the analysis accuracy). Float32
    tensors (a training loss) take the symmetric eigenvalue route, 2-3x faster than an SVD with vectors on a CPU
    and much faster on a GPU, batched over leading axes. ``a`` may also be a sequence of equally shaped matrices
    (e.g. one per layer pair): the result is then 1-d, and float32 tensors are stacked by the float64 cast itself
    (one copy, no stacked float32 intermediate).
    """
    if isinstance(a, (list, tuple)):
        if len(a) > 1 and all(is_torch(m) and m.dtype == _torch().float32 for m in a):
            return _nuclear_norm_eigh_function().apply(*a)
        a = xp.stack(list(a))
    if is_torch(a) and a.dtype == _torch().float32:
        return _nuclear_norm_eigh_function().apply(a)
    return xp.sum(svdvals(xp, a), axis=-1)


def _torch() -> Any:
    import torch

    return torch


def _nuclear_eigh(A: Array) -> tuple[Array, Array]:
    """Nuclear norm and polar factor ``U_r V_r^T`` of a float64 copy ``A`` (..., p, q) of float32 matrices, from
    the eigenvalues of a k x k Gram matrix, k = min(p, q), formed and decomposed in float64.

    ``C = A^T A`` (A in its tall orientation) has eigenvalues sigma_i^2 and eigenvectors V; then
    ``||A||_* = sum sqrt(lambda_i)`` and ``U V^T = A V Lambda^-1/2 V^T``. Error bound: eigh is backward stable,
    each computed eigenvalue is within ``c k eps64 sigma_1^2`` of the exact one, so each sigma_i is within
    ``min(sqrt(c k eps64) sigma_1, c k eps64 sigma_1^2 / sigma_i)`` and the nuclear norm within
    ``k sqrt(c k eps64) sigma_1`` (about 1.5e-4 sigma_1 at k = 384 if every sigma_i were tiny; ~1e-8 k sigma_1
    observed at exact zeros). That is the size of the float32 rounding of the matrix itself (Weyl: every sigma_i
    moves by up to ``||E||_2``, E the GEMM's error, k of them), so the route loses nothing a float32 loss has.
    Directions with ``lambda_i <= 16 k eps64 lambda_max`` (sigma_i below ~4e-7 sigma_1, where ``A v_i / sigma_i``
    is noise) get no gradient: the result is still a subgradient of the nuclear norm.

    Inside :func:`deferred_checks` a matrix with NaN or Inf entries gives a NaN norm and a zero polar factor
    instead of an error (LAPACK refuses non-finite input, and reading its status is a host sync on a GPU); the
    test reads only C's trace, which is non-finite exactly when A has a non-finite entry (squares of float32
    values cannot overflow float64), so it costs O(k) rather than a pass over A.
    Returns float64 ``(nuc, polar)``, the polar factor in ``A``'s own orientation.
    """
    torch = _torch()
    wide = A.shape[-2] < A.shape[-1]
    if wide:
        A = A.mT
    C = A.mT @ A
    ok = None
    if checks_deferred():
        ok = torch.isfinite(C.diagonal(dim1=-2, dim2=-1).sum(-1))
        C.masked_fill_(~ok[..., None, None], 0.0)
    lam, V = torch.linalg.eigh(C)  # ascending
    k = lam.shape[-1]
    keep = lam > 16 * k * torch.finfo(torch.float64).eps * lam[..., -1:]
    nuc = torch.sqrt(torch.clamp(lam, min=0.0)).sum(-1)
    # W = V Lambda^-1/2 V^T as (V Lambda^-1/4)(V Lambda^-1/4)^T, scaling eigh's own output in place
    quarter = torch.where(keep, torch.where(keep, lam, torch.ones_like(lam)) ** -0.25, torch.zeros_like(lam))
    Vs = V.mul_(quarter[..., None, :])
    polar = A @ (Vs @ Vs.mT)
    if ok is not None:
        nuc = torch.where(ok, nuc, torch.full_like(nuc, float("nan")))
        polar.masked_fill_(~ok[..., None, None], 0.0)
    return nuc, (polar.mT if wide else polar)


@functools.cache
def _nuclear_norm_eigh_function() -> Any:
    """The autograd Function, built on first use (torch is imported only once a tensor is seen)."""
    torch = _torch()

    class NuclearNormEigh(torch.autograd.Function):
        """Nuclear norm with gradient ``U_r V_r^T`` (see :func:`_nuclear_eigh`) of one batched float32 tensor, or
        of several equally shaped ones (stacked while casting to float64; the result is then 1-d)."""

        @staticmethod
        def forward(ctx: Any, *mats: Array) -> Array:
            if len(mats) == 1:
                A = mats[0].double()
            else:
                A = torch.empty((len(mats), *mats[0].shape), dtype=torch.float64, device=mats[0].device)
                for dst, m in zip(A, mats, strict=True):
                    dst.copy_(m)
            nuc, polar = _nuclear_eigh(A)
            ctx.save_for_backward(polar.to(mats[0].dtype))
            ctx.several = len(mats) > 1
            return nuc.to(mats[0].dtype)

        @staticmethod
        def backward(ctx: Any, grad: Array) -> Array | tuple[Array, ...]:
            (polar,) = ctx.saved_tensors
            scaled = grad[..., None, None] * polar
            return tuple(scaled) if ctx.several else scaled

    return NuclearNormEigh


def pinv_hermitian(xp: Any, a: Array, rtol: float) -> Array:
    """Pseudo-inverse of a symmetric positive semi-definite matrix."""
    if is_torch(a):
        import torch

        return _nan_safe(lambda m: torch.linalg.pinv(m, rtol=rtol, hermitian=True), a)
    return np.linalg.pinv(a, rtol=rtol, hermitian=True)


def solve(xp: Any, a: Array, b: Array) -> Array:
    """Solve ``a @ x = b``."""
    return xp.linalg.solve(a, b)


def to_scalar_output(value: Array) -> Array:
    """A 0-d result: numpy float64 for the analysis backend, a 0-d tensor for torch. Never NaN or Inf."""
    if is_torch(value):
        import torch

        out = value.reshape(())
        finite = torch.isfinite(out.detach())
    else:
        out = np.float64(value)
        finite = np.isfinite(out)
    require(
        finite,
        lambda: f"the metric evaluated to {float(out)} (overflow or underflow in "
        f"{getattr(value, 'dtype', 'float')}); pass float64 inputs or normalised data",
        FloatingPointError,
    )
    return out


def full_precision(fn: Any) -> Any:
    """Run a metric with torch autocast disabled, so bf16/fp16 autocast regions compute it in float32 or wider.

    Inputs are promoted by :func:`repgeo.metrics._prep.as_matrix`; autocast would otherwise lower the matrix
    products back to half precision (and half-precision SVDs do not exist on every device).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensor = next((a for a in args if is_torch(a)), None)
        if tensor is None:
            return fn(*args, **kwargs)
        import torch

        device_type = tensor.device.type
        if not torch.is_autocast_enabled(device_type):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def in_float64(fn: Any) -> Any:
    """Run a metric in float64 on the torch backend too, returning the inputs' compute dtype.

    For estimators whose float32 rounding errors are not small (debiased RBF CKA cancels large U-statistic terms
    of n x n kernels; the closed-form projection squares the student's condition number), measured in
    ``benchmarks/results/float32_accuracy.json``. Linear debiased CKA has its own mixed-precision route
    (:func:`repgeo.metrics.cka._cka_debiased_float32`). Gradients flow through the casts.
    """

    @functools.wraps(fn)
    def wrapper(X: Any, Y: Any = None, **kwargs: Any) -> Any:
        floating = is_torch(X) and is_torch(Y) and X.dtype.is_floating_point and Y.dtype.is_floating_point
        if not floating or X.device != Y.device:  # other inputs: the metric itself accepts or refuses them
            return fn(X, Y, **kwargs)
        import torch

        out_dtype = max(float_dtype(None, X), float_dtype(None, Y), key=lambda d: torch.finfo(d).bits)
        value = fn(X.to(torch.float64), Y.to(torch.float64), **kwargs)
        return value.to(out_dtype)

    return wrapper
