"""Geometry during training: audit metrics between mapped layers on a fixed probe set.

At every evaluation :class:`GeometryProbe` pools the teacher's and the student's mapped layers over the same
probe examples (the first ``probe_size`` evaluation examples), computes the requested registered metrics
(numpy float64, the analysis backend) and returns ``{"geometry/<metric>/<pair>": value}`` for the Trainer's
logs (and so TensorBoard when it is a ``report_to`` target). The history is written at the end as a CSV
(``step, pair, metric, value``) and a PNG of the curves. A teacher with its own tokenizer reads its own
tokenisation of the probe texts (:func:`~repgeo.distill.tasks.teacher_inputs`; one pooled row per example).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from repgeo.metrics import compare
from repgeo.probe.pooling import pool

from .feature_loss import pair_name
from .tasks import teacher_inputs


class GeometryProbe:
    """Fixed-probe-set geometry of mapped layer pairs; see the module docstring."""

    def __init__(
        self,
        items: list[dict[str, Any]],
        collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        layer_map: dict[int, int],
        *,
        pooling: str = "mean",
        metrics: list[str] | None = None,
        token_mask: Callable[[dict[str, torch.Tensor]], torch.Tensor | None] | None = None,
        batch_size: int = 16,
    ) -> None:
        if len(items) < 2:
            raise ValueError(f"the geometry probe set needs at least 2 examples; got {len(items)}")
        self.items, self.collate, self.layer_map = items, collate, dict(layer_map)
        self.pooling = pooling
        self.metrics = metrics or ["procrustes", "cka", "fg", "proj_mse"]
        self.token_mask = token_mask
        self.batch_size = batch_size
        self.history: list[dict[str, Any]] = []
        self._teacher: dict[int, torch.Tensor] | None = None

    @torch.no_grad()
    def _features(self, model: Any, layers: list[int], *, teacher: bool = False) -> dict[int, torch.Tensor]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rows: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
        for start in range(0, len(self.items), self.batch_size):
            batch = self.collate(self.items[start : start + self.batch_size])
            inputs = teacher_inputs(batch) if teacher else batch  # the teacher's own ids, when it has them
            mask = inputs["attention_mask"].to(device)
            out = model(input_ids=inputs["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
            tmask = self.token_mask(batch) if self.token_mask is not None else None
            for i in layers:
                rows[i].append(pool(out.hidden_states[i], mask, self.pooling, tmask).double().cpu())
        model.train(was_training)
        return {i: torch.cat(r) for i, r in rows.items()}

    def measure(self, teacher: Any, student: Any, step: int) -> dict[str, float]:
        """Metrics of every mapped pair at this step (also appended to :attr:`history`)."""
        if self._teacher is None:
            self._teacher = self._features(teacher, sorted(set(self.layer_map.values())), teacher=True)
        student_rows = self._features(student, list(self.layer_map))
        out: dict[str, float] = {}
        for s, t in self.layer_map.items():
            values = compare(self._teacher[t].numpy(), student_rows[s].numpy(), self.metrics)
            for metric, value in values.items():
                out[f"geometry/{metric}/{pair_name(s, t)}"] = float(value)
                self.history.append({"step": step, "pair": pair_name(s, t), "metric": metric, "value": float(value)})
        return out

    def write(self, folder: str | Path) -> tuple[Path, Path] | None:
        """Write ``geometry.csv`` and ``geometry.png`` (one panel per metric, one curve per pair)."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        import pandas as pd

        folder = Path(folder)
        frame = pd.DataFrame(self.history)
        csv = folder / "geometry.csv"
        frame.to_csv(csv, index=False)
        fig = plot_geometry(frame)
        png = folder / "geometry.png"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return csv, png


def plot_geometry(frame: Any) -> Any:
    """A figure of metric curves against training step from a geometry history frame (or CSV path)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        frame = pd.read_csv(frame)
    metrics = list(dict.fromkeys(frame["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = frame[frame["metric"] == metric]
        for pair, g in sub.groupby("pair", sort=False):
            ax.plot(g["step"], g["value"], marker="o", label=pair)
        ax.set_title(metric)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
