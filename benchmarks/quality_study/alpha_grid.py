"""The α grid per feature loss and its extension rule.

The relative α of a feature loss (``loss.alpha_relative``: the feature term starts at α × the task loss scale) is
swept over a geometric grid, every point run with the same ``sweep_seeds`` seeds, scored on dev. The chosen α is
the point with the highest mean dev score (ties: the one nearest α = 1 in log scale). **Extension rule:** while
the chosen α is the smallest point of the grid, one more point ``min / r`` is added; while it is the largest,
``max × r`` (``r`` the grid's ratio, 3 by default); at most ``max_extend`` points per loss. A choice is *interior*
when points on both sides of it were run; when the limit stops the extension at an edge the report says so.
"""

from __future__ import annotations

import math


def choose(means: dict[float, float]) -> float:
    """The α with the highest mean dev score (ties: the one nearest 1 in log scale)."""
    if not means:
        raise ValueError("means is empty: no α has been scored")
    return max(means, key=lambda a: (means[a], -abs(math.log(a))))


def grid_ratio(grid: tuple[float, ...] | list[float], default: float = 3.0) -> float:
    """The ratio of a geometric grid (``default`` for a one-point grid)."""
    g = sorted(grid)
    if any(a <= 0 for a in g):
        raise ValueError(f"alpha grid must be positive, got {list(grid)}")
    return g[1] / g[0] if len(g) > 1 else default


def is_interior(means: dict[float, float]) -> bool:
    a = choose(means)
    return min(means) < a < max(means)


def next_alpha(means: dict[float, float], ratio: float, *, added: int, max_extend: int) -> float | None:
    """The grid point to add next (see the module docstring), or None: the choice is interior, or ``added``
    points were already added and ``max_extend`` is reached."""
    if is_interior(means) or added >= max_extend:
        return None
    a = choose(means)
    return float(f"{max(means) * ratio:.6g}") if a == max(means) else float(f"{min(means) / ratio:.6g}")
