"""``repgeo demo`` end to end: data → fine-tuned teacher (cached) → distilled students → layer-by-layer audit →
counterexample certificates → report folder and a printed table. Every stage is timed (wall and CPU seconds).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from repgeo.recipes.classifier import encode, label_ids, predict
from repgeo.recipes.scoring import paired_difference

from .data import DemoData, load_data
from .settings import DemoSettings
from .students import StudentRun, init_student, run_student, silence_transformers
from .teacher import TeacherResult, prepare_teacher


@dataclass
class Stage:
    name: str
    wall: float
    cpu: float
    note: str = ""


@dataclass
class DemoResult:
    """Everything the demo measured; :func:`repgeo.demo.report.write_report` turns it into the report folder."""

    settings: DemoSettings
    out: Path
    data: DemoData
    teacher: TeacherResult
    teacher_name: str
    init_accuracy: float | None = None
    init_predictions: np.ndarray | None = None
    init_predictions_narrow: np.ndarray | None = None  # the narrow student's initialisation (``narrow_width``)
    runs: list[StudentRun] = field(default_factory=list)
    vs_init: pd.DataFrame | None = None  # one row per student: paired comparison with its initialisation
    audit: pd.DataFrame | None = None  # long table + column "student"
    audit_texts: int = 0
    certificates: pd.DataFrame | None = None  # one row per claim
    stages: list[Stage] = field(default_factory=list)
    threads: int = 0
    device: str = "cpu"
    total_seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def certificates_pass(self) -> bool:
        return self.certificates is not None and bool(self.certificates["passed"].astype(bool).all())


class _Clock:
    def __init__(self, result_stages: list[Stage], log: Any) -> None:
        self.stages, self.log = result_stages, log

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        st = Stage(name, 0.0, 0.0)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield st
        finally:
            st.wall, st.cpu = time.perf_counter() - w0, time.process_time() - c0
            self.stages.append(st)
            self.log(f"stage {name}: {st.wall:.1f} s" + (f" ({st.note})" if st.note else ""))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _stderr_log(msg: str) -> None:
    print(f"[repgeo demo] {msg}", file=sys.stderr, flush=True)


def _prepare_process(settings: DemoSettings) -> tuple[int, str]:
    """Threads, seeds and quiet libraries for a run; returns (torch threads, device)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = settings.threads or usable_cpus()
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)  # noqa: NPY002 -- libraries that draw from the global legacy RNG
    silence_transformers()
    return threads, "cuda" if torch.cuda.is_available() else "cpu"


def _teacher_source(settings: DemoSettings) -> tuple[str, str]:
    """(model folder or hub name, name shown in the report) of the teacher."""
    if settings.teacher is None:
        from repgeo.assets import minilm_path

        return str(minilm_path()), "all-MiniLM-L6-v2 (packaged)"
    return settings.teacher, settings.teacher


def _distil_students(result: DemoResult, paths: tuple[Path, Path], *, progress: bool, log: Any) -> Any:
    """Initialise the students from the teacher, distil one per method (and width), and compare each with its
    initialisation on the test set; returns the initial (wide) student model."""
    settings, data, teacher, out = result.settings, result.data, result.teacher, result.out
    train_path, test_path = paths
    test_ids = encode(teacher.tokenizer, data.test["text"], settings.max_length)
    pad_id = teacher.tokenizer.pad_token_id
    init, init_path = init_student(teacher, data, settings, out / "student-init")
    narrow_init, narrow_path = (init_student(teacher, data, settings, out / "student-init-narrow", narrow=True)
                                if settings.narrow_width else (None, None))
    y_test = label_ids(data.test["label"], data.labels)
    result.init_predictions = predict(init, test_ids, pad_id)
    if narrow_init is not None:
        result.init_predictions_narrow = predict(narrow_init, test_ids, pad_id)
        del narrow_init
    result.init_accuracy = float((result.init_predictions == y_test).mean())
    order = [m for m in settings.methods if m != "kd"] + (["kd"] if "kd" in settings.methods else [])
    for narrow in [False] + ([True] if settings.narrow_width else []):
        for method in order:
            run = run_student(settings, method, narrow=narrow, teacher_path=teacher.path,
                              student_path=narrow_path if narrow else init_path, train_path=train_path,
                              test_path=test_path, labels=data.labels, test_ids=test_ids,
                              test_labels=data.test["label"], runs_dir=out / "runs", cache_dir=out / "cache",
                              progress=progress, log=log)
            result.runs.append(run)
            gain = paired_difference(run.predictions, result.init_predictions_narrow if narrow
                                     else result.init_predictions, y_test)
            log(f"student {run.name}: test accuracy {run.accuracy:.3f}, {gain} over its initialisation"
                f"{'' if gain.delta > 2 * gain.se else ' (NOT above 2 paired SE)'} ({run.seconds:.1f} s)")
    result.vs_init = improvement_table(result)
    result.vs_init.to_csv(out / "vs_init.csv", index=False)
    return init


def run_demo(settings: DemoSettings, *, progress: bool = True, log: Any = None) -> DemoResult:
    """Run the whole demo with ``settings`` and write the report folder ``settings.out``."""
    from repgeo.demo.report import write_report

    log = log or _stderr_log
    t_start = time.perf_counter()
    threads, device = _prepare_process(settings)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    clock = _Clock(stages, log)
    log(f"preset {settings.preset}: {threads} torch thread(s) on {device}; report folder {out}")

    with clock.stage("data") as st:
        data = load_data(settings.data, text_column=settings.text_column, label_column=settings.label_column,
                         n_train=settings.n_train, n_test=settings.n_test, seed=settings.seed)
        paths = data.write(out / "data")
        st.note = f"{len(data.train)} train / {len(data.test)} test of {data.n_available}, {len(data.labels)} labels"
    source, teacher_name = _teacher_source(settings)
    with clock.stage("teacher") as st:
        cache = Path(settings.cache_dir) if settings.cache_dir else None
        teacher = prepare_teacher(source, data, settings, cache_dir=cache, out_dir=out, progress=progress, log=log)
        st.note = (f"{'loaded from cache' if teacher.cached else f'fine-tuned {settings.teacher_steps} steps'}; "
                   f"test accuracy {teacher.accuracy:.3f}")
    result = DemoResult(settings, out, data, teacher, teacher_name, threads=threads, device=device, stages=stages)
    with clock.stage("students") as st:
        init = _distil_students(result, paths, progress=progress, log=log)
        st.note = f"{len(result.runs)} students × {settings.student_steps} steps"
    with clock.stage("audit") as st:
        texts = list(data.test["text"][: settings.audit_size])
        models = {"init": init, **{r.name: r.model for r in result.runs}}
        lm = result.runs[0].layer_map if result.runs else {}
        result.audit = audit_students(teacher.model, teacher.tokenizer, texts, models, settings, layer_map=lm,
                                      progress=progress)
        result.audit_texts = len(texts)
        st.note = (f"{len(models)} students × {len(texts)} held-out texts; mapped layers with "
                   f"{settings.n_folds}-fold jackknife intervals and {settings.n_perm} permutations")
    with clock.stage("certificates") as st:
        result.certificates = certify(out / "counterexamples" if settings.figures else None, settings.seed)
        st.note = f"{int(result.certificates['passed'].sum())}/{len(result.certificates)} claims pass"
    with clock.stage("report"):
        result.total_seconds = time.perf_counter() - t_start
        result.files = write_report(result)
    result.total_seconds = time.perf_counter() - t_start
    write_report(result, figures=False)  # the summary again, with the report stage's time included
    return result


def improvement_table(result: DemoResult) -> pd.DataFrame:
    """Every distilled student against the untrained student it started from (same width), on the same test
    examples: accuracies, ``delta`` = difference of accuracies, its paired standard error ``se``
    (:func:`repgeo.demo.teacher.paired_difference`), ``z = delta / se`` and ``above_2se`` (``delta > 2 se``)."""
    y = label_ids(result.data.test["label"], result.data.labels)
    starts = {"wide": result.init_predictions, "narrow": result.init_predictions_narrow}
    rows = []
    for r in result.runs:
        start = starts.get(r.student)
        if start is None:
            continue
        d = paired_difference(r.predictions, start, y)
        rows.append({"model": r.name, "student": r.student, "method": r.method, "test_accuracy": r.accuracy,
                     "init_accuracy": float((start == y).mean()), "delta": d.delta, "se": d.se, "z": d.z,
                     "n": d.n, "above_2se": d.delta > 2 * d.se, "summary": str(d)})
    columns = ["model", "student", "method", "test_accuracy", "init_accuracy", "delta", "se", "z", "n", "above_2se",
               "summary"]
    return pd.DataFrame(rows, columns=columns)


def audit_students(teacher: Any, tokenizer: Any, texts: list[str], students: dict[str, Any], settings: Any, *,
                   layer_map: dict[int, int] | None = None, progress: bool = True) -> pd.DataFrame:
    """Every (teacher layer, student layer) cell of every student on the same held-out texts (the teacher's
    pooled features are collected once): point values for the whole grid, jackknife intervals and permutation
    p-values for the mapped cells of ``layer_map`` (student layer -> teacher layer; resampling every cell costs
    ~40x more), plus proj_mse at the last mapped pair; columns as :func:`repgeo.audit.audit_features` plus
    ``student``."""
    from repgeo.audit import audit_features
    from repgeo.audit.table import N_FLOOR
    from repgeo.distill.students import num_blocks
    from repgeo.probe import collect, tokenize_texts

    batches = tokenize_texts(tokenizer, texts, batch_size=32, max_length=settings.max_length, padding_side="right",
                             warn=False)
    teacher.eval()
    t_feats = collect(teacher, batches, list(range(num_blocks(teacher.config) + 1)), settings.pooling,
                      progress=progress)
    frames = []
    for name, model in students.items():
        model.eval()
        s_feats = collect(model, batches, list(range(num_blocks(model.config) + 1)), settings.pooling,
                          progress=False)
        metrics = list(settings.audit_metrics)
        df = audit_features(t_feats, s_feats, metrics, n_folds=0, n_perm=0, seed=settings.seed)
        mapped = [(f"hidden_states.{t}", f"hidden_states.{s}") for s, t in (layer_map or {}).items()
                  if f"hidden_states.{s}" in s_feats]
        if mapped and (settings.n_folds or settings.n_perm):
            resampled = audit_features(t_feats, s_feats, metrics, cells=mapped, n_folds=settings.n_folds,
                                       n_perm=settings.n_perm, seed=settings.seed)
            keys = ["teacher_layer", "student_layer", "metric"]
            df = (pd.concat([df.set_index(keys).drop(resampled.set_index(keys).index), resampled.set_index(keys)])
                  .reset_index()[df.columns])
        if layer_map:  # held-out proj_mse at the last mapped pair: value and null floor, no interval or p-value
            s_top = max(layer_map)
            t_last, s_last = f"hidden_states.{layer_map[s_top]}", f"hidden_states.{s_top}"
            pm = audit_features({t_last: t_feats[t_last]}, {s_last: s_feats[s_last]}, ["proj_mse"],
                                n_folds=settings.n_folds, n_perm=N_FLOOR if settings.n_perm else 0, seed=settings.seed)
            # its N_FLOOR permutations (each a cross-fitted refit) serve the floor; a p-value would need >= 19
            pm["p_value"] = np.nan
            df = pd.concat([df, pm], ignore_index=True)
        df.insert(0, "student", name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.attrs.update(frames[0].attrs)
    table.attrs.update(pooling=settings.pooling, n_stimuli=len(texts), max_length=settings.max_length,
                       mode="memory", truncated=list(batches.truncated))
    return table


def certify(figures: Path | None, seed: int) -> pd.DataFrame:
    """Build and certify every counterexample of the theory; one row per claim (and a figure per construction)."""
    from repgeo.counterexamples import all_counterexamples, certify_all

    def save_figure(cx: Any, cert: pd.DataFrame, name: str) -> None:
        from repgeo.counterexamples.figures import plot_counterexample, save

        save(plot_counterexample(cx), figures / f"{name}.png")

    return certify_all(all_counterexamples(seed=seed), save_figure if figures is not None else None)
