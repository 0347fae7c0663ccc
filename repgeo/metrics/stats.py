"""The public statistics and preprocessing interface of the metrics core, for the packages built on it.

``audit`` and ``distill`` import from here (or from :mod:`repgeo.metrics`), never from the private modules
behind it, which may change shape with the speed work.

* **Preprocessing** -- :func:`preprocess` (one matrix: centre, then rows on the unit sphere or unit Frobenius
  norm; the order and conventions are stated once in :mod:`repgeo.metrics._prep`), :func:`prepare_pair`
  (validate a pair, then preprocess both sides), :func:`unit_rows` (every row divided by its norm; a zero row is
  an error), :data:`Normalize` (the ``normalize`` choices as a type).
* **Statistics** -- :class:`FeatureStats` (``n``, ``X^T Y``, optionally ``X^T X`` / ``Y^T Y``, the squared norms
  and the Gram inner products: the one input every linear metric is a function of; subclass it to supply them
  another way), :class:`ArrayStats` (the same, computed lazily from preprocessed arrays in memory),
  :func:`pair_stats` (statistics of a pair of arrays or of a :class:`~repgeo.metrics.Moments`).
* **Deferred checks** -- inside :func:`deferred_checks` the metrics collect their value checks (finite inputs,
  non-zero norms) as device booleans instead of reading them back (no host synchronisation); :func:`all_passed`
  combines the collected :data:`Check` s on the device, :func:`raise_failed` evaluates them with one
  synchronisation and raises the first failure's error.
* :func:`namespace` -- the array-API namespace of numpy arrays or torch tensors (``Array`` is either).
* :func:`nuclear_norm` -- ``||A||_*`` over the last two axes (batched; float32 tensors through a float64
  eigenvalue route, whose bound is stated there), and :func:`to_scalar_output` -- a metric's 0-d result, refusing
  NaN/Inf (deferred inside :func:`deferred_checks`): for callers that batch a metric's parts.
"""

from ._prep import Normalize, prepare_pair, preprocess, unit_rows
from ._stats import ArrayStats, FeatureStats, pair_stats
from ._xp import Array, Check, all_passed, deferred_checks, namespace, nuclear_norm, raise_failed, to_scalar_output

__all__ = [
    "Array",
    "ArrayStats",
    "Check",
    "FeatureStats",
    "Normalize",
    "all_passed",
    "deferred_checks",
    "namespace",
    "nuclear_norm",
    "pair_stats",
    "prepare_pair",
    "preprocess",
    "raise_failed",
    "to_scalar_output",
    "unit_rows",
]
