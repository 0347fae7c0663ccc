"""Array-namespace helpers: one code path for numpy (analysis) and torch (differentiable).

Every metric is written once against the array API (through ``array-api-compat``). The backend is chosen by
the inputs:

* numpy (or anything ``numpy.asarray`` accepts) in -> computed and returned in float64 numpy;
* torch in -> computed in torch on the tensors' device, differentiable; float16/bfloat16 are promoted to
  float32, float32 and float64 are kept, integers become the default float dtype.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

Array = Any  # a numpy array or a torch tensor


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


def svdvals(xp: Any, a: Array) -> Array:
    """Singular values. Through ``linalg.svdvals``, whose gradient is stable at repeated values."""
    return xp.linalg.svdvals(a)


def pinv_hermitian(xp: Any, a: Array, rtol: float) -> Array:
    """Pseudo-inverse of a symmetric positive semi-definite matrix."""
    if is_torch(a):
        import torch

        return torch.linalg.pinv(a, rtol=rtol, hermitian=True)
    return np.linalg.pinv(a, rtol=rtol, hermitian=True)


def solve(xp: Any, a: Array, b: Array) -> Array:
    """Solve ``a @ x = b``."""
    return xp.linalg.solve(a, b)


def to_scalar_output(value: Array) -> Array:
    """A 0-d result: numpy float64 for the analysis backend, a 0-d tensor for torch. Never NaN or Inf."""
    if is_torch(value):
        import torch

        out = value.reshape(())
        finite = bool(torch.isfinite(out.detach()))
    else:
        out = np.float64(value)
        finite = bool(np.isfinite(out))
    if not finite:
        raise FloatingPointError(
            f"the metric evaluated to {float(out)} (overflow or underflow in {getattr(value, 'dtype', 'float')}); "
            "pass float64 inputs or normalised data"
        )
    return out


def full_precision(fn: Any) -> Any:
    """Run a metric with torch autocast disabled, so bf16/fp16 autocast regions compute it in float32 or wider.

    Inputs are promoted by :func:`repgeo.metrics._prep.as_matrix`; autocast would otherwise lower the matrix
    products back to half precision (and half-precision SVDs do not exist on every device).
    """
    import functools

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

    For estimators whose float32 rounding errors are not small (debiased CKA cancels large U-statistic terms;
    the closed-form projection squares the student's condition number), measured in
    ``benchmarks/results/float32_accuracy.json``. Gradients flow through the casts.
    """
    import functools

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
