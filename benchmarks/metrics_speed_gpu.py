"""The torch backend on a GPU: every metric's time against a same-shape GEMM floor, and Moments streaming.

    python benchmarks/metrics_speed_gpu.py [--out benchmarks/results/metrics_speed_gpu.json]

Needs a CUDA device. Times are medians of CUDA-synchronised repeats after a warm-up.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics_speed_gpu.json")
    args = ap.parse_args()
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
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "configs": rows, "stream": stream,
           "command": "python benchmarks/metrics_speed_gpu.py"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
