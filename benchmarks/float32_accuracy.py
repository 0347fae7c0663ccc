"""Accuracy of the float32 torch backend against the float64 analysis backend, over the fuzz corpus.

The float32 inputs are rounded once; the float64 reference is computed from the same rounded values, so the
error measured is the computation's alone. Reports, per metric, the worst absolute error and the worst and
median relative error (relative errors over references with |value| >= 1e-3; near-zero distances are only
meaningful in absolute terms).

    python benchmarks/float32_accuracy.py [--cases 3000]

Writes benchmarks/results/float32_accuracy.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repgeo.metrics import available, get
from tests.test_fuzz_metrics import STRUCTURES, build


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "float32_accuracy.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    errors: dict[str, dict[str, list[float]]] = {name: {"abs": [], "rel": []} for name in available()}
    for i in range(args.cases):
        n, p, q = int(rng.integers(2, 200)), int(rng.integers(1, 64)), int(rng.integers(1, 64))
        scale = float(10.0 ** rng.uniform(-12, 12))
        X, Y = build(i, n, p, q, STRUCTURES[i % len(STRUCTURES)], scale)
        X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
        for name in available():
            spec = get(name)
            try:
                ref = float(spec(X32.astype(np.float64), Y32.astype(np.float64)))
                got = float(spec(torch.from_numpy(X32), torch.from_numpy(Y32)))
            except (ValueError, TypeError, FloatingPointError):
                continue
            err = abs(got - ref)
            errors[name]["abs"].append(err)
            if abs(ref) >= 1e-3:
                errors[name]["rel"].append(err / abs(ref))
    rows = {}
    print("| metric | cases | worst abs. error | worst rel. error | median rel. error |")
    print("|---|---|---|---|---|")
    for name, e in errors.items():
        rows[name] = {"cases": len(e["abs"]), "worst_abs": max(e["abs"]), "worst_rel": max(e["rel"]),
                      "median_rel": float(np.median(e["rel"]))}
        r = rows[name]
        print(f"| `{name}` | {r['cases']} | {r['worst_abs']:.1e} | {r['worst_rel']:.1e} | {r['median_rel']:.1e} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/float32_accuracy.py", "cases": args.cases,
                                    "metrics": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
