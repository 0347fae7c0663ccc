"""Cost of the corrected estimators and null floors on the demo's audit size, as ratios to the plug-in audit.

The demo audits 6 students (7 teacher hidden states x 4 student ones, 256 held-out texts, 384-d features): point
values on the whole grid, then 3 mapped cells with 20 jackknife folds and 50 permutations (floors from 5 of them),
then projection-MSE at the last pair. This script times the same calls on synthetic anisotropic features, for
``estimator="plugin"`` and ``"corrected"`` alternately (twice each, so load drift shows), one BLAS thread.

    python benchmarks/audit_overhead.py          # about 5 minutes on 2 cores

Writes ``benchmarks/results/audit_overhead.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from repgeo.audit import audit_features

HERE = Path(__file__).resolve().parent
N, D = 256, 384
MAPPED = [("hidden_states.2", "hidden_states.1"), ("hidden_states.4", "hidden_states.2"),
          ("hidden_states.6", "hidden_states.3")]


def _features(rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
    s = np.arange(1, D + 1) ** -0.75
    return {f"hidden_states.{i}": (rng.standard_normal((N, D)) * s) @ np.linalg.qr(rng.standard_normal((D, D)))[0]
            for i in range(k)}


def time_audit(estimator: str, teacher: dict, students: list[dict]) -> dict[str, float]:
    t0 = time.perf_counter()
    for S in students:
        audit_features(teacher, S, ["procrustes", "cka", "fg"], n_folds=0, n_perm=0, estimator=estimator)
    t1 = time.perf_counter()
    for S in students:
        audit_features(teacher, S, ["procrustes", "cka", "fg"], cells=MAPPED, n_folds=20, n_perm=50,
                       estimator=estimator)
    t2 = time.perf_counter()
    last_t, last_s = MAPPED[-1]
    for S in students:
        audit_features({last_t: teacher[last_t]}, {last_s: S[last_s]}, ["proj_mse"], n_folds=20, n_perm=5,
                       estimator=estimator)
    t3 = time.perf_counter()
    return {"grid_point_values": t1 - t0, "mapped_intervals_pvalues_floors": t2 - t1,
            "proj_mse_last_pair": t3 - t2, "total": t3 - t0}


def main() -> None:
    rng = np.random.default_rng(0)
    teacher, students = _features(rng, 7), [_features(rng, 4) for _ in range(6)]
    runs: dict[str, list[dict[str, float]]] = {"plugin": [], "corrected": []}
    with threadpool_limits(1):
        for est in ("plugin", "corrected", "plugin", "corrected"):
            runs[est].append(time_audit(est, teacher, students))
            print(est, {k: round(v, 1) for k, v in runs[est][-1].items()}, flush=True)
    pairs = list(zip(runs["plugin"], runs["corrected"], strict=True))
    ratios = {k: [c[k] / p[k] for p, c in pairs] for k in runs["plugin"][0]}
    out = {"command": "python benchmarks/audit_overhead.py", "seconds": runs, "ratio_corrected_to_plugin": ratios}
    (HERE / "results" / "audit_overhead.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
