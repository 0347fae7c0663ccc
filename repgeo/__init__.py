"""repgeo: representational geometry for knowledge distillation.

Metrics (Procrustes, Feature-Gram, CKA, projection-MSE) with a numpy analysis backend and a differentiable
torch backend, exact at any number of samples through streaming :class:`Moments`.
"""

from .metrics import Moments, available, bures, cka, compare, fg, get, nbs, procrustes, proj_mse, register

__version__ = "0.1.0"

__all__ = [
    "Moments",
    "__version__",
    "available",
    "bures",
    "cka",
    "compare",
    "fg",
    "get",
    "nbs",
    "procrustes",
    "proj_mse",
    "register",
]
