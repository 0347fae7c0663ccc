"""Finite-sample bias of the plug-in metrics and of the corrected / held-out estimators, against a known truth.

Simulation: latent ``Z ~ N(0, I_d)``, teacher ``X = Z A`` with an anisotropic spectrum (singular values of A
``i^-0.75``, random rotation), and three students:

* ``related``  ``Y = Z A R + noise`` (a rotated copy of the teacher, noise at half the mean feature scale);
* ``mixed``    ``Y = Z B + noise`` with B an independent anisotropic map (singular values ``i^-0.5``);
* ``unrelated`` ``Y`` independent of Z (its own anisotropic spectrum).

The population value of each metric comes from the population covariances (``Sigma_xx = A^T A``,
``Sigma_xy = A^T B``, ``Sigma_yy = B^T B + s^2 I``; formulas in :mod:`repgeo.metrics.estimators`). For every n/d
in ``--ratios`` and every estimator it records mean, bias, its standard error, SD and RMSE over ``--reps``
replicates (fewer at large n). Metrics: Procrustes distance (plug-in vs corrected nuclear norm), FG (plug-in vs
U-statistic), CKA (biased vs debiased) and projection-MSE (in-sample closed form vs held-out cross-fitted ridge).

    python benchmarks/estimator_bias.py                # d = 384, about 10 minutes of one core
    python benchmarks/estimator_bias.py --quick        # d = 48, a smoke run
    python benchmarks/estimator_bias.py --real         # real MiniLM features at n = 100 ... 3000

Resumable: each (scenario, n/d) cell is saved to ``<out>.partial.json`` as it finishes and reused on a rerun with
the same settings. Writes ``benchmarks/results/estimator_bias.{json,md,png}`` (``--real``:
``estimator_bias_minilm.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from repgeo.metrics import cka, fg, procrustes, proj_mse
from repgeo.metrics.estimators import fg_corrected, procrustes_corrected, proj_mse_heldout

HERE = Path(__file__).resolve().parent
SCENARIOS = ("related", "mixed", "unrelated")
METRICS = {  # metric -> (plug-in, corrected) estimators
    "procrustes": (lambda X, Y: float(procrustes(X, Y)), lambda X, Y, seed: procrustes_corrected(X, Y, seed=seed)),
    "fg": (lambda X, Y: float(fg(X, Y)), lambda X, Y, seed: fg_corrected(X, Y)),
    "cka": (lambda X, Y: float(cka(X, Y)), lambda X, Y, seed: float(cka(X, Y, debiased=True))),
    "proj_mse": (lambda X, Y: float(proj_mse(X, Y)), lambda X, Y, seed: proj_mse_heldout(X, Y, seed=seed)),
}


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


def make_scenario(name: str, d: int, seed: int = 1) -> dict[str, np.ndarray | float | None]:
    """Maps and noise of one scenario: ``X = Z A``, ``Y = Z B + noise * E`` (or independent for 'unrelated')."""
    rng = np.random.default_rng(seed)
    sx = np.arange(1, d + 1) ** -0.75
    A = sx[:, None] * _rotation(rng, d).T
    sy = np.arange(1, d + 1) ** -0.5
    if name == "related":
        B, noise = A @ _rotation(rng, d), 0.5 * math.sqrt(float(np.sum(sx**2)) / d)
    elif name == "mixed":
        B, noise = _rotation(rng, d) @ (sy[:, None] * _rotation(rng, d).T), 0.5 * math.sqrt(float(np.sum(sy**2)) / d)
    elif name == "unrelated":
        B, noise = None, 0.0
    else:
        raise ValueError(f"unknown scenario {name!r}")
    return {"A": A, "B": B, "noise": noise, "sy": sy}


def population(sc: dict) -> dict[str, float]:
    """Population value of every metric (formulas in repgeo.metrics.estimators)."""
    A, B, noise, sy = sc["A"], sc["B"], sc["noise"], sc["sy"]
    d = A.shape[1]
    Sxx = A.T @ A
    if B is None:
        Syy, Sxy = np.diag(sy**2), np.zeros((d, d))
    else:
        Syy, Sxy = B.T @ B + noise**2 * np.eye(d), A.T @ B
    tx, ty = np.trace(Sxx), np.trace(Syy)
    nbs = float(np.sum(np.linalg.svd(Sxy, compute_uv=False))) / math.sqrt(tx * ty)
    fxx, fyy, fxy = (float(np.sum(M * M)) for M in (Sxx, Syy, Sxy))
    explained = float(np.trace(Sxy @ np.linalg.pinv(Syy) @ Sxy.T))
    return {
        "procrustes": math.sqrt(max(2 - 2 * nbs, 0.0)),
        "fg": math.sqrt(max(fxx / tx**2 + fyy / ty**2 - 2 * fxy / (tx * ty), 0.0)),
        "cka": fxy / math.sqrt(fxx * fyy),
        "proj_mse": 1 - explained / tx,
    }


def sample(sc: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    A, B = sc["A"], sc["B"]
    d = A.shape[1]
    Z = rng.standard_normal((n, d))
    X = Z @ A
    if B is None:
        return X, rng.standard_normal((n, d)) * sc["sy"]
    return X, Z @ B + sc["noise"] * rng.standard_normal((n, d))


def reps_for(ratio: float, reps: int) -> int:
    """Fewer replicates at large n (their spread is small): full below 5 d, half to 10 d, a quarter beyond."""
    return reps if ratio < 5 else max(3, reps // 2) if ratio <= 10 else max(3, reps // 4)


def run_cell(sc: dict, d: int, ratio: float, reps: int, seed: int) -> dict:
    n = round(ratio * d)
    rng = np.random.default_rng(seed)
    vals: dict[str, dict[str, list[float]]] = {m: {"plugin": [], "corrected": []} for m in METRICS}
    for r in range(reps):
        X, Y = sample(sc, n, rng)
        for m, (plug, corr) in METRICS.items():
            vals[m]["plugin"].append(plug(X, Y))
            vals[m]["corrected"].append(corr(X, Y, r))
    return {"n": n, "reps": reps, "values": vals}


def summarise(values: list[float], truth: float) -> dict[str, float]:
    v = np.asarray(values)
    k = v.size
    sd = float(v.std(ddof=1)) if k > 1 else math.nan
    return {"mean": float(v.mean()), "bias": float(v.mean() - truth), "bias_se": sd / math.sqrt(k), "sd": sd,
            "rmse": float(math.sqrt(np.mean((v - truth) ** 2)))}


def write_outputs(results: dict, args: argparse.Namespace, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for scen, cells in results["cells"].items():
        truth = results["population"][scen]
        for key, cell in sorted(cells.items(), key=lambda kv: float(kv[0])):
            for m in METRICS:
                for est in ("plugin", "corrected"):
                    rows.append({"scenario": scen, "ratio": float(key), "n": cell["n"], "reps": cell["reps"],
                                 "metric": m, "estimator": est, "truth": truth[m],
                                 **summarise(cell["values"][m][est], truth[m])})
    results["table"] = rows
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    names = {"plugin": "plug-in", "corrected": "corrected"}
    lines = [f"# Estimator bias at d = {args.d} (`{results['command']}`)", "",
             "bias = mean - population value (± its SE), RMSE over the replicates. corrected: Procrustes with the "
             "cross-fitted nuclear norm, FG with U-statistic norms, debiased CKA, held-out projection-MSE.", ""]
    for scen in results["cells"]:
        lines += [f"## {scen}", "", "| metric | truth | n/d | n | reps | plug-in bias | corrected bias | "
                  "plug-in RMSE | corrected RMSE | |bias| ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for m in METRICS:
            sub = [r for r in rows if r["scenario"] == scen and r["metric"] == m]
            for ratio in sorted({r["ratio"] for r in sub}):
                p = next(r for r in sub if r["ratio"] == ratio and r["estimator"] == "plugin")
                c = next(r for r in sub if r["ratio"] == ratio and r["estimator"] == "corrected")
                q = abs(c["bias"]) / abs(p["bias"]) if p["bias"] else math.nan
                lines.append(f"| {m} | {p['truth']:.4f} | {ratio:g} | {p['n']} | {p['reps']} | "
                             f"{p['bias']:+.4f} ± {p['bias_se']:.4f} | {c['bias']:+.4f} ± {c['bias_se']:.4f} | "
                             f"{p['rmse']:.4f} | {c['rmse']:.4f} | {q:.2f} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(len(results["cells"]), len(METRICS), figsize=(3.4 * len(METRICS),
                             2.8 * len(results["cells"])), squeeze=False)
    for i, scen in enumerate(results["cells"]):
        for j, m in enumerate(METRICS):
            ax = axes[i][j]
            for est, style in (("plugin", "o-"), ("corrected", "s-")):
                sub = sorted((r for r in rows if r["scenario"] == scen and r["metric"] == m
                              and r["estimator"] == est), key=lambda r: r["ratio"])
                x = [r["ratio"] for r in sub]
                ax.errorbar(x, [r["bias"] for r in sub], yerr=[2 * r["bias_se"] for r in sub], fmt=style,
                            ms=3, label=f"{names[est]} bias")
                ax.plot(x, [r["rmse"] for r in sub], style.replace("-", ":"), ms=3, alpha=0.6,
                        label=f"{names[est]} RMSE")
            ax.axhline(0, color="gray", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(f"{m} — {scen}", fontsize=9)
            ax.set_xlabel("n / d")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"bias (± 2 SE) and RMSE vs n, d = {args.d}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)


def real_check(out: Path, sizes: tuple[int, ...] = (100, 256, 768, 3000)) -> str:
    """Plug-in vs corrected on real features: all-MiniLM-L6-v2 (packaged) against a 2-block copy of itself, mean
    pooled over the first ``max(sizes)`` Rotten Tomatoes snippets; the largest n stands in for the truth."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    from repgeo.assets import minilm_path, rotten_tomatoes
    from repgeo.metrics.estimators import effective_rank
    from repgeo.probe import collect, tokenize_texts

    folder = minilm_path()
    tok = AutoTokenizer.from_pretrained(folder)
    teacher, student = AutoModel.from_pretrained(folder).eval(), AutoModel.from_pretrained(folder).eval()
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in (0, 3)])
    student.config.num_hidden_layers = 2
    torch.manual_seed(0)
    batches = tokenize_texts(tok, rotten_tomatoes()["text"].tolist()[: max(sizes)], batch_size=64, max_length=64,
                             warn=False)
    T = collect(teacher, batches, [2, 6], "mean", progress=False)
    S = collect(student, batches, [1, 2], "mean", progress=False)
    lines = ["# Plug-in vs corrected on real features (`python benchmarks/estimator_bias.py --real`)", "",
             "all-MiniLM-L6-v2 (384-d) against its 2-block copy (blocks 0 and 3), mean-pooled Rotten Tomatoes "
             "snippets; the first n rows of the same texts.", "",
             "| teacher | student | eff. rank t / s | n | Procrustes plug-in | corrected | CKA plug-in | debiased |",
             "|---|---|---|---|---|---|---|---|"]
    for t, s in (("hidden_states.2", "hidden_states.1"), ("hidden_states.6", "hidden_states.2")):
        X, Y = np.asarray(T[t], np.float64), np.asarray(S[s], np.float64)
        ranks = f"{effective_rank(X):.0f} / {effective_rank(Y):.0f}"
        for n in sizes:
            lines.append(f"| {t} | {s} | {ranks} | {n} | {float(procrustes(X[:n], Y[:n])):.3f} | "
                         f"{procrustes_corrected(X[:n], Y[:n]):.3f} | {float(cka(X[:n], Y[:n])):.3f} | "
                         f"{float(cka(X[:n], Y[:n], debiased=True)):.3f} |")
    text = "\n".join(lines) + "\n"
    out.with_name(out.name + "_minilm.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--ratios", default="0.5,1,2,5,10,50")
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="d = 48, 6 replicates")
    ap.add_argument("--out", default=str(HERE / "results" / "estimator_bias"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real", action="store_true", help="only the real-feature check (MiniLM, ~2 minutes)")
    args = ap.parse_args(argv)
    if args.real:
        with threadpool_limits(args.threads):
            print(real_check(Path(args.out)))
        return
    if args.quick:
        args.d, args.reps = 48, 6
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ratios = [float(r) for r in args.ratios.split(",")]
    partial = out.with_name(out.name + ".partial.json")
    settings = {"d": args.d, "reps": args.reps}
    done = json.loads(partial.read_text()) if partial.exists() else {}
    if done.get("settings") != settings:
        done = {"settings": settings, "cells": {}}
    command = "python benchmarks/estimator_bias.py" + (" --quick" if args.quick else "")
    results = {"command": command, "settings": settings, "population": {}, "cells": {}}
    t0 = time.perf_counter()
    with threadpool_limits(args.threads):
        for scen in SCENARIOS:
            sc = make_scenario(scen, args.d)
            results["population"][scen] = population(sc)
            done["cells"].setdefault(scen, {})
            for i, ratio in enumerate(ratios):
                key = f"{ratio:g}"
                if key not in done["cells"][scen]:
                    done["cells"][scen][key] = run_cell(sc, args.d, ratio, reps_for(ratio, args.reps), seed=1000 + i)
                    tmp = partial.with_suffix(".tmp")
                    tmp.write_text(json.dumps(done))
                    os.replace(tmp, partial)
                    print(f"{scen} n/d={key}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
            results["cells"][scen] = {k: done["cells"][scen][k] for k in (f"{r:g}" for r in ratios)}
    results["seconds"] = time.perf_counter() - t0
    write_outputs(results, args, out)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
