"""The synthetic optimisation experiment (the paper's section 5.1, reconstructed).

A teacher ``X`` (n x p) is fixed; a student ``Y`` (n x q, q < p) starts from Gaussian noise and is trained with
Adam (float64) to minimise one registered metric's smooth loss form (``MetricSpec.loss``: squared Procrustes,
squared FG, 1 - CKA, ...). Along the way every registered metric, the loss and the epsilon-orthogonal counts
(:func:`~repgeo.counterexamples.count_eps_orthogonal`, on centred rows) are recorded.

Projection-MSE is optimised TinyBERT-style by default (``projection="learned"``): a projector W (q x p) is
learned jointly with the student and the loss is ``||Y^ W - X^||_F^2`` on the preprocessed (centred,
unit-Frobenius) matrices. ``projection="closed"`` uses the registry's closed form instead (``min_W`` solved
through a pseudo-inverse at every step). The recorded ``proj_mse`` is always the closed form, i.e. the best
projector for the current student.

The default teacher (:func:`make_teacher`) has rank ``q`` inside p dimensions, so a perfect student exists
(every loss can reach 0) and the question is *which* zero-loss student each objective finds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from repgeo.metrics import available, get

from ._core import (
    centred_orthonormal,
    check_float,
    check_int,
    metric_value,
    orthonormal_rows,
    rng_from,
    single_threaded,
    standardise,
)
from .constructions import count_eps_orthogonal

DEFAULT_OBJECTIVES = ("proj_mse", "cka", "procrustes", "fg")


def make_teacher(n: int = 200, p: int = 64, rank: int = 16, cond: float = 10.0, seed: int = 0) -> np.ndarray:
    """A centred, unit-Frobenius teacher of the given rank in p dimensions, singular values geometric from 1 to
    1/cond."""
    n = check_int("n", n, 2)
    p = check_int("p", p, 1)
    rank = check_int("rank", rank, 1)
    if rank > min(p, n - 1):
        raise ValueError(f"rank must be <= min(p, n - 1) = {min(p, n - 1)}; got {rank}")
    cond = check_float("cond", cond, low=1.0)
    rng = rng_from(seed)
    U = centred_orthonormal(n, rank, rng)
    return standardise(U @ np.diag(np.geomspace(1.0, 1.0 / cond, rank)) @ orthonormal_rows(rank, p, rng))


@dataclass
class OptimizationResult:
    """One run: the objective, the recorded history, the final student and the teacher's reference counts."""

    metric: str
    history: pd.DataFrame
    student: np.ndarray
    teacher_eps_orthogonal: int
    eps: float
    projection: str

    @property
    def final(self) -> pd.Series:
        return self.history.iloc[-1]


def _record(X: np.ndarray, Y: np.ndarray, eps: float) -> dict[str, float]:
    row: dict[str, float] = {}
    for name in available():
        try:
            row[name] = metric_value(name, X, Y)
        except Exception:
            row[name] = float("nan")
    row["eps_orthogonal"] = count_eps_orthogonal(Y, eps, center=True)
    row["eps_orthogonal_kept"] = count_eps_orthogonal(Y, eps, reference=X, center=True)
    return row


def optimize_student(teacher: object, metric: str = "procrustes", q: int = 16, steps: int = 300, seed: int = 0,
                     *, lr: float = 0.05, record_every: int = 25, projection: str = "learned",
                     eps: float = 0.1) -> OptimizationResult:
    """Train a random student of width ``q`` to minimise ``metric``'s smooth loss against ``teacher``.

    ``teacher``: n x p array (q < p required). ``metric``: a registered name. ``steps`` Adam steps at learning
    rate ``lr``; every ``record_every`` steps (and at the first and last) all registered metrics, the loss and
    the eps-orthogonal counts are recorded in ``history``. ``projection``: "learned" (TinyBERT-style projector
    trained jointly; default) or "closed" (registry closed form) — only used when ``metric == "proj_mse"``.
    """
    X = np.asarray(teacher, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"teacher must be a 2-D array with at least 2 rows; got shape {X.shape}")
    n, p = X.shape
    q = check_int("q", q, 1)
    if q >= p:
        raise ValueError(f"q must be < p (a narrower student); got q={q}, p={p}")
    steps = check_int("steps", steps, 0)
    record_every = check_int("record_every", record_every, 1)
    lr = check_float("lr", lr, low=0.0, strict=True)
    eps = check_float("eps", eps, low=0.0)
    if projection not in ("learned", "closed"):
        raise ValueError(f"projection must be 'learned' or 'closed'; got {projection!r}")
    spec = get(metric)
    import torch

    learned = metric == "proj_mse" and projection == "learned"
    gen = torch.Generator().manual_seed(int(seed))
    Xt = torch.as_tensor(X, dtype=torch.float64)
    Xhat = Xt - Xt.mean(0)
    Xhat = Xhat / torch.linalg.norm(Xhat)
    Y = torch.randn(n, q, generator=gen, dtype=torch.float64).requires_grad_(True)
    params = [Y]
    if learned:
        W = (torch.randn(q, p, generator=gen, dtype=torch.float64) / np.sqrt(q)).requires_grad_(True)
        params.append(W)
    opt = torch.optim.Adam(params, lr=lr)

    def loss_fn() -> torch.Tensor:
        if learned:
            Yc = Y - Y.mean(0)
            return torch.sum((Yc / torch.linalg.norm(Yc) @ W - Xhat) ** 2)
        return spec.loss(Xt, Y)

    rows = []
    with single_threaded():  # tiny matrices: one thread is faster and does not fight other jobs
        _run(steps, record_every, loss_fn, opt, rows, X, Y, eps)
    return OptimizationResult(metric, pd.DataFrame(rows), Y.detach().numpy().copy(),
                              count_eps_orthogonal(X, eps, center=True), eps,
                              projection if metric == "proj_mse" else "-")


def _run(steps: int, record_every: int, loss_fn: Callable[[], Any], opt: Any, rows: list[dict[str, float]],
         X: np.ndarray, Y: Any, eps: float) -> None:
    for step in range(steps + 1):
        loss = loss_fn()
        if step % record_every == 0 or step == steps:
            row = {"step": step, "loss": float(loss.detach())}
            row.update(_record(X, Y.detach().numpy().copy(), eps))
            rows.append(row)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()


def optimization_experiment(teacher: object = None, objectives: Sequence[str] = DEFAULT_OBJECTIVES, q: int = 16,
                            steps: int = 300, seed: int = 0, **kwargs: object) -> dict[str, OptimizationResult]:
    """Run :func:`optimize_student` once per objective from the same initial student (same ``seed``).

    ``teacher`` defaults to ``make_teacher(rank=q, seed=seed)``. Extra keyword arguments go to
    :func:`optimize_student`.
    """
    X = make_teacher(rank=q, seed=seed) if teacher is None else teacher
    return {name: optimize_student(X, name, q=q, steps=steps, seed=seed, **kwargs)  # type: ignore[arg-type]
            for name in objectives}


def optimization_summary(results: dict[str, OptimizationResult]) -> pd.DataFrame:
    """Final values of every recorded quantity, one row per objective (plus the teacher's eps-orthogonal
    count)."""
    rows = []
    for name, res in results.items():
        row = {"objective": name, **res.final.drop(labels=["step"]).to_dict(),
               "teacher_eps_orthogonal": res.teacher_eps_orthogonal}
        rows.append(row)
    return pd.DataFrame(rows).set_index("objective")
