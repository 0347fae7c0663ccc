"""Parallel runs: a stage's pending runs trained by ``workers`` processes at once (``--workers N``).

A stage's runs are independent once the decisions they rest on are made (the learning rate and α grids' points,
the pilot's and the main stage's seeds); what depends on their results (a grid extension, a decision) is found
by planning the stage again. So a stage runs as: plan it (``execute=False``: its pending runs), train those in
the pool, plan again, until nothing is pending; then the stage runs in the deciding process, which finds every
run in the log and makes its decisions exactly as a one-process study does. The runs themselves do not change:
the same specifications, seeds and settings, so a study may switch between one process and several at any
stage boundary (or after an interruption).

Each worker process builds one :class:`~.study.Study` (``worker=True``: it prepares a regime once -- teacher,
data, scorers -- records nothing but runs and decides nothing) and appends each finished run to the shared log
(:meth:`~.runs.RunLog.add`: one locked, fsynced append). ``threads`` are shared out between the workers. A run
whose teacher cache (logits or features, built by the first run that needs it) or geometry cache is not on disk
yet is trained first by the deciding process, so that no two workers build the same cache.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runs import RunSpec
    from .study import Study

#: the stages that train runs (the others decide from the log or write the report)
PARALLEL_STAGES = ("lr", "sweep", "pilot", "main", "confirm")

_WORKER: Study | None = None


def _start_worker(preset: str, work: str, threads: int, limit_regimes: int | None) -> None:
    import os
    import sys

    import torch

    from repgeo.demo.students import silence_transformers

    from .study import Study

    global _WORKER
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    silence_transformers()
    pid = os.getpid()
    _WORKER = Study(preset, Path(work), limit_regimes=limit_regimes, worker=True,
                    log=lambda m: print(f"[distill_quality worker {pid}] {m}", file=sys.stderr, flush=True))


def _train(spec: RunSpec) -> str:
    """Train ``spec`` in this worker (its row is appended to the log); its key."""
    if _WORKER is None:
        raise RuntimeError("worker not started")
    regime = next(r for r in _WORKER.regimes if r.name == spec.regime)
    _WORKER.do(regime, spec)
    return spec.key


def _first_of_its_cache(study: Study, spec: RunSpec) -> bool:
    """Whether ``spec`` would build a cache that no run has built yet (then the deciding process trains it)."""
    from .data import regime_folder

    r = next(x for x in study.regimes if x.name == spec.regime)
    folder = regime_folder(study.work, r)
    if spec.method != "ft":
        kind = "features" if spec.feature else "logits"
        if not (folder / f"teacher_cache_mean-{kind}.pt").exists():
            return True
    geometry = spec.stage == "main" and spec.seed < study.preset.min_seeds
    return geometry and not any(folder.glob("geometry-teacher-*.npy"))


class Pool:
    """``workers`` processes (spawned: a clean interpreter each), ``threads`` torch threads shared among them."""

    def __init__(self, study: Study, workers: int, threads: int) -> None:
        if workers < 2:
            raise ValueError(f"workers must be >= 2 for a pool, got {workers}")
        self.study, self.workers = study, workers
        per = max(1, threads // workers)
        self.executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(study.name, str(study.work), per, study.limit_regimes))

    def train_stage(self, stage: str) -> None:
        """Train every run ``stage`` needs (see the module docstring); the deciding ``study``'s log is reloaded."""
        from .study import Study

        st = self.study
        needs = {"lr": None, "sweep": "lr" if st.preset.lr_grid else None, "pilot": "comparator", "main": "power",
                 "confirm": "confirm_power"}
        if needs[stage] and not all(needs[stage] in st.decisions.get(r.name, {}) for r in st.regimes):
            return  # the stage runs in the deciding process alone (and says what is missing)
        while True:
            planner = Study(st.name, st.work, execute=False, log=lambda m: None, limit_regimes=st.limit_regimes)
            getattr(planner, stage)()
            pending = list(dict.fromkeys(spec for _, spec, _ in planner.pending))
            if not pending:
                break
            first: list[Any] = []
            for spec in pending:
                if _first_of_its_cache(st, spec):
                    first.append(spec)
                    break
            for spec in first:  # builds the cache in this process; the rest wait for the next plan
                st.do(next(r for r in st.regimes if r.name == spec.regime), spec)
            if not first:
                list(self.executor.map(_train, pending))
            st.reload_runs()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
