"""repgeo: representational geometry for knowledge distillation.

Metrics (Procrustes, Feature-Gram, CKA, projection-MSE) with a numpy analysis backend and a differentiable
torch backend, exact at any number of samples through streaming :class:`Moments`; a layer-probe collector
(:func:`collect`), teacher/student audits (:mod:`repgeo.audit`), the theory's counterexamples
(:mod:`repgeo.counterexamples`) and geometry-aware distillation (:mod:`repgeo.distill`, :func:`run_distillation`).

Every name here is loaded on first use, so ``import repgeo`` (and the ``repgeo`` command's ``--help``) imports
neither numpy nor torch: the metric functions load :mod:`repgeo.metrics` (numpy only), :func:`collect` and
:func:`run_distillation` load torch and transformers. ``repgeo.audit`` and ``repgeo.distill`` are the packages
(their entry points are ``repgeo.audit.audit`` and ``repgeo.distill.run_distillation``): a function of the same
name would be replaced by the package as soon as the package is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_METRICS = ("Moments", "available", "bures", "cka", "compare", "fg", "get", "nbs", "procrustes", "proj_mse",
            "register")

__all__ = [
    "Moments",
    "__version__",
    "audit",
    "available",
    "bures",
    "cka",
    "collect",
    "compare",
    "distill",
    "fg",
    "get",
    "nbs",
    "procrustes",
    "proj_mse",
    "register",
    "run_distillation",
]

if TYPE_CHECKING:
    from . import audit, distill
    from .distill import run_distillation
    from .metrics import Moments, available, bures, cka, compare, fg, get, nbs, procrustes, proj_mse, register
    from .probe import collect


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562) and keep it, so later lookups are plain attribute reads."""
    if name in _METRICS:
        import repgeo.metrics as metrics

        value = getattr(metrics, name)
    elif name == "collect":
        from .probe import collect as value
    elif name == "run_distillation":
        from .distill import run_distillation as value
    elif name == "audit":
        import repgeo.audit as value
    elif name == "distill":
        import repgeo.distill as value
    else:
        raise AttributeError(f"module 'repgeo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
