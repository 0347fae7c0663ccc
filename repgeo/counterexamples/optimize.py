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

The teacher of :func:`optimization_experiment` is *over-complete* by default: rank ``3 q`` (> q) inside p
dimensions, so no width-q student matches it exactly and the losses have different optima (with a rank-q
teacher every loss shares the same global optimum, an exact match, and any ranking only reflects the step
budget). Runs stop at ``steps`` or, with ``plateau_window``, at a plateau: the smallest loss of the last
``plateau_window`` steps is less than ``plateau_rtol`` (relative) below the smallest of the window before
(or the loss is below 1e-12). ``history["seconds"]`` is the optimiser's cumulative time (recording excluded),
for comparisons at equal wall time; ``snapshot_steps`` / ``snapshot_seconds`` keep the student at given step
counts / time budgets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from repgeo.metrics import available, get

from ._core import centred_orthonormal, check_float, check_int, orthonormal_rows, rng_from, standardise
from .certificate import metric_value, single_threaded
from .constructions import count_eps_orthogonal

DEFAULT_OBJECTIVES = ("proj_mse", "cka", "procrustes", "fg")
#: teacher rank / student width of the default teacher: > 1, so no student matches the teacher exactly
OVERCOMPLETE = 3


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
    """One run: the objective, the recorded history, the final student and the teacher's reference counts.

    ``converged_step``: the step at which the plateau criterion stopped the run (None: it ran to ``steps``).
    ``snapshots``: students kept along the way, keyed ``"step=<k>"`` and ``"seconds=<t>"`` (the student at the
    first step whose cumulative optimiser time reached t; the final student if the run ended sooner).
    """

    metric: str
    history: pd.DataFrame
    student: np.ndarray
    teacher_eps_orthogonal: int
    eps: float
    projection: str
    converged_step: int | None = None
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def final(self) -> pd.Series:
        return self.history.iloc[-1]


def _record(X: np.ndarray, Y: np.ndarray, eps: float, metrics: Sequence[str]) -> dict[str, float]:
    row: dict[str, float] = {}
    for name in metrics:
        try:
            row[name] = metric_value(name, X, Y)
        except Exception:
            row[name] = float("nan")
    row["eps_orthogonal"] = count_eps_orthogonal(Y, eps, center=True)
    row["eps_orthogonal_kept"] = count_eps_orthogonal(Y, eps, reference=X, center=True)
    return row


@dataclass
class _Stop:
    """The plateau criterion and the snapshot requests of one run."""

    window: int | None
    rtol: float
    steps: tuple[int, ...]
    seconds: tuple[float, ...]
    best: list[float] = field(default_factory=list)  # smallest loss of each completed window

    def plateau(self, step: int, losses: list[float]) -> bool:
        if self.window is None or step == 0 or step % self.window:
            return False
        self.best.append(min(losses[-self.window:]))
        if self.best[-1] < 1e-12:
            return True
        return len(self.best) >= 2 and self.best[-2] - self.best[-1] < self.rtol * self.best[-2]


def optimize_student(teacher: object, metric: str = "procrustes", q: int = 16, steps: int = 300, seed: int = 0,
                     *, lr: float = 0.05, record_every: int = 25, projection: str = "learned",
                     eps: float = 0.1, plateau_window: int | None = None, plateau_rtol: float = 1e-4,
                     snapshot_steps: Sequence[int] = (), snapshot_seconds: Sequence[float] = (),
                     record_metrics: Sequence[str] | None = None) -> OptimizationResult:
    """Train a random student of width ``q`` to minimise ``metric``'s smooth loss against ``teacher``.

    ``teacher``: n x p array (q < p required). ``metric``: a registered name. At most ``steps`` Adam steps at
    learning rate ``lr``; with ``plateau_window`` the run stops earlier at a plateau (module docstring). Every
    ``record_every`` steps (and at the first and last) the registered metrics (``record_metrics``, default
    all), the loss, the cumulative optimiser ``seconds`` and the eps-orthogonal counts are recorded in
    ``history``. ``projection``: "learned" (TinyBERT-style projector trained jointly; default) or "closed"
    (registry closed form) — only used when ``metric == "proj_mse"``.
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
    window = None if plateau_window is None else check_int("plateau_window", plateau_window, 1)
    rtol = check_float("plateau_rtol", plateau_rtol, low=0.0)
    stop = _Stop(window, rtol, tuple(check_int("snapshot_steps", k, 0) for k in snapshot_steps),
                 tuple(check_float("snapshot_seconds", t, low=0.0) for t in snapshot_seconds))
    metrics = list(available()) if record_metrics is None else [get(m).name for m in record_metrics]
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

    rows: list[dict[str, float]] = []
    snaps: dict[str, np.ndarray] = {}
    with single_threaded():  # tiny matrices: one thread is faster and does not fight other jobs
        converged = _run(steps, record_every, loss_fn, opt, rows, X, Y, eps, metrics, stop, snaps)
    final = Y.detach().numpy().copy()
    for key in [f"step={k}" for k in stop.steps] + [f"seconds={t:g}" for t in stop.seconds]:
        snaps.setdefault(key, final)  # budgets the run never reached: it ended (converged) before
    return OptimizationResult(metric, pd.DataFrame(rows), final, count_eps_orthogonal(X, eps, center=True), eps,
                              projection if metric == "proj_mse" else "-", converged, snaps)


def _run(steps: int, record_every: int, loss_fn: Callable[[], Any], opt: Any, rows: list[dict[str, float]],
         X: np.ndarray, Y: Any, eps: float, metrics: Sequence[str], stop: _Stop,
         snaps: dict[str, np.ndarray]) -> int | None:
    """The optimisation loop; returns the step at which the plateau criterion stopped it (None: ``steps``)."""
    losses: list[float] = []
    seconds = 0.0
    pending = sorted(stop.seconds)
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn()
        seconds += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        plateaued = stop.plateau(step, losses)
        done = step == steps or plateaued
        if step in stop.steps:
            snaps[f"step={step}"] = Y.detach().numpy().copy()
        while pending and seconds >= pending[0]:
            snaps[f"seconds={pending.pop(0):g}"] = Y.detach().numpy().copy()
        if step % record_every == 0 or done:
            row = {"step": step, "loss": losses[-1], "seconds": seconds}
            row.update(_record(X, Y.detach().numpy().copy(), eps, metrics))
            rows.append(row)
        if done:
            return step if plateaued else None
        t0 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - t0
    return None


def optimization_experiment(teacher: object = None, objectives: Sequence[str] = DEFAULT_OBJECTIVES, q: int = 16,
                            steps: int = 300, seed: int = 0, **kwargs: object) -> dict[str, OptimizationResult]:
    """Run :func:`optimize_student` once per objective from the same initial student (same ``seed``).

    ``teacher`` defaults to the over-complete ``make_teacher(rank=3 q, seed=seed)`` (needs 3 q <= 64). Extra
    keyword arguments go to :func:`optimize_student`.
    """
    X = make_teacher(rank=OVERCOMPLETE * q, seed=seed) if teacher is None else teacher
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
