"""The theory's counterexamples, built and certified numerically.

Each construction returns a :class:`Counterexample` (teacher ``X``, student ``Y``, a statement of what it shows)
whose :meth:`~Counterexample.certify` lists every registered metric's value and every claim with its tolerance
and pass/fail. Inputs follow the theory's convention: centred, unit-Frobenius-norm matrices.

* :func:`projection_invertible` — projection-MSE = 0 under an invertible non-orthogonal map (Theorem 2);
  every other metric sees the map at first order in cond - 1;
* :func:`projection_minibatch` — projection-MSE = 0 for a pure-noise student when the batch has n <= q rows;
* :func:`cka_antiparallel` — Theorem 1: CKA barely tells the paper's configurations (a) and (b) apart; as
  distances, Procrustes sees the perturbation at first order, FG and CKA at second, debiased CKA not at all
  (it separates CKA from Procrustes, not from FG);
* :func:`cka_translation` — CKA is blind to translation, the spherical geometry is not;
* :func:`cka_dominant_direction` — CKA is dominated by one high-variance direction;
* :func:`procrustes_fg_equivalence` — D_P = 0 <=> D_FG = 0, and they differ away from zero;
* :mod:`.orders` — orders of blindness: each construction with a perturbation size eps is swept over
  eps in [0.01, 0.3] and the fitted log-log slopes of five distances are certified;
* :func:`count_eps_orthogonal` — the paper's Figure 2a statistic;
* :func:`invariance_audit` — every metric under every transform class (:mod:`.invariance`);
* :func:`optimize_student` / :func:`optimization_experiment` — the synthetic optimisation experiment (§5.1).

Modules: :mod:`.certificate` (:class:`Claim`, :class:`Pair`, :class:`Counterexample`, the printer
:func:`format_certificate` and the loop :func:`certify_all`), one module per theorem (:mod:`.projection`,
:mod:`.theorem1`, :mod:`.cka_limits`, :mod:`.equivalence`; :mod:`.constructions` gathers them), :mod:`.orders`,
:mod:`.invariance`, :mod:`.optimize` (§5.1), :mod:`.figures`; ``_core`` holds the constructions' private helpers.

Only :mod:`repgeo.metrics` is used from repgeo; every metric in its registry appears in every certificate.
"""

from .certificate import (
    ROUNDING_TOL,
    ZERO_DISTANCE_TOL,
    Claim,
    Counterexample,
    Pair,
    certify_all,
    format_certificate,
    single_threaded,
)
from .constructions import (
    all_counterexamples,
    cka_antiparallel,
    cka_dominant_direction,
    cka_theorem1_prediction,
    cka_translation,
    count_eps_orthogonal,
    procrustes_fg_equivalence,
    projection_invertible,
    projection_minibatch,
    projection_prediction,
)
from .invariance import audit_passed, invariance_audit, invariance_matrix
from .optimize import (
    OptimizationResult,
    make_teacher,
    optimization_experiment,
    optimization_summary,
    optimize_student,
)

__all__ = [
    "ROUNDING_TOL",
    "ZERO_DISTANCE_TOL",
    "Claim",
    "Counterexample",
    "OptimizationResult",
    "Pair",
    "all_counterexamples",
    "audit_passed",
    "certify_all",
    "cka_antiparallel",
    "cka_dominant_direction",
    "cka_theorem1_prediction",
    "cka_translation",
    "count_eps_orthogonal",
    "format_certificate",
    "invariance_audit",
    "invariance_matrix",
    "make_teacher",
    "optimization_experiment",
    "optimization_summary",
    "optimize_student",
    "procrustes_fg_equivalence",
    "projection_invertible",
    "projection_minibatch",
    "projection_prediction",
    "single_threaded",
]
