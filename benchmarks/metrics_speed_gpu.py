"""The torch backend on a GPU: every metric's time against a same-shape GEMM floor, and Moments streaming.

    python benchmarks/metrics_speed_gpu.py [--out benchmarks/results/metrics_speed_gpu.json]

Needs a CUDA device (exits with a clear message otherwise). Times are medians of CUDA-synchronised repeats after a
warm-up. Sized for one H200 in well under 5 minutes: n = 1,000 / 50,000 / 200,000 rows of 768 x 1024 features in
float32 and float64, issue 17's realistic data (column means, power-law spectra) at 50,000 rows, the token-level
loss (forward + backward at 4,096 rows, and 6 pairs batched as the feature loss does) and a 1,000,000-row stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import repgeo


def timed(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_config(n: int, p: int, q: int, dtype: torch.dtype, dev: torch.device) -> dict:
    g = torch.Generator(device=dev).manual_seed(n)
    X = torch.randn(n, p, device=dev, dtype=dtype, generator=g)
    Y = X @ torch.randn(p, q, device=dev, dtype=dtype, generator=g) / p**0.5
    Y += torch.randn(n, q, device=dev, dtype=dtype, generator=g)
    t = {"gemm_xty": timed(lambda: X.T @ Y), "three_gemms": timed(lambda: (X.T @ X, Y.T @ Y, X.T @ Y))}
    for name in [*repgeo.available(streamable=True), "cka_debiased"]:
        spec = repgeo.get(name)
        t[name] = timed(lambda spec=spec: spec(X, Y))
    Xg, Yg = X[:4096].clone().requires_grad_(True), Y[:4096].clone().requires_grad_(True)
    for name in ("procrustes", "fg", "cka"):
        loss = repgeo.get(name).loss
        t[f"{name}_loss_fwd_bwd_n4096"] = timed(lambda loss=loss: loss(Xg, Yg).backward())
    return {"n": n, "p": p, "q": q, "dtype": str(dtype), "times_s": t,
            "procrustes_vs_gemm": t["procrustes"] / t["gemm_xty"], "fg_vs_three_gemms": t["fg"] / t["three_gemms"]}


def bench_realistic(dev: torch.device, n: int = 50_000) -> dict:
    """Procrustes on issue 17's realistic data (:func:`metrics_speed.realistic_pair`) against one X^T Y GEMM."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from metrics_speed import realistic_pair

    X64, Y64 = (torch.from_numpy(a).to(dev) for a in realistic_pair(n, 768, 1024, seed=n))
    out = {"n": n}
    for dtype in (torch.float64, torch.float32):
        X, Y = X64.to(dtype), Y64.to(dtype)
        t = {"gemm_xty": timed(lambda X=X, Y=Y: X.T @ Y), "procrustes": timed(lambda X=X, Y=Y: repgeo.procrustes(X, Y))}
        err = abs(float(repgeo.procrustes(X, Y)) - float(repgeo.procrustes(X64.cpu().numpy(), Y64.cpu().numpy())))
        out[str(dtype)] = {"times_s": t, "procrustes_vs_gemm": t["procrustes"] / t["gemm_xty"],
                           "abs_error_vs_numpy_float64": err}
        print(f"realistic n={n} {dtype}: procrustes {t['procrustes'] / t['gemm_xty']:.2f}x gemm, error {err:.1e}",
              flush=True)
    return out


def bench_losses(dev: torch.device, n: int = 4096, pairs: int = 6) -> dict:
    """Token-level loss forward + backward (n rows, 768-d teacher, 384-d student): one pair, and ``pairs`` pairs
    through :class:`repgeo.distill.FeatureLoss` (equal shapes batched), after its eagerly checked first call."""
    from repgeo.distill import FeatureLoss

    g = torch.Generator(device=dev).manual_seed(0)
    X = torch.randn(n, 768, device=dev, generator=g)
    Y = torch.randn(n, 384, device=dev, generator=g)
    out = {"n": n, "p": 768, "q": 384, "pairs": pairs,
           "gemm_floor_one_pair": timed(lambda: (X.T @ Y, X @ torch.ones(768, 384, device=dev)))}
    for name in ("procrustes", "nbs", "fg", "cka", "cka_debiased", "proj_mse"):
        fl = FeatureLoss(name, {s: s for s in range(pairs)}, student_dims=384, teacher_dims=768, pooling="tokens")
        fl = fl.to(dev)
        teacher = dict.fromkeys(range(pairs), X)

        def step(fl=fl, teacher=teacher) -> None:
            student = {s: Y.detach().requires_grad_(True) for s in range(pairs)}
            fl(teacher, student).total.backward()

        out[f"{name}_{pairs}_pairs"] = timed(step)
        print(f"loss {name}: {pairs} pairs {out[f'{name}_{pairs}_pairs'] * 1e3:.1f} ms", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics_speed_gpu.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error(f"needs a CUDA device, but torch.cuda.is_available() is False (torch {torch.__version__}"
                 f"{', a CPU-only build' if torch.version.cuda is None else ''}); see benchmarks/metrics_speed.py "
                 "for the CPU benchmark")
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    p, q = 768, 1024
    rows = []
    for n in (1_000, 50_000, 200_000):
        for dtype in (torch.float32, torch.float64):
            row = bench_config(n, p, q, dtype, dev)
            t = row["times_s"]
            rows.append(row)
            print(f"n={n:>7} {dtype}: gemm {t['gemm_xty']*1e3:.2f} ms, procrustes {t['procrustes']*1e3:.2f} ms "
                  f"({row['procrustes_vs_gemm']:.2f}x), fg {t['fg']*1e3:.2f} ms, cka {t['cka']*1e3:.2f} ms, "
                  f"proj_mse {t['proj_mse']*1e3:.2f} ms", flush=True)
    realistic = bench_realistic(dev)
    losses = bench_losses(dev)
    m = repgeo.Moments()
    chunk, total = 16384, 1_000_000
    W = torch.randn(p, q, device=dev) / p**0.5
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(0, total, chunk):
        Xc = torch.randn(chunk, p, device=dev)
        m.update(Xc, Xc @ W + torch.randn(chunk, q, device=dev))
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    stream = {"rows": m.n, "seconds": elapsed, "rows_per_s": m.n / elapsed,
              "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
              "values": {k: float(v) for k, v in m.compute().items()}}
    print(f"stream {m.n:,} rows (float32 chunks, float64 moments): {stream['rows_per_s']:,.0f} rows/s")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "configs": rows,
           "realistic": realistic, "losses": losses, "stream": stream,
           "wall_s": time.perf_counter() - start, "command": "python benchmarks/metrics_speed_gpu.py"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
