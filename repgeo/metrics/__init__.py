"""The metrics core: pure functions of two arrays (numpy -> float64 analysis, torch -> differentiable).

Conventions (preprocessing order, X = teacher, Y = student) are documented once in
:mod:`repgeo.metrics._prep`; the statistics interface and preprocessing that other packages build on are public in
:mod:`repgeo.metrics.stats`.
"""

from .cka import cka
from .gram import fg
from .moments import Moments
from .procrustes import bures, nbs, procrustes
from .projection import pkd_loss, proj_mse, proj_mse_learned
from .registry import MetricSpec, available, compare, get, register

__all__ = [
    "MetricSpec",
    "Moments",
    "available",
    "bures",
    "cka",
    "compare",
    "fg",
    "get",
    "nbs",
    "pkd_loss",
    "procrustes",
    "proj_mse",
    "proj_mse_learned",
    "register",
]
