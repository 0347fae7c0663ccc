"""The theory's zero-loss-but-misaligned constructions, each returning a certified :class:`Counterexample`.

One module per theorem: :mod:`.projection` (Theorem 2 and the minibatch case), :mod:`.theorem1` (Theorem 1),
:mod:`.cka_limits` (translation, dominant direction), :mod:`.equivalence` (Procrustes <=> FG); this module
gathers them and holds the Figure 2a statistic.

Conventions: teacher ``X`` (n x p), student ``Y`` (n x q), metrics with the defaults of
:mod:`repgeo.metrics` (columns centred, unit Frobenius norm) unless a pair says otherwise. The returned arrays
already follow that convention (centred, ``||.||_F = 1``), except where a construction is about leaving it
(:func:`cka_translation`). Notation: K = XX^T, L = YY^T the n x n sample Gram matrices, D_P the Procrustes
distance, D_FG = ||K - L||_F, ``eps`` the float64 machine epsilon (or, in an order sweep, the perturbation size).
"""

from __future__ import annotations

import numpy as np

from ._core import check_float
from .certificate import Counterexample
from .cka_limits import cka_dominant_direction, cka_translation
from .equivalence import procrustes_fg_equivalence
from .projection import projection_invertible, projection_minibatch, projection_prediction
from .theorem1 import cka_antiparallel, cka_theorem1_prediction


def count_eps_orthogonal(Y: object, eps: float, *, reference: object = None, center: bool = False) -> int:
    """The number of epsilon-orthogonal pairs of vectors (rows): ``#{i < j : |cos(y_i, y_j)| <= eps}``.

    The paper's Figure 2a statistic (its exact definition is not public; this is our reading). With
    ``reference`` (e.g. the teacher, same number of rows) only pairs that are eps-orthogonal in *both* are
    counted: how many of the reference's eps-orthogonal pairs ``Y`` keeps. ``center=True`` removes the column
    means first (the geometry the centring metrics see). A zero row is an error.
    """
    eps = check_float("eps", eps, low=0.0)
    A = np.asarray(Y.detach().cpu() if hasattr(Y, "detach") else Y, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2:
        raise ValueError(f"Y must be a 2-D array with at least 2 rows; got shape {A.shape}")

    def ortho(M: np.ndarray) -> np.ndarray:
        if center:
            M = M - M.mean(axis=0)
        norms = np.linalg.norm(M, axis=1)
        if np.any(norms == 0):
            raise ValueError("a row is zero; its angle to the others is undefined")
        C = (M / norms[:, None]) @ (M / norms[:, None]).T
        return np.abs(C[np.triu_indices(M.shape[0], 1)]) <= eps

    mask = ortho(A)
    if reference is not None:
        R = np.asarray(reference.detach().cpu() if hasattr(reference, "detach") else reference, dtype=np.float64)
        if R.ndim != 2 or R.shape[0] != A.shape[0]:
            raise ValueError(f"reference must have the same number of rows as Y; got {R.shape} and {A.shape}")
        mask &= ortho(R)
    return int(mask.sum())


def all_counterexamples(seed: int = 0) -> list[Counterexample]:
    """Every construction with its default sizes."""
    return [
        projection_invertible(seed=seed),
        projection_invertible(q=16, seed=seed),
        projection_minibatch(seed=seed),
        cka_antiparallel(seed=seed),
        cka_translation(seed=seed),
        cka_dominant_direction(seed=seed),
        procrustes_fg_equivalence(seed=seed),
    ]


__all__ = [
    "all_counterexamples",
    "cka_antiparallel",
    "cka_dominant_direction",
    "cka_theorem1_prediction",
    "cka_translation",
    "count_eps_orthogonal",
    "procrustes_fg_equivalence",
    "projection_invertible",
    "projection_minibatch",
    "projection_prediction",
]
