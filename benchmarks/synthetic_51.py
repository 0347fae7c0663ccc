"""The paper's section 5.1 synthetic experiment, at convergence, with an over-complete teacher and several seeds.

Setup (per seed s): teacher ``make_teacher(n=200, p=64, rank=48, cond=10, seed=s)`` (rank 48 > q = 16: no
width-16 student matches it, so the losses have different optima); a Gaussian student of width 16 (same seed
for every loss) trained with Adam (lr 0.05, float64) on each loss: projection-MSE with a jointly learned
projector (TinyBERT), 1 - CKA, squared Procrustes, squared FG. A run stops at a plateau: the smallest loss of
the last 100 steps is less than 1e-5 (relative) below the smallest of the 100 before (cap 20,000 steps). The
student is also kept after equal step budgets (300, 1,500 steps) and equal optimiser wall time (0.25 s, 1 s;
recording excluded; timings are noisy on a shared machine).

Reported: the number of the teacher's eps-orthogonal pairs (|cos| <= eps between centred rows) that the
student keeps, over a swept eps (Figure 2a), with mean and SD over seeds; CKA, Procrustes and FG along each
loss's trajectory (Figure 2b); paired tests between losses over seeds (paired t and Wilcoxon signed-rank on the
kept count at eps = 0.1).

    python benchmarks/synthetic_51.py [--seeds 10] [--out benchmarks/results]

Writes synthetic_51.json, synthetic_51.md, synthetic_51_fig2a.png and synthetic_51_fig2b.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repgeo.counterexamples import count_eps_orthogonal, make_teacher, optimize_student

LOSSES = ("proj_mse", "cka", "procrustes", "fg")
EPS_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
PRIMARY_EPS = 0.1
BUDGETS = ("converged", "step=300", "step=1500", "seconds=0.25", "seconds=1")
TRACKED = ("cka", "procrustes", "fg", "proj_mse")


def _sig(values: list[float]) -> list[float]:
    """Values to 6 significant digits (the trajectories are for plotting; the JSON stays small)."""
    return [float(f"{v:.6g}") for v in values]


def run_seed(seed: int, *, n: int, p: int, rank: int, q: int, max_steps: int) -> dict:
    X = make_teacher(n=n, p=p, rank=rank, seed=seed)
    teacher = {f"{e:g}": count_eps_orthogonal(X, e, center=True) for e in EPS_GRID}
    out = {"seed": seed, "teacher_eps_orthogonal": teacher, "runs": {}}
    for loss in LOSSES:
        t0 = time.perf_counter()
        res = optimize_student(X, loss, q=q, steps=max_steps, seed=seed, record_every=10, eps=PRIMARY_EPS,
                               plateau_window=100, plateau_rtol=1e-5, snapshot_steps=(300, 1500),
                               snapshot_seconds=(0.25, 1.0), record_metrics=TRACKED)
        students = {"converged": res.student, **res.snapshots}
        kept = {b: {f"{e:g}": count_eps_orthogonal(Y, e, reference=X, center=True) for e in EPS_GRID}
                for b, Y in students.items()}
        h = res.history
        out["runs"][loss] = {
            "converged_step": res.converged_step,
            "final_step": int(h["step"].iloc[-1]),
            "seconds": float(h["seconds"].iloc[-1]),
            "wall_s": time.perf_counter() - t0,
            "kept": kept,
            "final": {k: float(h[k].iloc[-1]) for k in ("loss", *TRACKED)},
            "trajectory": {k: _sig(h[k].tolist()) for k in ("step", "seconds", "loss", *TRACKED)},
            # largest fall of CKA between two recorded points (a "spike" down) along this run
            "cka_largest_drop": float(max(0.0, np.max(np.maximum.accumulate(h["cka"].to_numpy())
                                                      - h["cka"].to_numpy()))),
        }
        print(f"seed {seed} {loss:10s} stop {out['runs'][loss]['final_step']:5d} "
              f"kept@0.1 {kept['converged'][f'{PRIMARY_EPS:g}']}", flush=True)
    return out


def summarise(results: list[dict]) -> dict:
    """Mean, SD per (budget, loss, eps) of the kept count and the kept fraction; paired tests."""
    table = []
    for budget, loss, e in itertools.product(BUDGETS, LOSSES, EPS_GRID):
        key = f"{e:g}"
        kept = np.array([r["runs"][loss]["kept"][budget][key] for r in results], dtype=float)
        frac = kept / np.array([r["teacher_eps_orthogonal"][key] for r in results], dtype=float)
        table.append({"budget": budget, "loss": loss, "eps": e, "kept_mean": kept.mean(),
                      "kept_sd": kept.std(ddof=1), "fraction_mean": frac.mean(), "fraction_sd": frac.std(ddof=1)})
    tests = []
    key = f"{PRIMARY_EPS:g}"
    for budget in BUDGETS:
        for a, b in itertools.combinations(LOSSES, 2):
            ka = np.array([r["runs"][a]["kept"][budget][key] for r in results], dtype=float)
            kb = np.array([r["runs"][b]["kept"][budget][key] for r in results], dtype=float)
            d = ka - kb
            if np.all(d == 0):
                t_p = w_p = 1.0
            else:
                t_p = float(stats.ttest_rel(ka, kb).pvalue) if np.std(d) > 0 else 0.0
                w_p = float(stats.wilcoxon(ka, kb).pvalue)
            tests.append({"budget": budget, "a": a, "b": b, "mean_diff": float(d.mean()),
                          "sd_diff": float(d.std(ddof=1)), "wins_a": int((d > 0).sum()),
                          "wins_b": int((d < 0).sum()), "t_p": t_p, "wilcoxon_p": w_p})
    steps = {loss: [r["runs"][loss]["final_step"] for r in results] for loss in LOSSES}
    converged = {loss: sum(r["runs"][loss]["converged_step"] is not None for r in results) for loss in LOSSES}
    drops = {loss: max(r["runs"][loss]["cka_largest_drop"] for r in results) for loss in LOSSES}
    return {"table": table, "tests": tests, "steps": steps, "converged": converged, "cka_largest_drop": drops}


def ranking(summary: dict, budget: str) -> str:
    """Losses ordered by mean kept count at the primary eps, with '>' where the paired Wilcoxon p < 0.05 and
    '~' otherwise (between neighbours)."""
    rows = [r for r in summary["table"] if r["budget"] == budget and r["eps"] == PRIMARY_EPS]
    rows.sort(key=lambda r: -r["kept_mean"])
    p = {(t["a"], t["b"]): t["wilcoxon_p"] for t in summary["tests"] if t["budget"] == budget}
    out = rows[0]["loss"]
    for prev, cur in itertools.pairwise(rows):
        pv = p.get((prev["loss"], cur["loss"]), p.get((cur["loss"], prev["loss"])))
        out += (" > " if pv < 0.05 else " ~ ") + cur["loss"]
    return out


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Section 5.1, over-complete teacher (rank {meta['rank']} > q = {meta['q']}), "
             f"{meta['seeds']} seeds", "",
             f"eps-orthogonal teacher pairs kept by the student (eps = {PRIMARY_EPS:g}), mean ± SD over seeds; "
             f"teacher has {meta['teacher_mean']:.0f} ± {meta['teacher_sd']:.0f} such pairs.", "",
             "| budget | " + " | ".join(LOSSES) + " | ranking (paired Wilcoxon, p < 0.05: >) |",
             "|---|" + "---|" * (len(LOSSES) + 1)]
    for budget in BUDGETS:
        cells = []
        for loss in LOSSES:
            r = next(r for r in summary["table"]
                     if r["budget"] == budget and r["loss"] == loss and r["eps"] == PRIMARY_EPS)
            cells.append(f"{r['kept_mean']:.0f} ± {r['kept_sd']:.0f}")
        lines.append(f"| {budget} | " + " | ".join(cells) + f" | {ranking(summary, budget)} |")
    lines += ["", "Steps to the plateau (min-max over seeds): "
              + ", ".join(f"{k} {min(v)}-{max(v)}" for k, v in summary["steps"].items())
              + "; runs that reached the plateau: " + ", ".join(f"{k} {v}" for k, v in summary["converged"].items()),
              "", "Largest fall of CKA along a trajectory (max over seeds): "
              + ", ".join(f"{k} {v:.1e}" for k, v in summary["cka_largest_drop"].items()), "",
              "## Paired tests at convergence (kept count, eps = 0.1)", "",
              "| a | b | mean(a - b) | SD | seeds a wins / b wins | paired t p | Wilcoxon p |",
              "|---|---|---|---|---|---|---|"]
    for t in summary["tests"]:
        if t["budget"] == "converged":
            lines.append(f"| {t['a']} | {t['b']} | {t['mean_diff']:.1f} | {t['sd_diff']:.1f} | "
                         f"{t['wins_a']} / {t['wins_b']} | {t['t_p']:.2g} | {t['wilcoxon_p']:.2g} |")
    lines += ["", "## Fraction of the teacher's eps-orthogonal pairs kept at convergence (mean ± SD)", "",
              "| eps | " + " | ".join(LOSSES) + " |", "|---|" + "---|" * len(LOSSES)]
    for e in EPS_GRID:
        cells = [next(f"{r['fraction_mean']:.3f} ± {r['fraction_sd']:.3f}" for r in summary["table"]
                      if r["budget"] == "converged" and r["loss"] == loss and r["eps"] == e) for loss in LOSSES]
        lines.append(f"| {e:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{meta['command']}` ({meta['wall_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


def fig2a(summary: dict, path: Path) -> None:
    fig = Figure(figsize=(10, 4.5), dpi=100)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for ax, budget in zip(axes, ("converged", "step=300"), strict=True):
        for loss in LOSSES:
            rows = [r for r in summary["table"] if r["budget"] == budget and r["loss"] == loss]
            e = np.array([r["eps"] for r in rows])
            m, s = np.array([r["fraction_mean"] for r in rows]), np.array([r["fraction_sd"] for r in rows])
            ax.errorbar(e, m, yerr=s, marker="o", capsize=3, label=loss)
        ax.set_xlabel("eps")
        ax.set_ylabel("fraction of the teacher's eps-orthogonal pairs kept")
        ax.set_title(f"Fig 2a ({budget}): mean ± SD over seeds", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def fig2b(results: list[dict], path: Path) -> None:
    fig = Figure(figsize=(14, 4.5), dpi=100)
    axes = [fig.add_subplot(1, len(LOSSES), i + 1) for i in range(len(LOSSES))]
    for ax, loss in zip(axes, LOSSES, strict=True):
        for name, style in (("cka", "-"), ("procrustes", "--"), ("fg", ":")):
            for k, r in enumerate(results):
                tr = r["runs"][loss]["trajectory"]
                v = 1 - np.array(tr[name]) if name == "cka" else np.array(tr[name])
                ax.semilogy(tr["step"], np.clip(v, 1e-6, None), style, lw=0.8, alpha=0.6,
                            color={"cka": "tab:blue", "procrustes": "tab:orange", "fg": "tab:green"}[name],
                            label=(("1 - CKA" if name == "cka" else name) if k == 0 else None))
        ax.set_title(f"Fig 2b: minimising {loss}", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rank", type=int, default=48)
    ap.add_argument("--q", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if args.seeds < 5:
        ap.error("--seeds must be >= 5 (spread and paired tests)")
    t0 = time.perf_counter()
    results = [run_seed(s, n=200, p=64, rank=args.rank, q=args.q, max_steps=args.max_steps)
               for s in range(args.seeds)]
    summary = summarise(results)
    teacher = np.array([r["teacher_eps_orthogonal"][f"{PRIMARY_EPS:g}"] for r in results], dtype=float)
    meta = {"seeds": args.seeds, "rank": args.rank, "q": args.q, "n": 200, "p": 64, "lr": 0.05,
            "plateau": {"window": 100, "rtol": 1e-5}, "max_steps": args.max_steps, "eps_grid": EPS_GRID,
            "teacher_mean": teacher.mean(), "teacher_sd": teacher.std(ddof=1),
            "command": " ".join(["python benchmarks/synthetic_51.py", *sys.argv[1:]]),
            "wall_s": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "synthetic_51.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "per_seed": results}, separators=(",", ":"), default=float))
    md = markdown(summary, meta)
    (args.out / "synthetic_51.md").write_text(md)
    fig2a(summary, args.out / "synthetic_51_fig2a.png")
    fig2b(results, args.out / "synthetic_51_fig2b.png")
    print(md)
    print(pd.DataFrame(summary["tests"]).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
