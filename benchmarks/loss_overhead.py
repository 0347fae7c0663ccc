"""Forward + backward time of FeatureLoss against the student's own training step.

Setting (issue 5): batch 32 x 128 tokens; teacher 768-d x 12 layers (its hidden states are fixed tensors:
the teacher runs without gradient and is not part of the student's step); student BERT 384-d x 6 layers,
layer map ``uniform`` (6 pairs). For every registered metric, pooled (``mean``) and token-level (``tokens``,
4,096 rows), the feature-loss time is the forward + backward of ``FeatureLoss`` given the student's hidden states
(with gradient) and the overhead is that time over the student's step (forward + backward + AdamW step).

    python benchmarks/loss_overhead.py [--repeats 5] [--metrics procrustes cka] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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


def _time(fn, repeats: int, device: torch.device = CPU) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then under bf16 autocast, as in mixed precision)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss_overhead.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    b, s = args.batch, args.seq
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                  intermediate_size=1536, max_position_embeddings=512)
    device = torch.device(args.device)
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

    step = _time(student_step, args.repeats, device)
    print(f"student step (fwd+bwd+AdamW): {1000 * step:.1f} ms", flush=True)
    layer_map = resolve_layer_map("uniform", 6, 12)
    with torch.no_grad():
        hidden = student(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    rows = []
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
                t = _time(feature_step, args.repeats, device)
                rows.append({"metric": metric, "pooling": pooling, "feature_loss_ms": 1000 * t,
                             "overhead_pct": 100 * t / step})
            except Exception as exc:  # report, don't hide
                rows.append({"metric": metric, "pooling": pooling, "error": f"{type(exc).__name__}: {exc}"})
            print(rows[-1], flush=True)
    result = {"setting": {"batch": b, "seq": s, "teacher": "768-d x 12 layers", "student": "BERT 384-d x 6 layers",
                          "pairs": len(layer_map), "repeats": args.repeats, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                          "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)},
              "student_step_ms": 1000 * step, "rows": rows}
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
