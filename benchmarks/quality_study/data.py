"""Data preparation of a regime: subsampled splits, instruction records, data files, the teacher and the untrained
student, and the scorer (:class:`Prepared`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .geometry import GeometryProbe
from .regimes import Preset, Regime
from .teachers import CAUSAL_TEACHER_META, causal_teacher, pin_teacher, pinned_teacher, teacher_settings


def load_splits(task: str, r: Regime, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Train / dev / test frames (``text``, ``label`` as strings), subsampled with a fixed seed (stratified where
    every class has enough rows)."""
    from repgeo.assets.study import text_classification

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


@dataclass
class Prepared:
    """A regime's teacher, student initialisation, data files and scorer.

    ``score(model, split, who="student")`` (``who="teacher"``: read with the teacher's tokenizer) gives
    ``{"acc"}`` (encoder) or ``{"rougeL", "exact_match"}`` in [0, 1] (causal, by greedy generation); ``primary``
    names the one the tables use.
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
    probe: GeometryProbe | None = None  # the final-geometry probe (.geometry), the same for every run

    @property
    def teacher_fingerprint(self) -> str:
        """:func:`weights_fingerprint` of the teacher (a re-fine-tuned teacher on another machine can differ)."""
        return weights_fingerprint(self.teacher_path)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("dev", "test")

    def measure_references(self, teacher: Any, student: Any, log: Any) -> None:
        for name in self.eval_splits:
            self.teacher_scores[name] = self.score(teacher, name, who="teacher")
            self.student_init_scores[name] = self.score(student, name)
        log(f"{self.regime.name}: teacher test {self.teacher_scores['test']}, student init test "
            f"{self.student_init_scores['test']}, train/dev/test {self.n}")


def weights_fingerprint(folder: Path) -> str:
    """The first 12 hex digits of the SHA-256 of a model folder's weight files (``*.safetensors``, ``*.bin``, in
    name order; read from the folder's ``repgeo_files.json`` manifest when it has one)."""
    import hashlib

    from repgeo.demo.teacher import CACHE_MANIFEST

    names = sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))
    if not names:
        raise ValueError(f"folder {folder} has no weight files (*.safetensors, *.bin)")
    manifest = Path(folder) / CACHE_MANIFEST
    known = json.loads(manifest.read_text()).get("files", {}) if manifest.is_file() else {}
    h = hashlib.sha256()
    for name in names:
        if name in known:
            h.update(known[name]["sha256"].encode())
        else:
            with (Path(folder) / name).open("rb") as f:
                h.update(hashlib.file_digest(f, "sha256").hexdigest().encode())
    return h.hexdigest()[:12]


def regime_folder(work: Path, r: Regime) -> Path:
    return work / r.name.replace("/", "_").replace("+", "_").replace("(", "_").replace(")", "").replace(">", "")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    from repgeo.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    return path


def _probe(ids: dict[str, list[list[int]]], pad_id: int, teacher: Any, student: Any,
           student_ids: tuple[dict[str, list[list[int]]], int] | None = None) -> GeometryProbe:
    """The regime's geometry probe: evaluation texts first, training texts only if those are too few;
    ``student_ids`` (ids by split, pad id) when the student reads the texts with another tokenizer."""
    from repgeo.distill.checks import hidden_sizes

    width = max(max(hidden_sizes(teacher)), max(hidden_sizes(student)))
    return GeometryProbe.take(ids, ["dev", "test", "train"], pad_id, width, student=student_ids)


def prepare(preset: Preset, r: Regime, work: Path, log: Any, *, references: bool = True) -> Prepared:
    """The regime's :class:`Prepared`; ``references=False`` skips scoring the teacher and the initial student
    (a worker process of :mod:`.pool`: the parent has recorded them)."""
    return (prepare_causal if r.family == "causal" else prepare_encoder)(preset, r, work, log, references=references)


def _encoder_teacher(r: Regime, data: Any, settings: Any, folder: Path, work: Path, log: Any) -> Any:
    """The fine-tuned encoder teacher: the one the regime's recorded runs used (pinned), else the cached or newly
    fine-tuned ``r.teacher`` (``repgeo.demo.teacher.prepare_teacher``)."""
    from repgeo.assets import demo as demo_assets
    from repgeo.assets import study as study_assets
    from repgeo.demo.teacher import TeacherResult, load_teacher_folder, prepare_teacher

    pinned = pinned_teacher(folder)
    if pinned is not None:
        log(f"{r.name}: keeping the teacher of its recorded runs, {pinned}")
        model, tok, meta = load_teacher_folder(pinned, len(data.labels))
        return TeacherResult(pinned, model, tok, float("nan"), np.array([]), True, meta["seconds"])
    sources = {"minilm": demo_assets.minilm_path, "mpnet": study_assets.mpnet_path}
    if r.teacher not in sources:
        raise ValueError(f"teacher must be one of {', '.join(sources)} for an encoder regime, got {r.teacher!r}")
    source = sources[r.teacher]()
    return prepare_teacher(str(source), data, settings, cache_dir=work / "teachers", progress=False, log=log)


def pretrained_student(r: Regime, data: Any, folder: Path, probe_init: int) -> None:
    """The pretrained student (all-MiniLM-L6-v2 with its own tokenizer, ``r.student_layers`` of its 6 blocks
    evenly spread, first and last kept) with a linear-probe initialised head, saved in ``folder``."""
    from repgeo.assets import minilm_path
    from repgeo.distill import derive_student
    from repgeo.recipes.classifier import encode, label_ids, linear_probe_init, load_classifier, load_tokenizer

    tok = load_tokenizer(str(minilm_path()))
    model = load_classifier(str(minilm_path()), len(data.labels), tok)
    model.config.id2label = dict(enumerate(data.labels))
    model.config.label2id = {lab: i for i, lab in enumerate(data.labels)}
    if r.student_layers is not None and r.student_layers < model.config.num_hidden_layers:
        model = derive_student(model, num_layers=r.student_layers, seed=0)
    n = min(len(data.train), probe_init)
    ids = encode(tok, data.train["text"][:n], r.max_length)
    linear_probe_init(model, ids, label_ids(data.train["label"][:n], data.labels), tok.pad_token_id, seed=0)
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def prepare_encoder(preset: Preset, r: Regime, work: Path, log: Any, *, references: bool = True) -> Prepared:
    """Splits and data files, the teacher, the student initialisation and the scorer. Each model reads the texts
    with its own tokenizer; the geometry probe uses token rows when the two share a vocabulary, else one
    mean-pooled row per text (:mod:`.geometry`)."""
    import transformers

    from repgeo.demo.data import DemoData
    from repgeo.demo.students import init_student
    from repgeo.recipes.classifier import encode, label_ids, load_tokenizer, predict

    splits = load_splits(r.task, r)
    labels = sorted(set(splits["train"]["label"]))
    folder = regime_folder(work, r)
    files = {name: _write_jsonl(folder / "data" / f"{name}.jsonl", frame[["text", "label"]].to_dict("records"))
             for name, frame in splits.items()}
    data = DemoData(splits["train"], splits["dev"], labels, r.task, len(splits["train"]))
    settings = teacher_settings(preset, r, work / "teachers")
    teacher = _encoder_teacher(r, data, settings, folder, work, log)
    init_path = folder / "student-init"
    if not (init_path / "config.json").is_file():
        if r.student == "pretrained":
            pretrained_student(r, data, init_path, settings.probe_init)
        else:
            init_student(teacher, data, settings, init_path, narrow=r.narrow_width is not None)
    pin_teacher(folder, Path(teacher.path))
    toks = {"teacher": teacher.tokenizer, "student": load_tokenizer(str(init_path))}
    shared = toks["teacher"].get_vocab() == toks["student"].get_vocab()
    ids = {who: {name: encode(tok, list(frame["text"]), r.max_length) for name, frame in splits.items()}
           for who, tok in toks.items()}
    y = {name: label_ids(frame["label"], labels) for name, frame in splits.items()}

    def score(model: Any, split: str, *, who: str = "student") -> dict[str, float]:
        pred = predict(model, ids[who][split], toks[who].pad_token_id, progress=False)
        return {"acc": float((pred == y[split]).mean())}

    student = transformers.AutoModelForSequenceClassification.from_pretrained(init_path)
    probe = _probe(ids["teacher"], toks["teacher"].pad_token_id, teacher.model, student,
                   None if shared else (ids["student"], toks["student"].pad_token_id))
    probe.cache = folder
    p = Prepared(r, Path(teacher.path), init_path, files, score, "acc", labels,
                 {k: len(v) for k, v in y.items()}, teacher.seconds, probe=probe)
    if references:
        p.measure_references(teacher.model, student, log)
    return p


def prepare_causal(preset: Preset, r: Regime, work: Path, log: Any, *, references: bool = True) -> Prepared:
    """Instruction records from the labelled sets, the fine-tuned causal teacher and the truncated student."""
    import transformers

    from repgeo.assets.study import instruction_records
    from repgeo.distill.config import DataConfig
    from repgeo.distill.students import derive_student
    from repgeo.distill.tasks.instruction import InstructionTask

    tasks = r.task.split("+")
    share = {k: max(1, v // len(tasks)) for k, v in (("train", r.n_train), ("dev", r.n_dev), ("test", r.n_test))}
    records: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for t in tasks:
        sub = dataclasses.replace(r, n_train=share["train"], n_dev=share["dev"], n_test=share["test"])
        for split, frame in load_splits(t, sub).items():
            records[split] += instruction_records(t, frame)
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
        derive_student(teacher, num_layers=r.student_layers).save_pretrained(init_path)
        tok.save_pretrained(init_path)
    pin_teacher(folder, teacher_path)
    student = transformers.AutoModelForCausalLM.from_pretrained(init_path)
    task = InstructionTask(tok, DataConfig(train=str(files["train"]), max_length=r.max_length))
    datasets = {name: task.dataset(str(path)) for name, path in files.items()}
    longest = max(len(tok(x["response"], add_special_tokens=False)["input_ids"]) for recs in records.values()
                  for x in recs)

    def score(model: Any, split: str, *, who: str = "student") -> dict[str, float]:
        out = task.generate_scores(model, datasets[split], max_new_tokens=longest + 1, num_samples=None,
                                   batch_size=64)
        return {k: v / 100.0 for k, v in out.items()}

    ids = {name: [item["input_ids"] for item in ds.items] for name, ds in datasets.items()}
    p = Prepared(r, teacher_path, init_path, files, score, "rougeL", None,
                 {k: len(v) for k, v in records.items()}, seconds,
                 probe=_probe(ids, tok.pad_token_id, teacher, student))
    if references:
        p.measure_references(teacher, student, log)
    return p
