"""Converged training: train until the dev score plateaus (a ``transformers`` Trainer callback).

Criterion (:class:`Plateau`): the dev score is measured at the end of every epoch (``e = 1, 2, …``); an epoch
*gains* when its score exceeds the best earlier one by more than ``min_delta``; training stops after ``patience``
consecutive epochs without a gain, or after ``max_epochs``. The **best-on-dev weights are kept** (restored at the
end), so a run's dev score is the best of its curve and its *steps to the plateau* are the optimiser steps at the
end of that best epoch. The learning rate is constant after a linear warm-up (a decaying schedule would tie the
plateau to the schedule's length, not to the data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers.trainer_callback import TrainerCallback


@dataclass(frozen=True)
class Plateau:
    """Stop after ``patience`` epochs with no gain over the best by more than ``min_delta``, or at ``max_epochs``."""

    patience: int = 1
    max_epochs: int = 8
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")

    def best(self, curve: list[float]) -> int:
        """Index of the best epoch of ``curve`` (dev scores, one per epoch): the last epoch that gained."""
        if not curve:
            raise ValueError("curve is empty: no epoch has been scored")
        best = 0
        for i, value in enumerate(curve[1:], start=1):
            if value > curve[best] + self.min_delta:
                best = i
        return best

    def stop(self, curve: list[float]) -> bool:
        """Whether training stops after the last epoch of ``curve``."""
        return len(curve) >= self.max_epochs or len(curve) - 1 - self.best(curve) >= self.patience


@dataclass
class PlateauStop(TrainerCallback):
    """Scores the model on dev (``score(model) -> float``) at each epoch end, stops the Trainer by ``rule`` and
    restores the best epoch's weights at the end of training. ``curve``: ``{"epoch", "step", "dev"}`` per epoch;
    ``eval_seconds``: the time spent scoring (inside the Trainer's training time)."""

    score: Callable[[Any], float]
    rule: Plateau
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: float = 0.0
    _best_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def best(self) -> dict[str, float]:
        """The best epoch's entry of ``curve`` (its dev score and steps to the plateau)."""
        return self.curve[self.rule.best([c["dev"] for c in self.curve])]

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        t0 = time.perf_counter()
        value = float(self.score(model))
        self.eval_seconds += time.perf_counter() - t0
        self.curve.append({"epoch": len(self.curve) + 1, "step": int(state.global_step), "dev": value})
        devs = [c["dev"] for c in self.curve]
        if self.rule.best(devs) == len(devs) - 1:  # a new best: keep its weights
            self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.rule.stop(devs):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self._best_state is not None and model is not None:
            model.load_state_dict(self._best_state)
            self._best_state = None
