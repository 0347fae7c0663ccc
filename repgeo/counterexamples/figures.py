"""Figures for the counterexamples: per-case metric values and orders of blindness, the optimisation curves, the
invariance heatmap.

Every function returns a matplotlib ``Figure`` of a fixed size (``FIGSIZE`` inches at ``DPI``, i.e.
1000 x 450 pixels when saved with :func:`save`) and never calls ``pyplot.show``; the caller saves or displays it.
Figures are created through the object API (``matplotlib.figure.Figure``), so no GUI backend is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .certificate import Counterexample
from .invariance import invariance_matrix
from .optimize import OptimizationResult
from .orders import DISTANCES, LABELS, orders

FIGSIZE = (10.0, 4.5)
DPI = 100
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height) of a saved figure


def _new(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _bars(ax: object, table: pd.DataFrame, title: str) -> None:
    metrics = list(table.index)
    pairs = list(table.columns)
    width = 0.8 / max(len(pairs), 1)
    x = np.arange(len(metrics))
    for k, pair in enumerate(pairs):
        ax.bar(x + (k - (len(pairs) - 1) / 2) * width, table[pair].to_numpy(dtype=float), width, label=pair)
    ax.set_xticks(x)
    ax.set_xticklabels(metrics, rotation=40, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)


def _orders_panel(ax: object, table: pd.DataFrame, title: str, xlabel: str = "eps") -> None:
    """Every distance of an order sweep against eps on log-log axes, with its fitted slope (or "blind")."""
    fitted = orders(table)
    for name in DISTANCES:
        v = np.clip(table[name].to_numpy(dtype=float), 1e-17, None)
        s = fitted[name]
        label = f"{LABELS[name]}: blind" if np.isnan(s) else f"{LABELS[name]}: slope {s:.2f}"
        ax.loglog(table["eps"], v, "o-" if not np.isnan(s) else "x:", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)


def plot_counterexample(cx: Counterexample) -> Figure:
    """The certificate's metric values as grouped bars (one group per metric, one bar per pair), then, where the
    construction has them: the spherical pair's bars, the order sweep (every distance against the perturbation
    size, log-log, with fitted slopes), the dominant-direction curve."""
    table = cx.metric_table()
    spherical = [p.label for p in cx.pairs if p.normalize == "rows"]
    sweeps = [k for k in ("orders", "orders_sphere") if k in cx.data]
    shown = sweeps[-1:]  # the informative sweep: on the sphere when there is one (elsewhere all are blind)
    extra = bool(spherical) + len(shown) + (cx.name == "cka_dominant_direction")
    fig, axes = _new(1 + extra)
    _bars(axes[0], table.drop(columns=spherical), f"{cx.title}: metric values")
    k = 1
    if spherical:
        _bars(axes[k], table[spherical], "on the sphere (normalize='rows', center=False)")
        k += 1
    for key in shown:
        where = " on the sphere" if key == "orders_sphere" else ""
        _orders_panel(axes[k], cx.data[key], f"orders{where}: distance vs {cx.data['order_parameter']}",
                      cx.data["order_parameter"])
        k += 1
    if cx.name == "cka_dominant_direction":
        curve = cx.data["curve"]
        ax = axes[k]
        for name in ("cka", "nbs"):
            ax.loglog(curve["ratio"], 1 - curve[name], "o-", label=f"1 - {name}")
        for name in ("procrustes", "fg"):
            ax.loglog(curve["ratio"], curve[name], "s--", label=name)
        ax.set_xlabel("variance ratio of the shared direction")
        ax.set_title("distance from identical geometry", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_orders(cases: list[Counterexample]) -> Figure:
    """One panel per informative order sweep of the given constructions (log-log distance vs perturbation size;
    sweeps where every distance is blind are left out), on a grid of two rows."""
    panels = [(cx, key) for cx in cases for key in ("orders", "orders_sphere")
              if key in cx.data and not all(np.isnan(v) for v in orders(cx.data[key]).values())]
    cols = max(1, (len(panels) + 1) // 2)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = [fig.add_subplot(2 if len(panels) > 1 else 1, cols, i + 1) for i in range(len(panels))]
    for ax, (cx, key) in zip(axes, panels, strict=True):
        where = " (sphere)" if key == "orders_sphere" else ""
        _orders_panel(ax, cx.data[key], f"{cx.name}{where}", cx.data["order_parameter"])
    fig.tight_layout()
    return fig


def plot_optimization(results: dict[str, OptimizationResult],
                      shown: tuple[str, ...] = ("procrustes", "fg", "cka", "proj_mse")) -> Figure:
    """One panel per objective: the recorded metrics (distances, and 1 - similarity) along optimisation."""
    fig, axes = _new(len(results))
    for ax, (objective, res) in zip(axes, results.items(), strict=True):
        h = res.history
        for name in shown:
            if name not in h:
                continue
            values = 1 - h[name] if name in ("cka", "nbs", "cka_debiased", "cka_rbf") else h[name]
            label = f"1 - {name}" if name in ("cka", "nbs", "cka_debiased", "cka_rbf") else name
            ax.semilogy(h["step"], np.clip(values.to_numpy(dtype=float), 1e-16, None), label=label)
        ax.set_title(f"minimising {objective}", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_invariance(table: pd.DataFrame) -> Figure:
    """The invariance audit as a heatmap of log10 |change| (metric x transform); declared invariances framed."""
    wide = invariance_matrix(table)
    values = np.log10(np.clip(wide.to_numpy(dtype=float), 1e-16, None))
    fig, (ax,) = _new(1)
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=-16, vmax=0)
    ax.set_xticks(np.arange(wide.shape[1]))
    ax.set_xticklabels(wide.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(wide.shape[0]))
    ax.set_yticklabels(wide.index, fontsize=8)
    for i in range(wide.shape[0]):
        for j in range(wide.shape[1]):
            ax.text(j, i, f"{round(values[i, j]):d}", ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] < -8 else "black")
    ax.set_title("invariance audit: log10 |change of the metric| (blind spots are dark)", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG of exactly ``PIXELS`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path
