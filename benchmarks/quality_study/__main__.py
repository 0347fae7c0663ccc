"""Command line of the quality study: ``python -m benchmarks.quality_study --preset cpu`` (see the package
docstring)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __doc__ as STUDY_DOC
from .regimes import PRESETS
from .report import markdown, plot
from .study import study

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(STUDY_DOC or "").split("\n\n")[0],
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=[p for p in PRESETS if p != "quick"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="a seconds-scale smoke run (what the test runs)")
    ap.add_argument("--work", default=None, help="work folder (teachers, runs, runs.jsonl); default: a cache folder")
    ap.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    ap.add_argument("--regimes", type=int, default=None, help="only the first N regimes of the preset")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--report", action="store_true",
                    help="only rewrite the .md and .png from the preset's existing .json (no training)")
    args = ap.parse_args(argv)
    import torch

    from repgeo.assets import cache_dir

    preset = "quick" if args.quick else args.preset
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work) if args.work else cache_dir() / "distill_quality" / preset
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[distill_quality] {msg}", file=sys.stderr, flush=True)

    stem = "distill_quality" if preset == "cpu" else f"distill_quality_{preset}"
    command = "python benchmarks/distill_quality.py " + ("--quick" if args.quick else f"--preset {preset}")
    if args.report:
        res = json.loads((out / f"{stem}.json").read_text())
    else:
        res = study(preset, work, log=log, limit_regimes=args.regimes)
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown(res, command))
    plot(res, out / f"{stem}.png")
    print(markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
