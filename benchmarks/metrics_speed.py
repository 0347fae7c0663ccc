"""Speed and memory of the metrics core, as ratios to floors measured in the same run.

For each n, dtype and BLAS thread count it times every registered linear metric, the whole linear suite from
one :class:`repgeo.Moments` pass, the floor (one ``X^T Y`` GEMM of the same shapes, in the input dtype and in
float64, which the analysis backend computes in), the three GEMMs the suite needs, a naive n x n Gram
implementation of CKA and FG, and ``scipy.linalg.orthogonal_procrustes`` on zero-padded inputs. Then it streams
``--stream-rows`` float32 rows through :class:`Moments` in a child process and reports rows/s and peak RSS.

    python benchmarks/metrics_speed.py                 # the full study (about 15 minutes on 2 cores)
    python benchmarks/metrics_speed.py --quick         # a smoke run with small sizes

Writes ``benchmarks/results/metrics_speed.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

import repgeo
from repgeo.metrics._prep import prepare_pair

HERE = Path(__file__).resolve().parent


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def naive_gram_cka_fg(X: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    """The textbook n x n implementation: centre with H, form both Gram matrices."""
    Xp, Yp = prepare_pair(X, Y, center=True, normalize="frobenius")
    K, L = Xp @ Xp.T, Yp @ Yp.T
    cka = np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))
    return float(cka), float(np.linalg.norm(K - L))


def scipy_procrustes(X: np.ndarray, Y: np.ndarray) -> float:
    Xp, Yp = prepare_pair(X, Y, center=True, normalize="frobenius")
    width = max(Xp.shape[1], Yp.shape[1])
    A = np.pad(Xp, ((0, 0), (0, width - Xp.shape[1])))
    B = np.pad(Yp, ((0, 0), (0, width - Yp.shape[1])))
    R, _ = scipy.linalg.orthogonal_procrustes(B, A)
    return float(np.linalg.norm(A - B @ R))


def suite_from_moments(X: np.ndarray, Y: np.ndarray, chunk: int) -> dict[str, float]:
    m = repgeo.Moments()
    for i in range(0, len(X), chunk):
        m.update(X[i : i + chunk], Y[i : i + chunk])
    return m.compute()


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1e6
    return float("inf")


def realistic_pair(n: int, p: int, q: int, seed: int, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Activations shaped like a transformer's: the issue-17 benchmark data.

    X (n x p): a power-law spectrum (column j of a random rotation scaled by ``(j + 1)^-0.8``) plus non-zero
    column means carrying ~90 % of the energy (mean-vector energy 9x the centred energy per row, as in
    anisotropic BERT hidden states); Y (n x q): X's first p/2 columns plus noise, then q - p/2 columns of its own
    power-law features, with its own column means.
    """
    rng = np.random.default_rng(seed)

    def power_law(width: int) -> np.ndarray:
        Z = rng.standard_normal((n, width)) * (np.arange(1, width + 1) ** -0.8)
        rot, _ = np.linalg.qr(rng.standard_normal((width, width)))
        A = Z @ rot
        centred_energy = float(np.sum(A * A)) / n
        mean = rng.standard_normal(width)
        return A + mean * np.sqrt(9 * centred_energy / float(mean @ mean))

    X = power_law(p)
    half = p // 2
    own = power_law(q - half)
    shared = X[:, :half] + 0.3 * np.std(X[:, :half]) * rng.standard_normal((n, half))
    Y = np.concatenate([shared, own], axis=1)
    return X.astype(dtype), Y.astype(dtype)


def run_config(n: int, p: int, q: int, dtype: str, threads: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p), dtype=np.float32).astype(dtype)
    Y = (X @ rng.standard_normal((p, q), dtype=np.float32).astype(dtype) / np.sqrt(p)).astype(dtype)
    Y += rng.standard_normal((n, q), dtype=np.float32).astype(dtype)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    repeats = 3 if n <= 10_000 else 2
    row: dict = {"n": n, "p": p, "q": q, "dtype": dtype, "threads": threads}
    with threadpool_limits(limits=threads):
        t = row["times_s"] = {}
        t["gemm_xty"] = best_time(lambda: X.T @ Y, repeats)
        t["gemm_xty_float64"] = best_time(lambda: X64.T @ Y64, repeats)
        t["three_gemms_float64"] = best_time(lambda: (X64.T @ X64, Y64.T @ Y64, X64.T @ Y64), repeats)
        for name in [*repgeo.available(streamable=True), "cka_debiased"]:
            spec = repgeo.get(name)
            t[name] = best_time(lambda spec=spec: spec(X, Y), repeats)
        t["linear_suite_moments"] = best_time(lambda: suite_from_moments(X, Y, chunk=8192), repeats)
        t["scipy_orthogonal_procrustes"] = best_time(lambda: scipy_procrustes(X, Y), 1)
        need_gb = 3 * n * n * 8 / 1e9  # K, L and a temporary
        if need_gb < 0.6 * available_gb():
            t["naive_gram_cka_fg"] = best_time(lambda: naive_gram_cka_fg(X, Y), 1)
        else:
            t["naive_gram_cka_fg"] = None
            row["naive_skipped"] = f"out of memory: needs ~{need_gb:.0f} GB, {available_gb():.0f} GB available"
    r = row["ratios"] = {
        "procrustes_vs_gemm": t["procrustes"] / t["gemm_xty"],
        "procrustes_vs_gemm_float64": t["procrustes"] / t["gemm_xty_float64"],
        "suite_vs_three_gemms_float64": t["linear_suite_moments"] / t["three_gemms_float64"],
        "scipy_procrustes_vs_repgeo": t["scipy_orthogonal_procrustes"] / t["procrustes"],
    }
    if t["naive_gram_cka_fg"] is not None:
        r["naive_vs_repgeo_cka_plus_fg"] = t["naive_gram_cka_fg"] / (t["cka"] + t["fg"])
    return row


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> list[dict[str, float]]:
    """Time every function once per round, ``repeats`` rounds: a burst of load on a shared machine then hits
    all of them alike, and ratios are taken within a round."""
    rounds = []
    for _ in range(repeats):
        times = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t0
        rounds.append(times)
    return rounds


PEAK_CASES = ("cka", "cka_debiased", "procrustes_numpy")
PEAK_CHILD = """
import sys, tracemalloc
sys.path.insert(0, {here!r})
import repgeo
from metrics_speed import realistic_pair
case, n, p, q = sys.argv[1], *(int(a) for a in sys.argv[2:5])
X, Y = realistic_pair(n, p, q, seed=n)
fn = {{"cka": lambda: repgeo.cka(X, Y), "cka_debiased": lambda: repgeo.cka(X, Y, debiased=True),
      "procrustes_numpy": lambda: repgeo.procrustes(X, Y)}}[case]
fn()  # warm-up: imports and caches are not the metric's memory
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
fn()
print((tracemalloc.get_traced_memory()[1] - base) / 1e6)
"""


def peak_mb_child(case: str, n: int, p: int, q: int) -> float:
    """Peak memory (MB) that numpy allocates during one call of ``case`` beyond its inputs, in a fresh process
    per case (tracemalloc sees numpy's buffers), so no case inherits another's allocator state."""
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD.format(here=str(HERE)), case, str(n), str(p), str(q)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def plain_procrustes(X: np.ndarray, Y: np.ndarray) -> float:
    """The textbook nuclear-norm Procrustes: centred copies, unit norms, the singular values of X^T Y."""
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    nuc = np.linalg.svd(Xc.T @ Yc, compute_uv=False).sum() / (np.linalg.norm(Xc) * np.linalg.norm(Yc))
    return float(np.sqrt(max(0.0, 2 - 2 * nuc)))


def run_realistic(n: int, p: int, q: int, repeats: int = 5) -> dict:
    """Issue 17's data (:func:`realistic_pair`), one BLAS thread, float64, medians of ``repeats`` interleaved rounds."""
    import torch

    X, Y = realistic_pair(n, p, q, seed=n)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    row: dict = {"n": n, "p": p, "q": q, "dtype": "float64", "threads": 1, "repeats": repeats, "data": "realistic",
                 "mean_energy_ratio": {side: float(np.sum(A * A) / np.sum((A - A.mean(0)) ** 2))
                                       for side, A in (("X", X), ("Y", Y))}}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    repgeo.procrustes(Xt[:50], Yt[:50])  # warm-up: torch's first call loads its kernels
    try:
        with threadpool_limits(limits=1):
            chunk = 8192
            fns = {
                "gemm_xty": lambda: X.T @ Y,
                "svdvals_pxq": lambda: np.linalg.svd(X[:p].T @ Y[:p], compute_uv=False),
                "procrustes_numpy": lambda: repgeo.procrustes(X, Y),
                "procrustes_torch_cpu": lambda: repgeo.procrustes(Xt, Yt),
                "plain_numpy_procrustes": lambda: plain_procrustes(X, Y),
                "procrustes_streamed": lambda: repgeo.procrustes(stream(X, Y, chunk, metrics=["procrustes"])),
                "cka": lambda: repgeo.cka(X, Y),
                "cka_streamed": lambda: repgeo.cka(stream(X, Y, chunk, metrics=["cka"])),
                "cka_debiased": lambda: repgeo.cka(X, Y, debiased=True),
            }
            rounds = interleaved_times(fns, repeats)
            row["times_s"] = {name: float(np.median([r[name] for r in rounds])) for name in fns}
    finally:
        torch.set_num_threads(torch_threads)
    mem = row["peak_mb"] = {case: peak_mb_child(case, n, p, q) for case in PEAK_CASES}
    mem["inputs"] = (X.nbytes + Y.nbytes) / 1e6
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    ref = np.sum(scipy.linalg.svdvals((Xc / np.linalg.norm(Xc)).T @ (Yc / np.linalg.norm(Yc))))
    ref_d = float(np.sqrt(max(0.0, 2 - 2 * ref)))
    row["abs_error_vs_centred_reference"] = {
        "procrustes_numpy": abs(float(repgeo.procrustes(X, Y)) - ref_d),
        "procrustes_torch_cpu": abs(float(repgeo.procrustes(Xt, Yt)) - ref_d),
        "procrustes_streamed": abs(float(repgeo.procrustes(stream(X, Y, 8192, metrics=["procrustes"]))) - ref_d),
    }
    pairs = {
        "procrustes_numpy_vs_gemm": ("procrustes_numpy", "gemm_xty"),
        "procrustes_torch_cpu_vs_gemm": ("procrustes_torch_cpu", "gemm_xty"),
        "plain_numpy_procrustes_vs_gemm": ("plain_numpy_procrustes", "gemm_xty"),
        "procrustes_numpy_vs_plain_numpy": ("procrustes_numpy", "plain_numpy_procrustes"),
        "streamed_vs_in_memory_procrustes": ("procrustes_streamed", "procrustes_numpy"),
        "streamed_vs_in_memory_cka": ("cka_streamed", "cka"),
        "cka_debiased_vs_cka_time": ("cka_debiased", "cka"),
    }
    # median over rounds of the within-round ratio
    row["ratios"] = {key: float(np.median([r[a] / r[b] for r in rounds])) for key, (a, b) in pairs.items()}
    row["ratios"]["cka_debiased_vs_cka_peak_memory"] = mem["cka_debiased"] / max(mem["cka"], 1e-9)
    return row


def stream(X: np.ndarray, Y: np.ndarray, chunk: int, metrics: list[str] | None = None) -> repgeo.Moments:
    m = repgeo.Moments(metrics=metrics)
    for i in range(0, len(X), chunk):
        m.update(X[i : i + chunk], Y[i : i + chunk])
    return m


STREAM_CHILD = """
import json, resource, sys, time
import numpy as np
import repgeo
rows, p, q, chunk = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
W = rng.standard_normal((p, q), dtype=np.float32) / np.sqrt(p)
m = repgeo.Moments()
busy = 0.0
done = 0
while done < rows:
    k = min(chunk, rows - done)
    X = rng.standard_normal((k, p), dtype=np.float32)
    Y = X @ W + rng.standard_normal((k, q), dtype=np.float32)
    t0 = time.perf_counter(); m.update(X, Y); busy += time.perf_counter() - t0
    done += k
t0 = time.perf_counter(); values = m.compute(); readout = time.perf_counter() - t0
# VmHWM: this process's own peak (ru_maxrss can carry the forking parent's peak across exec)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"rows": m.n, "update_s": busy, "readout_s": readout, "rows_per_s": m.n / busy,
                  "peak_rss_mb": peak, "values": values}))
"""


def run_stream(rows: int, p: int, q: int, chunk: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STREAM_CHILD, str(rows), str(p), str(q), str(chunk)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "metrics_speed.json")
    ap.add_argument("--stream-rows", type=int, default=None)
    ap.add_argument("--stream-only", action="store_true", help="rerun only the streaming part, update --out")
    ap.add_argument("--realistic", action="store_true",
                    help="only issue 17's realistic data (means, power-law spectrum, shared columns), 1 thread; "
                         "writes results/metrics_speed_realistic.json unless --out is given")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="row counts (default 1,000 10,000 50,000)")
    args = ap.parse_args(argv)
    if args.realistic:
        out = args.out if "--out" in (argv or sys.argv) else HERE / "results" / "metrics_speed_realistic.json"
        sizes = args.sizes or ([500, 2000] if args.quick else [1_000, 10_000, 50_000])
        p, q = (64, 96) if args.quick else (768, 1024)
        rows = []
        for n in sizes:
            rows.append(run_realistic(n, p, q))
            print(json.dumps({k: rows[-1][k] for k in ("n", "ratios", "abs_error_vs_centred_reference")}),
                  flush=True)
        used = argv if argv is not None else sys.argv[1:]
        result = {"command": "python benchmarks/metrics_speed.py " + " ".join(used),
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "python": platform.python_version(), "numpy": np.__version__},
                  "configs": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
        return 0
    if args.quick:
        sizes, p, q, stream_rows = [500, 2000], 64, 96, args.stream_rows or 20_000
    else:
        sizes, p, q, stream_rows = [1_000, 10_000, 50_000], 768, 1024, args.stream_rows or 1_000_000
    if args.stream_only:
        result = json.loads(args.out.read_text())
        result["stream"] = run_stream(stream_rows, p, q, chunk=8192)
        args.out.write_text(json.dumps(result, indent=2))
        stream = result["stream"]
        print(f"stream: {stream['rows_per_s']:,.0f} rows/s, peak RSS {stream['peak_rss_mb']:.0f} MB")
        return 0
    rows = []
    for n in sizes:
        for dtype in ("float64", "float32"):
            for threads in (1, 2):
                row = run_config(n, p, q, dtype, threads, seed=n)
                rows.append(row)
                r = row["ratios"]
                print(
                    f"n={n:>6} {dtype} threads={threads}  gemm {row['times_s']['gemm_xty']:.4f}s  "
                    f"procrustes {row['times_s']['procrustes']:.4f}s ({r['procrustes_vs_gemm']:.2f}x gemm, "
                    f"{r['procrustes_vs_gemm_float64']:.2f}x f64 gemm)  "
                    f"suite/3gemm {r['suite_vs_three_gemms_float64']:.2f}  "
                    f"naive/(cka+fg) {r.get('naive_vs_repgeo_cka_plus_fg', float('nan')):.1f}  "
                    f"scipy/repgeo {r['scipy_procrustes_vs_repgeo']:.1f}",
                    flush=True,
                )
    stream = run_stream(stream_rows, p, q, chunk=8192)
    print(f"stream {stream['rows']:,} rows x ({p}, {q}) float32: {stream['rows_per_s']:,.0f} rows/s, "
          f"peak RSS {stream['peak_rss_mb']:.0f} MB")
    result = {
        "command": "python benchmarks/metrics_speed.py" + (" --quick" if args.quick else ""),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "configs": rows,
        "stream": stream,
        "peak_rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
