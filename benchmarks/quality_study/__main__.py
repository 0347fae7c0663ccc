"""Command line of the quality study: ``python -m benchmarks.quality_study --preset cpu2 [--until STAGE |
--stage STAGE] [--plan]`` (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __doc__ as STUDY_DOC
from .regimes import PRESETS
from .study import STAGES, Study, stages_to_run

RESULTS = Path(__file__).resolve().parents[1] / "results"
V1 = "cpu"  # the first study's results (``distill_quality.json``): ``--preset cpu --report`` re-renders them


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(STUDY_DOC or "").split("\n\n")[0],
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=[p for p in PRESETS if p != "quick"] + [V1], default="cpu2")
    ap.add_argument("--quick", action="store_true", help="the smoke run the test runs (preset quick)")
    ap.add_argument("--work", default=None, help="work folder (teachers, runs, runs.jsonl, decisions.json); "
                    "default: a cache folder per preset")
    ap.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    ap.add_argument("--regimes", type=int, default=None, help="only the first N regimes of the preset")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1,
                    help="train each stage's runs in this many processes, sharing --threads (see pool.py)")
    ap.add_argument("--stage", default=None, help=f"run this stage only ({', '.join(STAGES)})")
    ap.add_argument("--until", default=None, help="run the stages up to and including this one")
    ap.add_argument("--plan", action="store_true",
                    help="print every pending run with its estimated seconds and the total; train nothing")
    ap.add_argument("--report", action="store_true",
                    help="only rewrite the .md and .png from the preset's existing .json (no training)")
    return ap


def stem(preset: str) -> str:
    return "distill_quality" if preset == V1 else f"distill_quality_v2_{preset}"


def print_plan(st: Study, stages: list[str], workers: int = 1) -> float:
    """Print the pending runs of ``stages`` with estimated seconds; the total (one process)."""
    st.run([s for s in stages if s not in ("teacher", "report")])
    total = 0.0
    print("stage\tregime\tmethod\tseed\talpha\tlr\test_seconds")
    for stage, spec, sec in st.pending:
        print(f"{stage}\t{spec.regime}\t{spec.method}\t{spec.seed}\t{spec.alpha:g}\t{spec.lr:g}\t{sec:.0f}")
        total += sec
    for stage in dict.fromkeys(s for s, _, _ in st.pending):
        n = [x for x in st.pending if x[0] == stage]
        print(f"# {stage}: {len(n)} runs, {sum(x[2] for x in n) / 3600:.2f} h (estimate)")
    teachers = [r for r in st.regimes if "references" not in st.decisions.get(r.name, {})]
    if "teacher" in stages and teachers:
        t = sum(r.teacher_steps * r.teacher_sec_per_step for r in teachers)
        print(f"# teacher: {len(teachers)} to fine-tune, {t / 3600:.2f} h (estimate)")
        total += t
    print(f"# total: {len(st.pending)} runs, {total / 3600:.2f} h (estimate; decisions not yet made are assumed: "
          "no α extension; main-stage seeds from the preset's prior_sd until the pilot has measured it)")
    if workers > 1:
        print(f"# with --workers {workers}: at best {total / workers / 3600:.2f} h (if the runs overlap fully; "
              "on 2 CPU cores 2 workers measured ~1.1x one process)")
    return total


def results(st: Study) -> dict[str, Any]:
    import torch

    from .statistics import summarize

    rows = st.current_rows()
    pre = st.preset
    path = st.work / "teachers.jsonl"
    teachers = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    return {"preset": st.name, "protocol": 2, "settings": _settings(st), "decisions": st.decisions,
            "teachers": teachers, "summary": summarize(rows, st.decisions, delta=pre.delta, level=pre.level),
            "confirmation": summarize(rows, st.decisions, delta=pre.delta, level=pre.level, stage="confirm"),
            "runs": rows,
            "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _settings(st: Study) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(st.preset)
    d["regimes"] = [dataclasses.asdict(r) | {"name": r.name} for r in st.regimes]
    return d


def write_report(res: dict[str, Any], out: Path, command: str, *, write_json: bool = True) -> str:
    from .report import markdown, plot

    if res.get("protocol") != 2:
        from .report_v1 import markdown, plot
    name = stem(res["preset"])
    if write_json:
        (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    md = markdown(res, command)
    (out / f"{name}.md").write_text(md)
    plot(res, out / f"{name}.png")
    return md


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from repgeo.assets import cache_dir
    from repgeo.demo.students import silence_transformers
    from repgeo.files import FolderLock

    preset = "quick" if args.quick else args.preset
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    silence_transformers()
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/distill_quality.py " + ("--quick" if args.quick else f"--preset {preset}")
    if args.report:
        res = json.loads((out / f"{stem(preset)}.json").read_text())
        print(write_report(res, out, command, write_json=False))
        return 0
    if preset == V1:
        raise SystemExit("--preset cpu is the first study's (results only): use --report, or a v2 preset")
    work = Path(args.work) if args.work else cache_dir() / "distill_quality" / preset

    def log(msg: str) -> None:
        print(f"[distill_quality] {msg}", file=sys.stderr, flush=True)

    try:
        stages = stages_to_run(args.stage, args.until)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.plan:
        print_plan(Study(preset, work, execute=False, log=log, limit_regimes=args.regimes), stages, args.workers)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    if stages == ["report"]:  # reads the run log only: allowed while another command trains in the folder
        st = Study(preset, work, execute=False, log=log, limit_regimes=args.regimes)
        print(write_report(results(st), out, command))
        return 0
    with FolderLock(work, "quality study"):
        st = Study(preset, work, log=log, limit_regimes=args.regimes)
        st.run(stages, workers=args.workers, threads=args.threads or torch.get_num_threads())
        if "report" in stages:
            print(write_report(results(st), out, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
