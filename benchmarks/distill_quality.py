"""Distillation quality study: geometric feature losses (Procrustes, FG) vs projection-MSE and CKA, on real
labelled data obtainable offline, across tasks and seeds, with an α sweep on validation and paired tests.

    python benchmarks/distill_quality.py --preset cpu     # about 2.5 hours on 2 quiet CPU cores (resumable)
    python benchmarks/distill_quality.py --preset gpu     # one large GPU; several hours, not yet measured
    python benchmarks/distill_quality.py --quick          # the smoke run a test runs (a few minutes on CPU)

Protocol (one *regime* = one task + one student + a training length):

1. Encoder regimes: the teacher, all-MiniLM-L6-v2 with a classification head, is fine-tuned on the task's
   training split (linear-probe initialised head, then the whole model; cached by settings) —
   ``repgeo.demo.teacher``. The student is derived from it (``keep_every``: teacher blocks 0, k, 2k, …; or a
   narrower, freshly initialised copy), its head re-fitted by a linear probe. Scored by test accuracy.
2. Causal regimes (the paper's OPT / instruction-following setting): labelled sets templated into instruction
   tasks (``repgeo.study_data.instruction_records``: prompt -> the label in words). The teacher,
   SmolLM2-135M-Instruct, is fine-tuned on the training tasks' instructions (response tokens only; cached); the
   student keeps ``num_layers`` of its 30 blocks (evenly spread, first and last kept). Scored by greedy generation:
   ROUGE-L (the table's number) and exact match on held-out examples of the training tasks, and the same on a
   held-out *task* (``heldout``, never trained on). Every method starts from the same student.
3. Methods, through the ``repgeo distill`` engine (``DistillationTrainer``, teacher logits and features cached):
   ``ft`` (task loss only), ``kd`` (+ logit KD, T = 2), ``kd+proj_mse`` / ``kd+cka`` / ``kd+procrustes`` /
   ``kd+fg`` (+ α × feature loss on mean-pooled mapped layers). α is *relative*: divided by the loss's value at
   initialisation, so one grid treats every loss alike (``repgeo.distill.alpha``).
4. α is chosen per feature loss on the validation split of the first regime, with the same grid and seeds for
   every loss, and used in every regime (relative α is what makes it transfer); the test split is used once, for
   the final numbers.
5. Each method runs with ``seeds`` seeds (seed = data order, dropout and the projector's initialisation; the
   student's starting weights are shared). Paired tests across seeds compare each geometric loss with the best
   non-geometric method of the regime (by mean test score), and with projection-MSE and CKA: mean difference
   with a 95 % t-interval, paired t-test and Wilcoxon signed-rank p-values, Cohen's d_z.
6. Ablations on the first regime: token-level instead of pooled features, and a linearly decaying α.

Every finished run is appended to ``<work>/runs.jsonl`` (keyed by its settings), so an interrupted study resumes
where it stopped, with the teacher its recorded runs used (pinned in ``<work>/<regime>/teacher.json``).
Results: ``benchmarks/results/distill_quality[_<preset>].json`` and ``.md``, and a plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
FEATURE_METHODS = ("proj_mse", "cka", "procrustes", "fg")
GEOMETRIC = ("procrustes", "fg")
METHODS = ("ft", "kd", *(f"kd+{m}" for m in FEATURE_METHODS))


@dataclass
class Regime:
    """One task + student + training length.

    ``family="encoder"``: ``task`` is a classification set, the teacher MiniLM, the student ``keep_every`` or
    ``narrow_width``. ``family="causal"``: ``task`` is ``+``-joined classification sets templated into instruction
    tasks (:func:`repgeo.study_data.instruction_records`), ``heldout`` a set held out as an unseen task, the
    teacher SmolLM2-135M-Instruct (``teacher="toy"``: a tiny random Llama, for ``--quick``) fine-tuned on the
    instructions, the student ``num_layers`` of its blocks (evenly spread, first and last kept). ``n_*`` are
    totals over the tasks (split evenly); the held-out task gets ``n_test`` examples.
    """

    task: str
    seeds: int
    n_train: int
    n_dev: int
    n_test: int
    student_steps: int
    keep_every: int = 2  # 6-layer teacher -> blocks 0, 2, 4
    narrow_width: int | None = None
    teacher_steps: int = 200
    max_length: int = 64
    family: str = "encoder"
    heldout: str | None = None
    num_layers: int | None = None
    teacher: str = "smollm2"
    batch: int | None = None  # default: the preset's

    @property
    def name(self) -> str:
        if self.family == "causal":
            held = f"->{self.heldout}" if self.heldout else ""
            return f"instruct({self.task}{held})/L{self.num_layers}/{self.student_steps}steps"
        student = f"narrow{self.narrow_width}" if self.narrow_width else f"keep{self.keep_every}"
        return f"{self.task}/{student}/{self.student_steps}steps"


@dataclass
class Preset:
    regimes: list[Regime]
    alpha_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    sweep_seeds: int = 2
    ablation_seeds: int = 5
    ablations: tuple[tuple[str, str, str], ...] = (("procrustes", "tokens", "constant"),
                                                   ("procrustes", "mean", "linear"), ("fg", "mean", "linear"))
    batch: int = 32
    lr: float = 1e-4
    teacher_lr: float = 5e-5
    causal_teacher_lr: float = 1e-4
    temperature: float = 2.0


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        regimes=[Regime("rotten_tomatoes", 2, 96, 48, 48, 4, teacher_steps=4, max_length=24),
                 Regime("rotten_tomatoes", 1, 64, 16, 16, 4, family="causal", num_layers=2, teacher="toy",
                        teacher_steps=40, max_length=48, batch=8)],
        alpha_grid=(1.0,), sweep_seeds=1, ablation_seeds=1, ablations=(("procrustes", "mean", "linear"),),
        batch=16, causal_teacher_lr=3e-3),
    "cpu": Preset(regimes=[
        Regime("rotten_tomatoes", 10, 3000, 500, 1000, 60, teacher_steps=150),
        Regime("banking77", 5, 4000, 500, 1000, 60, teacher_steps=200),
        Regime("rotten_tomatoes+banking77+hwu64", 5, 600, 60, 150, 60, family="causal", heldout="clinc",
               num_layers=10, teacher_steps=120, max_length=64, batch=8),
    ], alpha_grid=(0.3, 1.0, 3.0), sweep_seeds=1, ablation_seeds=5,
        ablations=(("procrustes", "tokens", "constant"), ("procrustes", "mean", "linear"))),
    # sized for one large GPU but not yet measured on one: on an H200 a student step measured ~20 ms and the pooled
    # feature losses 12-33 ms (latency-bound, benchmarks/loss_overhead.py), so ~50 ms a step, ~20 s a run
    "gpu": Preset(regimes=[
        Regime("rotten_tomatoes", 10, 8927, 1000, 2000, 300, teacher_steps=600, max_length=96),
        Regime("banking77", 10, 9003, 1000, 3080, 300, teacher_steps=800),
        Regime("trec", 5, 4849, 532, 490, 300, teacher_steps=400),
        Regime("rotten_tomatoes", 5, 8927, 1000, 2000, 300, teacher_steps=600, narrow_width=192, max_length=96),
        Regime("rotten_tomatoes+banking77+hwu64", 10, 6000, 300, 600, 300, family="causal", heldout="clinc",
               num_layers=10, teacher_steps=600, max_length=96, batch=32),
        Regime("rotten_tomatoes+banking77+hwu64", 5, 6000, 300, 600, 300, family="causal", heldout="clinc",
               num_layers=6, teacher_steps=600, max_length=96, batch=32),
    ], alpha_grid=(0.1, 0.3, 1.0, 3.0, 10.0), sweep_seeds=2, ablation_seeds=10, batch=64),
}


# ----------------------------------------------------------------------------------------------- data and models
def load_splits(task: str, r: Regime, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Train / dev / test frames (``text``, ``label`` as strings), subsampled with a fixed seed (stratified where
    every class has enough rows)."""
    from repgeo.study_data import text_classification

    splits = text_classification(task)
    sizes = {"train": r.n_train, "dev": r.n_dev, "test": r.n_test}
    out = {}
    for name, frame in splits.items():
        frame = frame.assign(label=frame["label"].astype(str))
        n = min(sizes[name], len(frame))
        out[name] = frame.sample(n=n, random_state=seed).reset_index(drop=True) if n < len(frame) else frame
    known = set(out["train"]["label"])
    for name in ("dev", "test"):  # a class absent from the subsampled training split cannot be learned
        out[name] = out[name][out[name]["label"].isin(known)].reset_index(drop=True)
    return out


def teacher_settings(preset: Preset, r: Regime, cache: Path) -> Any:
    from repgeo.demo.settings import settings_for

    return settings_for("default", n_train=r.n_train, n_test=r.n_dev, max_length=r.max_length,
                        teacher_steps=r.teacher_steps, teacher_lr=preset.teacher_lr, teacher_batch=preset.batch,
                        probe_init=min(1024, r.n_train), keep_every=r.keep_every, narrow_width=r.narrow_width,
                        cache_dir=str(cache), seed=0)


@dataclass
class Prepared:
    """A regime's teacher, student initialisation, data files and scorer.

    ``score(model, split)`` gives ``{"acc"}`` (encoder) or ``{"rougeL", "exact_match"}`` in [0, 1] (causal, by
    greedy generation); ``primary`` names the one the tables use. Causal regimes also score split ``heldout``.
    """

    regime: Regime
    teacher_path: Path
    student_path: Path
    files: dict[str, Path]
    score: Callable[[Any, str], dict[str, float]]
    primary: str
    labels: list[str] | None
    n: dict[str, int]
    teacher_seconds: float
    teacher_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    student_init_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("dev", "test", "heldout") if "heldout" in self.files else ("dev", "test")

    def measure_references(self, teacher: Any, student: Any, log: Any) -> None:
        for name in self.eval_splits:
            self.teacher_scores[name] = self.score(teacher, name)
            self.student_init_scores[name] = self.score(student, name)
        log(f"{self.regime.name}: teacher test {self.teacher_scores['test']}, student init test "
            f"{self.student_init_scores['test']}, train/dev/test {self.n}")


def regime_folder(work: Path, r: Regime) -> Path:
    return work / r.name.replace("/", "_").replace("+", "_").replace("(", "_").replace(")", "").replace(">", "")


PIN = "teacher.json"
CAUSAL_TEACHER_META = "study_teacher.json"  # settings and seconds of a fine-tuned causal teacher


def pinned_teacher(folder: Path) -> Path | None:
    """The teacher folder this regime's recorded runs were trained against (``<regime>/teacher.json``), if it
    still exists. A resumed study keeps it even when the teacher recipe has changed since, so that every run of a
    regime shares one teacher; start the regime afresh with a new ``--work`` folder."""
    try:
        path = Path(json.loads((folder / PIN).read_text())["teacher"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if (path / "config.json").is_file() else None


def pin_teacher(folder: Path, teacher: Path) -> None:
    from repgeo.probe.sinks import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / PIN, (json.dumps({"teacher": str(teacher)}) + "\n").encode())


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    from repgeo.probe.sinks import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    return path


def prepare(preset: Preset, r: Regime, work: Path, log: Any) -> Prepared:
    return (prepare_causal if r.family == "causal" else prepare_encoder)(preset, r, work, log)


def prepare_encoder(preset: Preset, r: Regime, work: Path, log: Any) -> Prepared:
    import transformers

    from repgeo.assets import minilm_path
    from repgeo.demo.data import DemoData
    from repgeo.demo.students import init_student
    from repgeo.demo.teacher import TeacherResult, encode, label_ids, load_teacher_folder, predict, prepare_teacher

    splits = load_splits(r.task, r)
    labels = sorted(set(splits["train"]["label"]))
    folder = regime_folder(work, r)
    files = {name: _write_jsonl(folder / "data" / f"{name}.jsonl", frame.to_dict("records"))
             for name, frame in splits.items()}
    data = DemoData(splits["train"], splits["dev"], labels, r.task, len(splits["train"]))
    settings = teacher_settings(preset, r, work / "teachers")
    pinned = pinned_teacher(folder)
    if pinned is not None:
        log(f"{r.name}: keeping the teacher of its recorded runs, {pinned}")
        model, tok, meta = load_teacher_folder(pinned, len(labels))
        teacher = TeacherResult(pinned, model, tok, float("nan"), np.array([]), True, meta["seconds"])
    else:
        teacher = prepare_teacher(str(minilm_path()), data, settings, cache_dir=work / "teachers", progress=False,
                                  log=log)
    init_path = folder / "student-init"
    if not (init_path / "config.json").is_file():
        init_student(teacher, data, settings, init_path, narrow=r.narrow_width is not None)
    pin_teacher(folder, Path(teacher.path))
    tok = teacher.tokenizer
    ids = {name: encode(tok, list(frame["text"]), r.max_length) for name, frame in splits.items()}
    y = {name: label_ids(frame["label"], labels) for name, frame in splits.items()}

    def score(model: Any, split: str) -> dict[str, float]:
        return {"acc": float((predict(model, ids[split], tok.pad_token_id) == y[split]).mean())}

    p = Prepared(r, Path(teacher.path), init_path, files, score, "acc", labels,
                 {k: len(v) for k, v in y.items()}, teacher.seconds)
    p.measure_references(teacher.model, transformers.AutoModelForSequenceClassification.from_pretrained(init_path),
                         log)
    return p


def prepare_causal(preset: Preset, r: Regime, work: Path, log: Any) -> Prepared:
    """Instruction records from the labelled sets, the fine-tuned causal teacher and the truncated student."""
    import transformers

    from repgeo.distill.config import DataConfig
    from repgeo.distill.students import derive_student
    from repgeo.distill.tasks.instruction import InstructionTask
    from repgeo.study_data import instruction_records

    tasks = r.task.split("+")
    share = {k: max(1, v // len(tasks)) for k, v in (("train", r.n_train), ("dev", r.n_dev), ("test", r.n_test))}
    records: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for t in tasks:
        sub = dataclasses.replace(r, n_train=share["train"], n_dev=share["dev"], n_test=share["test"])
        for split, frame in load_splits(t, sub).items():
            records[split] += instruction_records(t, frame)
    if r.heldout:
        held = load_splits(r.heldout, dataclasses.replace(r, n_train=10**9, n_dev=0, n_test=r.n_test))
        records["heldout"] = instruction_records(r.heldout, held["test"])
    order = np.random.default_rng(0).permutation(len(records["train"]))
    records["train"] = [records["train"][i] for i in order]  # tasks interleaved
    folder = regime_folder(work, r)
    files = {name: _write_jsonl(folder / "data" / f"{name}.jsonl", recs) for name, recs in records.items()}

    pinned = pinned_teacher(folder)
    if pinned is not None:
        log(f"{r.name}: keeping the teacher of its recorded runs, {pinned}")
        teacher_path, seconds = pinned, json.loads((pinned / CAUSAL_TEACHER_META).read_text())["seconds"]
    else:
        teacher_path, seconds = causal_teacher(preset, r, records, work / "teachers", log)
    tok = transformers.AutoTokenizer.from_pretrained(teacher_path)
    teacher = transformers.AutoModelForCausalLM.from_pretrained(teacher_path)
    init_path = folder / "student-init"
    if not (init_path / "config.json").is_file():
        derive_student(teacher, num_layers=r.num_layers).save_pretrained(init_path)
        tok.save_pretrained(init_path)
    pin_teacher(folder, teacher_path)
    student = transformers.AutoModelForCausalLM.from_pretrained(init_path)
    task = InstructionTask(tok, DataConfig(train=str(files["train"]), max_length=r.max_length))
    datasets = {name: task.dataset(str(path)) for name, path in files.items() if name != "train"}
    longest = max(len(tok(x["response"], add_special_tokens=False)["input_ids"]) for recs in records.values()
                  for x in recs)

    def score(model: Any, split: str) -> dict[str, float]:
        out = task.generate_scores(model, datasets[split], max_new_tokens=longest + 1, num_samples=None,
                                   batch_size=64)
        return {k: v / 100.0 for k, v in out.items()}

    p = Prepared(r, teacher_path, init_path, files, score, "rougeL", None,
                 {k: len(v) for k, v in records.items()}, seconds)
    p.measure_references(teacher, student, log)
    return p


def causal_teacher(preset: Preset, r: Regime, records: dict[str, list[dict[str, Any]]], cache: Path,
                   log: Any) -> tuple[Path, float]:
    """The causal teacher fine-tuned on the training instructions (AdamW, linear warm-up and decay, loss on the
    response tokens), cached by its settings and data; (folder, seconds it took)."""
    import torch
    import transformers

    from repgeo.distill.config import DataConfig
    from repgeo.distill.tasks.instruction import InstructionTask

    batch = r.batch or preset.batch
    settings = {"teacher": r.teacher, "steps": r.teacher_steps, "lr": preset.causal_teacher_lr, "batch": batch,
                "max_length": r.max_length, "format": 1,
                "data": hashlib.sha256(json.dumps(records["train"]).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    out = cache / f"causal-{key}"
    meta = out / CAUSAL_TEACHER_META
    if meta.is_file():
        return out, json.loads(meta.read_text())["seconds"]
    t0 = time.perf_counter()
    transformers.set_seed(0)
    if r.teacher == "toy":
        from repgeo.distill.toy import tiny_model, word_tokenizer

        texts = [x["prompt"] + x["response"] for recs in records.values() for x in recs]
        tok = word_tokenizer(texts, style="causal")
        model = tiny_model("llama", len(tok), hidden_size=32, num_layers=4, tokenizer=tok)
    else:
        from repgeo.study_data import smollm2_path

        tok = transformers.AutoTokenizer.from_pretrained(smollm2_path())
        model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_path())
    task = InstructionTask(tok, DataConfig(train="", max_length=r.max_length))
    items = [task.dataset_item(x["prompt"], x["response"], i) for i, x in enumerate(records["train"])]
    opt = torch.optim.AdamW(model.parameters(), lr=preset.causal_teacher_lr, weight_decay=0.01)
    warm = max(1, r.teacher_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min((k + 1) / warm, max(0.0, (r.teacher_steps - k) / max(1, r.teacher_steps - warm))))
    rng = np.random.default_rng(0)
    model.train()
    order: list[int] = []
    for step in range(r.teacher_steps):
        if len(order) < batch:
            order += list(rng.permutation(len(items)))
        inputs = task.collate([items[i] for i in order[:batch]])
        del order[:batch]
        inputs.pop("example_index")
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % max(1, r.teacher_steps // 5) == 0 or step == r.teacher_steps - 1:
            log(f"causal teacher step {step + 1}/{r.teacher_steps}: loss {loss.item():.3f}")
    seconds = time.perf_counter() - t0
    tmp = cache / f".causal-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / CAUSAL_TEACHER_META).write_text(json.dumps({**settings, "seconds": seconds}, indent=1) + "\n")
    os.replace(tmp, out)
    return out, seconds


# ----------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunSpec:
    regime: str
    method: str  # one of METHODS
    seed: int
    alpha: float = 0.0  # relative α (feature methods)
    pooling: str = "mean"
    schedule: str = "constant"
    stage: str = "final"  # "sweep" | "final" | "ablation"

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def run_config(preset: Preset, p: Prepared, spec: RunSpec, out: Path, cache: Path) -> dict[str, Any]:
    r = p.regime
    metric = spec.method.split("+", 1)[1] if "+" in spec.method else None
    data: dict[str, Any] = {"train": str(p.files["train"]), "eval": str(p.files["dev"]), "max_length": r.max_length}
    if p.labels is not None:
        data["labels"] = p.labels
    return {
        "task": "instruction" if r.family == "causal" else "classification", "output_dir": str(out),
        "seed": spec.seed, "teacher": {"path": str(p.teacher_path)}, "student": {"path": str(p.student_path)},
        "data": data,
        "loss": {"metric": metric or "procrustes", "alpha": spec.alpha if metric else 0.0, "alpha_relative": True,
                 "alpha_schedule": spec.schedule, "w_task": 1.0,
                 "w_kd": 0.0 if spec.method == "ft" else 1.0, "temperature": preset.temperature,
                 "pooling": spec.pooling, "layer_map": "uniform"},
        "trainer": {"max_steps": r.student_steps, "learning_rate": preset.lr,
                    "per_device_train_batch_size": r.batch or preset.batch, "per_device_eval_batch_size": 64,
                    "warmup_steps": max(1, r.student_steps // 10), "weight_decay": 0.01,
                    "logging_steps": max(1, r.student_steps // 5), "save_strategy": "no", "disable_tqdm": True,
                    "dataloader_pin_memory": False, "report_to": "none", "train_sampling_strategy": "group_by_length"},
        # debiased CKA beside the plug-in metrics: the causal regime's probe has 60 dev rows against 576 features,
        # where plug-in CKA / Procrustes read an unrelated pair as alike (benchmarks/results/estimator_bias.md)
        "geometry": {"enabled": True, "metrics": ["procrustes", "cka", "cka_debiased", "fg"],
                     "probe_size": min(256, p.n["dev"])},
        "cache": {"enabled": spec.method != "ft", "path": str(cache)},
    }


def run_one(preset: Preset, p: Prepared, spec: RunSpec, work: Path) -> dict[str, Any]:
    """Train one student; its dev and test score (``dev_acc`` / ``test_acc``: the regime's primary score; all
    scores under ``scores``), the feature loss's initial value and α, seconds per step and the final mapped-layer
    geometry on the dev probe set."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from repgeo.distill import build_trainer, config_from_dict

    folder = regime_folder(work, p.regime)
    out = folder / "runs" / spec.key
    suffix = f"{spec.pooling}" + ("-features" if "+" in spec.method else "-logits")
    cfg = config_from_dict(run_config(preset, p, spec, out, folder / f"teacher_cache_{suffix}.pt"))
    trainer, _ = build_trainer(cfg, verbose=False)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    alpha_eff, l0 = 0.0, float("nan")
    if trainer.feature_loss is not None:  # calibrated by the runner (loss.alpha_relative)
        alpha_eff, l0 = trainer.alpha_info["alpha_eff"], trainer.alpha_info["feature_loss_init"]
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    # the sweep never looks at the test split
    splits = ("dev",) if spec.stage == "sweep" else p.eval_splits
    scores = {name: p.score(model, name) for name in splits}
    geometry = trainer.geometry.measure(trainer.teacher, model, step=trainer.state.global_step)
    history = trainer.state.log_history
    row = {**dataclasses.asdict(spec), "key": spec.key, "dev_acc": scores["dev"][p.primary],
           "test_acc": scores["test"][p.primary] if "test" in scores else float("nan"), "scores": scores,
           "alpha_eff": alpha_eff, "feature_loss_init": l0, "sec_per_step": seconds / max(1, trainer.state.global_step),
           "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), float("nan")),
           "geometry": {k.removeprefix("geometry/"): v for k, v in geometry.items()}}
    del trainer, model
    gc.collect()
    return row


# ----------------------------------------------------------------------------------------------- statistics
def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``a - b`` across seeds: mean, 95 % t-interval, paired t-test and Wilcoxon p-values, Cohen's d_z."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    out = {"n": n, "diff": mean, "ci_low": float("nan"), "ci_high": float("nan"), "p_t": float("nan"),
           "p_wilcoxon": float("nan"), "d_z": float("nan")}
    if n > 1 and sd > 0:
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half, p_t=float(stats.ttest_rel(a, b).pvalue), d_z=mean / sd)
    elif n > 1:  # identical differences: no spread
        out.update(ci_low=mean, ci_high=mean, p_t=1.0 if mean == 0 else 0.0)
    if n > 1 and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def summarize(rows: list[dict[str, Any]], stage: str = "final") -> dict[str, Any]:
    """Per regime: mean ± std per method, and paired comparisons of each geometric loss."""
    df = pd.DataFrame([r for r in rows if r["stage"] == stage])
    out: dict[str, Any] = {}
    for regime, g in df.groupby("regime", sort=False):
        table = g.groupby("method")["test_acc"].agg(["mean", "std", "count"])
        dev = g.groupby("method")["dev_acc"].mean()
        wide = g.pivot_table(index="seed", columns="method", values="test_acc")
        baselines = [m for m in ("ft", "kd", "kd+proj_mse", "kd+cka") if m in table.index]
        best = max(baselines, key=lambda m: table.loc[m, "mean"]) if baselines else None
        tests = {}
        for geo in (f"kd+{m}" for m in GEOMETRIC):
            if geo not in wide:
                continue
            for ref in dict.fromkeys([best, "kd+proj_mse", "kd+cka"]):
                if ref is None or ref not in wide:
                    continue
                both = wide[[geo, ref]].dropna()
                tests[f"{geo} vs {ref}"] = paired(both[geo].to_numpy(), both[ref].to_numpy())
        out[regime] = {
            "methods": {m: {"mean": float(t["mean"]), "std": float(t["std"]) if t["count"] > 1 else float("nan"),
                            "n": int(t["count"]), "dev_mean": float(dev[m])} for m, t in table.iterrows()},
            "best_non_geometric": best, "tests": tests,
            "sec_per_step": g.groupby("method")["sec_per_step"].median().to_dict(),
            "geometry": _mean_geometry(g),
        }
    return out


def _mean_geometry(g: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for method, gg in g.groupby("method"):
        keys = sorted({k for d in gg["geometry"] for k in d})
        out[method] = {k: float(np.mean([d[k] for d in gg["geometry"] if k in d])) for k in keys}
    return out


# ----------------------------------------------------------------------------------------------- the study
class RunLog:
    """Finished runs, one JSON line each, appended and flushed (an interrupted study resumes from it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if not path.is_file():
            return
        text = path.read_text()
        cut = False
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                cut = True
                continue
            self.rows[row["key"]] = row
        if cut or (text and not text.endswith("\n")):  # rewrite without it, atomically, before appending
            from repgeo.probe.sinks import atomic_write_bytes

            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.rows.values()).encode())

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def study(preset_name: str, work: Path, log: Any = print, limit_regimes: int | None = None) -> dict[str, Any]:
    """Run the study in the work folder ``work``, holding its lock (a second study into the same folder is refused
    with ``FolderLockedError``; a killed one leaves no stale lock)."""
    from repgeo._files import FolderLock

    work.mkdir(parents=True, exist_ok=True)
    with FolderLock(work, "quality study"):
        return _study(preset_name, work, log, limit_regimes)


def _study(preset_name: str, work: Path, log: Any = print, limit_regimes: int | None = None) -> dict[str, Any]:
    import torch

    from repgeo.demo.students import silence_transformers

    preset = PRESETS[preset_name]
    silence_transformers()
    work.mkdir(parents=True, exist_ok=True)
    runs = RunLog(work / "runs.jsonl")
    t_start = time.perf_counter()

    def do(p: Prepared, spec: RunSpec) -> dict[str, Any]:
        if spec.key not in runs.rows:
            row = run_one(preset, p, spec, work)
            runs.add(row)
            log(f"  {spec.stage} {spec.method} seed {spec.seed} α {spec.alpha} {spec.pooling}/{spec.schedule}: "
                f"dev {row['dev_acc']:.3f}" + ("" if spec.stage == "sweep" else f" test {row['test_acc']:.3f}")
                + f" ({row['sec_per_step']:.2f} s/step)")
        return runs.rows[spec.key]

    regimes = preset.regimes[:limit_regimes]
    prepared: dict[str, Prepared] = {}
    teachers = {}
    first = regimes[0]
    p0 = prepared[first.name] = prepare(preset, first, work, log)
    # 1. α sweep on the first regime's dev split: same grid and seeds for every feature loss
    chosen: dict[str, float] = {}
    sweep: dict[str, dict[float, float]] = {}
    for m in FEATURE_METHODS:
        if len(preset.alpha_grid) == 1:  # nothing to choose
            chosen[m] = preset.alpha_grid[0]
            continue
        sweep[m] = {}
        for a in preset.alpha_grid:
            accs = [do(p0, RunSpec(first.name, f"kd+{m}", s, a, stage="sweep"))["dev_acc"]
                    for s in range(100, 100 + preset.sweep_seeds)]
            sweep[m][a] = float(np.mean(accs))
        chosen[m] = max(sweep[m], key=lambda a: (sweep[m][a], -abs(math.log(a))))
        log(f"α sweep {m}: " + ", ".join(f"{a:g}: {v:.3f}" for a, v in sweep[m].items()) + f" -> α = {chosen[m]:g}")
    # 2. final runs, every regime, every method
    for r in regimes:
        p = prepared.get(r.name) or prepare(preset, r, work, log)
        prepared[r.name] = p
        teachers[r.name] = {"teacher": {k: v[p.primary] for k, v in p.teacher_scores.items()},
                            "student_init": {k: v[p.primary] for k, v in p.student_init_scores.items()},
                            "scores": {"teacher": p.teacher_scores, "student_init": p.student_init_scores},
                            "primary": p.primary, "labels": len(p.labels) if p.labels else None, "n": p.n,
                            "teacher_seconds": p.teacher_seconds}
        for seed in range(r.seeds):
            for method in METHODS:
                alpha = chosen[method.split("+", 1)[1]] if "+" in method else 0.0
                do(p, RunSpec(r.name, method, seed, alpha))
    # 3. ablations on the first regime: token-level features, decaying α
    for metric, pooling, schedule in preset.ablations:
        for seed in range(preset.ablation_seeds):
            do(p0, RunSpec(first.name, f"kd+{metric}", seed, chosen[metric], pooling, schedule, stage="ablation"))
    rows = list(runs.rows.values())
    wanted = {r.name for r in regimes}
    rows = [r for r in rows if r["regime"] in wanted]
    views, view_refs = score_views(rows, teachers)
    return {"preset": preset_name, "settings": _preset_dict(preset, regimes), "alpha_sweep": sweep,
            "alpha_chosen": chosen, "regimes": {**teachers, **view_refs}, "summary": summarize(rows + views),
            "ablations": _ablations(rows, first.name, chosen), "runs": rows,
            "seconds": time.perf_counter() - t_start, "threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


#: Extra table columns for causal regimes: (suffix, split, score); the regime's own column is ROUGE-L on held-out
#: examples of the training tasks.
CAUSAL_VIEWS = ((" · exact match", "test", "exact_match"), (" · held-out task", "heldout", "rougeL"),
                (" · held-out task EM", "heldout", "exact_match"))


def score_views(rows: list[dict[str, Any]], refs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """For causal regimes, copies of the final runs whose ``test_acc`` is another score (:data:`CAUSAL_VIEWS`),
    under the regime name + suffix, with the teacher / untrained-student references for those columns."""
    views, view_refs = [], {}
    for row in rows:
        for suffix, split, key in CAUSAL_VIEWS:
            if row["stage"] == "final" and key in row.get("scores", {}).get(split, {}):
                views.append({**row, "regime": row["regime"] + suffix, "test_acc": row["scores"][split][key]})
                ref = refs[row["regime"]]["scores"]
                view_refs[row["regime"] + suffix] = {
                    who: {"test": ref[who][split][key]} for who in ("teacher", "student_init")}
    return views, view_refs


def _preset_dict(preset: Preset, regimes: list[Regime]) -> dict[str, Any]:
    d = dataclasses.asdict(preset)
    d["regimes"] = [dataclasses.asdict(r) | {"name": r.name} for r in regimes]
    return d


def _ablations(rows: list[dict[str, Any]], regime: str, chosen: dict[str, float]) -> dict[str, Any]:
    """Each ablation against the same loss with pooled features and constant α, on the same seeds."""
    base = {(r["method"], r["seed"]): r["test_acc"] for r in rows
            if r["regime"] == regime and r["stage"] == "final"}
    out = {}
    variants: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["stage"] == "ablation" and r["regime"] == regime:
            variants.setdefault(f"{r['method']} {r['pooling']}/{r['schedule']}", {})[r["seed"]] = r["test_acc"]
    for name, by_seed in variants.items():
        method = name.split()[0]
        seeds = [s for s in by_seed if (method, s) in base]
        if seeds:
            a = np.array([by_seed[s] for s in seeds])
            b = np.array([base[(method, s)] for s in seeds])
            out[name] = {"mean": float(a.mean()), "base_mean": float(b.mean()), **paired(a, b)}
    return out


# ----------------------------------------------------------------------------------------------- report
def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"# Distillation quality — preset `{res['preset']}`", "",
             f"Command: `{command}` ({res['seconds'] / 60:.0f} min, {res['threads']} thread(s), {res['device']}).",
             "", "Test score, mean ± std over seeds (n = seeds): accuracy for the encoder regimes; for the instruct "
             "regimes ROUGE-L (or exact match) on held-out examples of the training tasks, and on a held-out task. "
             "Teacher and untrained student for reference.", ""]
    regimes = list(res["summary"])
    lines.append("| method | " + " | ".join(regimes) + " |")
    lines.append("|---" * (len(regimes) + 1) + "|")
    for m in METHODS:
        cells = []
        for g in regimes:
            s = res["summary"][g]["methods"].get(m)
            cells.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} (n={s['n']})" if s else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for who in ("teacher", "student_init"):
        lines.append(f"| *{who.replace('_', ' ')}* | "
                     + " | ".join(f"{100 * res['regimes'][g][who]['test']:.1f}" for g in regimes) + " |")
    lines += ["", "Paired differences in test score (points, geometric − reference) across seeds; comparisons where "
              "every seed scored the same for both methods are left out:", "",
              "| regime | comparison | diff | 95 % CI | p (t) | p (Wilcoxon) | d_z |", "|---|---|---|---|---|---|---|"]
    for g in regimes:
        best = res["summary"][g]["best_non_geometric"]
        for name, t in res["summary"][g]["tests"].items():
            if t["diff"] == 0 and t["ci_low"] == t["ci_high"] == 0:  # every seed scored alike: nothing to test
                continue
            ref = name.split(" vs ")[1]
            tag = " (best non-geometric)" if ref == best else ""
            lines.append(f"| {g} | {name}{tag} | {100 * t['diff']:+.2f} | [{100 * t['ci_low']:+.2f}, "
                         f"{100 * t['ci_high']:+.2f}] | {t['p_t']:.3g} | {t['p_wilcoxon']:.3g} | {t['d_z']:+.2f} |")
    if res["alpha_sweep"]:
        grid = next(iter(res["alpha_sweep"].values()))
        lines += ["", "α sweep (relative α; mean dev accuracy of the first regime; chosen α in bold):", "",
                  "| loss | " + " | ".join(f"α = {float(a):g}" for a in grid) + " |", "|---" * (1 + len(grid)) + "|"]
        for m, by_a in res["alpha_sweep"].items():
            cells = [(f"**{100 * v:.1f}**" if float(a) == res["alpha_chosen"][m] else f"{100 * v:.1f}")
                     for a, v in by_a.items()]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    else:
        lines += ["", f"α (relative, not swept): {res['alpha_chosen']}"]
    if res["ablations"]:
        lines += ["", "Ablations on the first regime (vs the same loss, pooled features, constant α; same seeds):", "",
                  "| variant | test acc | base | diff | p (t) |", "|---|---|---|---|---|"]
        for name, a in res["ablations"].items():
            lines.append(f"| {name} | {100 * a['mean']:.1f} | {100 * a['base_mean']:.1f} | {100 * a['diff']:+.2f} | "
                         f"{a['p_t']:.3g} |")
    lines += ["", "Cost (median seconds per training step, teacher cached) and final geometry between the last mapped "
              "layers on the dev probe set (mean over seeds):", ""]
    for g in regimes:
        if " · " in g:  # a score view of a causal regime: same runs, same cost and geometry
            continue
        s = res["summary"][g]
        geo_keys = sorted({k for d in s["geometry"].values() for k in d})
        top = max((k.split("/")[1] for k in geo_keys), key=_pair_order)  # e.g. "s10_t30" after "s9_t27"
        last = [k for k in geo_keys if k.split("/")[1] == top]
        lines += [f"**{g}**", "", "| method | s/step | " + " | ".join(last) + " |", "|---" * (2 + len(last)) + "|"]
        for m in METHODS:
            if m in s["sec_per_step"]:
                lines.append(f"| {m} | {s['sec_per_step'][m]:.3f} | "
                             + " | ".join(f"{s['geometry'][m].get(k, float('nan')):.3f}" for k in last) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _pair_order(pair: str) -> tuple[int, ...]:
    """``"s3_t6"`` -> ``(3, 6)``: mapped layer pairs in numeric order."""
    return tuple(int(part[1:]) for part in pair.split("_"))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(res["summary"])
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.6), squeeze=False)
    df = pd.DataFrame([r for r in res["runs"] if r["stage"] == "final"])
    for ax, g in zip(axes[0], regimes, strict=True):
        sub = df[df["regime"] == g]
        for i, m in enumerate(METHODS):
            acc = 100 * sub[sub["method"] == m]["test_acc"].to_numpy()
            if len(acc):
                color = "C3" if m.split("+")[-1] in GEOMETRIC else "C0"
                ax.scatter(np.full(len(acc), i) + np.linspace(-0.15, 0.15, len(acc)), acc, s=9, color=color, alpha=0.6)
                ax.errorbar(i, acc.mean(), yerr=acc.std(ddof=1) if len(acc) > 1 else 0, fmt="_", color="k",
                            capsize=4, markersize=14)
        ax.axhline(100 * res["regimes"][g]["teacher"]["test"], color="grey", ls="--", lw=1, label="teacher")
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=40, ha="right", fontsize=8)
        ax.set_title(g, fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
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
