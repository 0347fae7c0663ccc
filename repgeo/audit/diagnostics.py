"""Sample-size diagnostics of an audit cell: when to trust its number.

Every row of an audit table carries ``n`` (rows: stimuli, or tokens with ``pooling="tokens"``), the feature
widths ``p`` (teacher) and ``q`` (student), the effective rank of each side (participation ratio
``(tr C)^2 / ||C||_F^2`` of its covariance, :func:`repgeo.metrics.estimators.effective_rank`) and a ``flag``:

* ``"plug-in, n < 10 x width"`` -- a plug-in estimate with fewer than :data:`PLUGIN_ROWS_PER_FEATURE` rows per
  feature of the wider side. The bias study (``benchmarks/results/estimator_bias.md``) finds the plug-in
  Procrustes distance of an unrelated 384-d pair still 0.1 below its population value at n = 10 d, and the
  closed-form projection-MSE is exactly 0 whenever n <= q;
* ``"n < width"`` -- a corrected / held-out estimate with fewer rows than features: its bias is much smaller but
  not negligible there (same study), so read it against its floor;
* ``""`` -- neither.

Width is ``max(p, q)``; token rows of the same text are not independent, so with token pooling the effective
sample size lies between the number of texts and of rows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from repgeo.metrics.estimators import corrected

__all__ = ["PLUGIN_ROWS_PER_FEATURE", "flag", "warning_line"]

PLUGIN_ROWS_PER_FEATURE = 10
FLAG_PLUGIN = f"plug-in, n < {PLUGIN_ROWS_PER_FEATURE} x width"
FLAG_FEW_ROWS = "n < width"


def flag(n: int, p: int, q: int, metric: str, estimator: str) -> str:
    """The reliability flag of one cell (see the module docstring)."""
    width = max(p, q)
    plug_in = metric != "cka_debiased" and (estimator == "plugin" or corrected(metric) is None)
    if plug_in and n < PLUGIN_ROWS_PER_FEATURE * width:
        return FLAG_PLUGIN
    if n < width:
        return FLAG_FEW_ROWS
    return ""


def warning_line(df: pd.DataFrame) -> str | None:
    """One line naming how many cells are flagged and the fix, or None when none is."""
    if "flag" not in df or not df["flag"].astype(bool).any():
        return None
    flagged = df[df["flag"].astype(bool)]
    n = int(flagged["n"].min())
    width = int(max(flagged["p"].max(), flagged["q"].max()))
    kinds: Any = sorted(set(flagged["flag"]))
    fix = (f"use at least {PLUGIN_ROWS_PER_FEATURE * width} stimuli, token rows (--pooling tokens), or the "
           "corrected estimators (--estimator corrected)" if FLAG_PLUGIN in kinds else
           f"use more stimuli (>= {width}) or token rows (--pooling tokens), and read each value against its floor")
    return (f"warning: {len(flagged)} of {len(df)} audit values rest on {n} rows for features up to {width} wide "
            f"({'; '.join(kinds)}): {fix}")
