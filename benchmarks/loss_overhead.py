"""Forward + backward time of FeatureLoss against the student's own training step, as same-round ratios.

Setting (issue 5): batch 32 x 128 tokens; teacher 768-d x 12 layers (its hidden states are fixed tensors:
the teacher runs without gradient and is not part of the student's step); student BERT 384-d x 6 layers,
layer map ``uniform`` (6 pairs). For every registered metric, pooled (``mean``) and token-level (``tokens``,
4,096 rows), the feature-loss time is the forward + backward of ``FeatureLoss`` given the student's hidden states
(with gradient) and the overhead is that time over the student's step (forward + backward + AdamW step).

Every round times the student step, each loss once, and the token-level *floor*: the two n x p x q GEMMs per
pair that any loss built on ``X^T Y`` needs (``X^T Y`` forward, ``X G`` backward). Ratios are taken within a
round and the median over rounds is reported, so load from other processes on a shared machine hits both sides.

    python benchmarks/loss_overhead.py [--repeats 5] [--metrics procrustes cka] [--out results.json]
    python benchmarks/loss_overhead.py --device cuda      # bf16 autocast; about 1 minute on one H200
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from repgeo.distill import FeatureLoss, resolve_layer_map
from repgeo.metrics import available

CPU = torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then under bf16 autocast, as in mixed precision)")
    ap.add_argument("--out", default=None, help="default: results/loss_overhead.json (_gpu.json with cuda)")
    ap.add_argument("--note", default="", help="recorded with the results (e.g. 'shared machine')")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, s = args.batch, args.seq
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                  intermediate_size=1536, max_position_embeddings=512)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device cuda needs a CUDA device, but torch.cuda.is_available() is False (torch {torch.__version__}"
                 f"{', a CPU-only build' if torch.version.cuda is None else ''}); run with --device cpu")
    if args.out is None:
        suffix = "_gpu" if device.type == "cuda" else ""
        args.out = str(Path(__file__).parent / "results" / f"loss_overhead{suffix}.json")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    student = transformers.BertForSequenceClassification(cfg).to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    ids = torch.randint(1000, 30000, (b, s), device=device)
    mask = torch.ones(b, s, dtype=torch.long, device=device)
    labels = torch.randint(0, 2, (b,), device=device)
    teacher_hidden = [torch.randn(b, s, 768, device=device) for _ in range(13)]

    def student_step() -> None:
        with autocast:
            out = student(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    layer_map = resolve_layer_map("uniform", 6, 12)
    with torch.no_grad():
        hidden = student(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    n_tokens = int(mask.sum())
    floor_x = torch.randn(n_tokens, 768, device=device)
    floor_y = torch.randn(n_tokens, 384, device=device)
    floor_g = torch.randn(768, 384, device=device)

    def floor_step() -> None:  # per pair: X^T Y (forward) and X G (backward), float32
        for _ in layer_map:
            floor_x.T @ floor_y
            floor_x @ floor_g

    steps = {"student": student_step, "floor_tokens": floor_step}
    errors = {}
    for metric in args.metrics or available():
        for pooling in ("mean", "tokens"):
            fl = FeatureLoss(metric, layer_map, student_dims=384, teacher_dims=768, pooling=pooling).to(device)
            t_feats = fl.teacher_features(teacher_hidden, mask)

            def feature_step(fl=fl, t_feats=t_feats) -> None:
                leaves = [h.detach().requires_grad_(True) for h in hidden]
                with autocast:
                    out = fl(t_feats, leaves, mask)
                out.total.backward()

            try:
                feature_step()  # warm-up; the first call checks its inputs eagerly (later calls: no host sync)
                steps[(metric, pooling)] = feature_step
            except Exception as exc:  # report, don't hide (e.g. RBF CKA refuses token-level rows)
                errors[(metric, pooling)] = f"{type(exc).__name__}: {exc}"
                print(metric, pooling, errors[(metric, pooling)], flush=True)
    for fn in steps.values():
        fn()  # warm-up
    rounds = []
    for r in range(args.repeats):
        rounds.append({key: _once(fn, device) for key, fn in steps.items()})
        print(f"round {r + 1}/{args.repeats}: student step {1000 * rounds[-1]['student']:.0f} ms", flush=True)

    def med(key: object, ratio: bool = False) -> float:
        return statistics.median(rd[key] / rd["student"] if ratio else rd[key] for rd in rounds)

    step = med("student")
    rows = []
    for metric in args.metrics or available():
        for pooling in ("mean", "tokens"):
            key = (metric, pooling)
            if key in errors:
                rows.append({"metric": metric, "pooling": pooling, "error": errors[key]})
            else:
                rows.append({"metric": metric, "pooling": pooling, "feature_loss_ms": 1000 * med(key),
                             "overhead_pct": 100 * med(key, ratio=True)})
    floor = {"what": "per pair: X^T Y and X G (n x 768 x 384 GEMMs, float32), 6 pairs", "rows": n_tokens,
             "ms": 1000 * med("floor_tokens"), "overhead_pct": 100 * med("floor_tokens", ratio=True)}
    result = {"setting": {"batch": b, "seq": s, "teacher": "768-d x 12 layers", "student": "BERT 384-d x 6 layers",
                          "pairs": len(layer_map), "repeats": args.repeats, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                          "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                          "timing": "interleaved rounds; median over rounds of the within-round ratio",
                          "note": args.note},
              "command": "python benchmarks/loss_overhead.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "student_step_ms": 1000 * step, "token_level_gemm_floor": floor, "rows": rows}
    print(f"student step {1000 * step:.0f} ms; token-level GEMM floor {floor['ms']:.0f} ms "
          f"({floor['overhead_pct']:.1f} %)")
    print(f"{'metric':<20}{'pooling':<8}{'loss ms':>10}{'overhead %':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['metric']:<20}{r['pooling']:<8}  {r['error']}")
        else:
            print(f"{r['metric']:<20}{r['pooling']:<8}{r['feature_loss_ms']:>10.1f}{r['overhead_pct']:>12.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
