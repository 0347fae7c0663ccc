"""The demo's teacher: a pretrained encoder fine-tuned for the task, cached by settings.

The fine-tuned teacher is written to ``<cache>/teacher-<key>/`` (model, tokenizer and ``demo_teacher.json``: the
settings it was trained with, its loss curve, its held-out accuracy and the seconds it took). ``key`` hashes
everything the weights depend on: the source model (its folder's files or its hub name), the data split, the
label order, the maximum length and every fine-tuning setting; a later run with the same settings loads it in
seconds, any change trains a new one. Writes are atomic (a temporary folder renamed into place) and the folder
carries ``repgeo_files.json``, the size and sha256 of each of its files: a cached teacher is verified before it is
loaded, and one that differs (a damaged or edited file) is fine-tuned again, with a line saying why.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repgeo._files import (
    IntegrityError,
    atomic_folder,
    content_sha256,
    verify_folder,
    write_manifest,
)
from repgeo.recipes.classifier import (
    FineTuning,
    encode,
    fine_tune,
    label_ids,
    load_classifier,
    load_tokenizer,
    predict,
)

from .data import DemoData

TEACHER_META = "demo_teacher.json"
CACHE_MANIFEST = "repgeo_files.json"
FORMAT = 5  # 4: length-grouped batches; 5: probe standardised by the spread under dropout


@dataclass
class TeacherResult:
    path: Path
    model: Any
    tokenizer: Any
    accuracy: float
    predictions: np.ndarray
    cached: bool
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)
    source: str = ""


def default_cache_dir() -> Path:
    from repgeo.assets import cache_dir

    return cache_dir() / "demo"


def _source_identity(source: str) -> dict[str, Any]:
    """The source model: its hub name, or the sha256 of its folder's files (a model re-saved in place is another
    source)."""
    p = Path(source)
    if not p.exists():
        return {"hub": source}
    return {"folder": str(p.resolve()), "files": content_sha256(p)}


def cache_key(source: str, data: DemoData, settings: Any) -> str:
    spec = {
        "format": FORMAT, "source": _source_identity(source), "data": data.fingerprint(),
        "labels": [str(x) for x in data.labels], "max_length": settings.max_length, "seed": settings.seed,
        "steps": settings.teacher_steps, "lr": settings.teacher_lr, "head_lr_mult": settings.head_lr_mult,
        "probe_init": settings.probe_init, "batch": settings.teacher_batch,
        "train": settings.teacher_train, "freeze_embeddings": settings.freeze_embeddings,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def fine_tuning(settings: Any) -> FineTuning:
    """The teacher's fine-tuning settings (:class:`~repgeo.recipes.classifier.FineTuning`) of demo ``settings``."""
    return FineTuning(steps=settings.teacher_steps, lr=settings.teacher_lr, batch=settings.teacher_batch,
                      max_length=settings.max_length, head_lr_mult=settings.head_lr_mult,
                      probe_init=settings.probe_init, train=settings.teacher_train,
                      freeze_embeddings=settings.freeze_embeddings, seed=settings.seed)


def load_teacher_folder(folder: Path, num_labels: int) -> tuple[Any, Any, dict[str, Any]]:
    """A fine-tuned teacher saved by :func:`prepare_teacher`: (model, tokenizer, its ``demo_teacher.json``)."""
    tokenizer = load_tokenizer(str(folder))
    model = load_classifier(str(folder), num_labels, tokenizer)
    return model, tokenizer, json.loads((Path(folder) / TEACHER_META).read_text())


def prepare_teacher(source: str, data: DemoData, settings: Any, *, cache_dir: Path | None = None,
                    out_dir: Path | None = None, progress: bool = True, log: Any = print) -> TeacherResult:
    """The fine-tuned teacher: loaded from the cache when one was trained with the same settings, else fine-tuned
    and cached (with ``settings.use_cache`` False: neither read nor written to the cache, saved in
    ``out_dir/teacher`` instead)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(source, data, settings)
    folder = cache_dir / f"teacher-{key}"
    t0 = time.perf_counter()
    test_ids = None
    if settings.use_cache and (folder / TEACHER_META).is_file() and _cache_intact(folder, log):
        model, tokenizer, meta = load_teacher_folder(folder, len(data.labels))
        log(f"teacher: loaded the fine-tuned teacher from the cache {folder}")
        test_ids = encode(tokenizer, data.test["text"], settings.max_length)
        pred = predict(model, test_ids, tokenizer.pad_token_id, desc="teacher test", progress=progress)
        acc = float((pred == label_ids(data.test["label"], data.labels)).mean())
        return TeacherResult(folder, model, tokenizer, acc, pred, True, time.perf_counter() - t0,
                             meta.get("curve", []), source)
    tokenizer = load_tokenizer(source)
    model = load_classifier(source, len(data.labels), tokenizer)
    labels = [str(x) for x in data.labels]
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {lab: i for i, lab in enumerate(labels)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    torch.manual_seed(settings.seed)
    curve = (fine_tune(model, tokenizer, list(data.train["text"]), label_ids(data.train["label"], data.labels),
                       fine_tuning(settings), progress=progress) if settings.teacher_steps else [])
    seconds = time.perf_counter() - t0
    test_ids = encode(tokenizer, data.test["text"], settings.max_length)
    pred = predict(model, test_ids, tokenizer.pad_token_id, desc="teacher test", progress=progress)
    acc = float((pred == label_ids(data.test["label"], data.labels)).mean())
    meta = {"source": source, "key": key, "settings": {k: v for k, v in settings.to_dict().items()
                                                        if k.startswith("teacher") or k in ("max_length", "seed")},
            "test_accuracy": acc, "seconds": seconds, "curve": curve}
    if settings.use_cache:
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / TEACHER_META).write_text(json.dumps(meta, indent=1) + "\n")
            write_manifest(tmp, CACHE_MANIFEST)
        path = folder
        log(f"teacher: fine-tuned in {seconds:.0f} s, cached in {folder}")
    else:
        path = Path(out_dir or tempfile.mkdtemp(prefix="repgeo-demo-")) / "teacher"
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        (path / TEACHER_META).write_text(json.dumps(meta, indent=1) + "\n")
    return TeacherResult(path, model, tokenizer, acc, pred, False, time.perf_counter() - t0, curve, source)


def _cache_intact(folder: Path, log: Any) -> bool:
    """Whether the cached teacher ``folder`` matches its manifest (sizes and sha256); if not, say why."""
    try:
        verify_folder(folder, CACHE_MANIFEST, deep=True)
    except IntegrityError as exc:
        log(f"teacher: the cached teacher is not intact ({exc}); fine-tuning it again")
        return False
    return True
