"""Scalar and choice checks shared by every package, and the choice constants they check against.

Each check returns the value in its plain Python type and raises with a message that names the argument, the
rule and the value given: ``TypeError`` for the wrong kind of value (``bool`` is never an integer or a number
here, although Python says it is), ``ValueError`` for a value out of range or not among the choices. The
constants are the one copy of each set of names (poolings, normalisations, Procrustes kinds) that the
packages accept. Imports nothing of repgeo, so any package (``metrics`` included) may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FEATURE_POOLINGS",
    "NORMALIZATIONS",
    "POOLINGS",
    "PROCRUSTES_KINDS",
    "SENTENCE_POOLINGS",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "format_choices",
]

#: Poolings of the collector (:mod:`repgeo.probe.pooling`): one row per text (``cls``, ``mean``, ``last``), one
#: row per unpadded token (``tokens``), or the raw (batch, seq, dim) output (``none``).
POOLINGS: tuple[str, ...] = ("cls", "mean", "last", "tokens", "none")
#: Poolings that give feature rows a loss or a metric can use (all but ``none``).
FEATURE_POOLINGS: tuple[str, ...] = ("cls", "mean", "last", "tokens")
#: Poolings with one row per text, so that two models with different tokenizers can be paired.
SENTENCE_POOLINGS: tuple[str, ...] = ("mean", "cls", "last")
#: ``normalize`` of the metrics: Frobenius norm 1, every row on the unit sphere, or no scaling.
NORMALIZATIONS: tuple[str | None, ...] = ("frobenius", "rows", None)
#: ``kind`` of the Procrustes distance: ``sqrt(d²)``, ``d²`` (the smooth loss form) or the angle.
PROCRUSTES_KINDS: tuple[str, ...] = ("euclidean", "squared", "angular")


def format_choices(choices: Sequence[Any]) -> str:
    """``'a', 'b' or None``: the choices as a reader types them."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def check_choice(name: str, value: object, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``; ``ValueError`` (``"pooling must be one of 'cls', ... ; got 'max'"``)
    otherwise."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable or incomparable value
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {format_choices(choices)}; got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is ``True`` or ``False`` (not 0 / 1 or another truthy value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional); bools and floats are refused,
    numpy integers accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return int(value)


def check_float(name: str, value: object, *, low: float | None = None, strict: bool = False,
                high: float | None = None) -> float:
    """``value`` as a finite ``float``, ``> low`` (``strict``) or ``>= low``, and ``<= high`` (bounds optional);
    bools are refused, ints and numpy scalars accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if low is not None and (v <= low if strict else v < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}; got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}; got {value!r}")
    return v
