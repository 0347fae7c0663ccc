"""The regimes' teachers: the encoder teacher's settings (the demo's recipe), the fine-tuned causal teacher, and
the teacher each regime's recorded runs used (pinned, so a resumed study keeps it)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .regimes import Preset, Regime


def teacher_settings(preset: Preset, r: Regime, cache: Path) -> Any:
    from repgeo.demo.settings import settings_for

    return settings_for("default", n_train=r.n_train, n_test=r.n_dev, max_length=r.max_length,
                        teacher_steps=r.teacher_steps, teacher_lr=preset.teacher_lr, teacher_batch=preset.batch,
                        probe_init=min(1024, r.n_train), keep_every=r.keep_every, narrow_width=r.narrow_width,
                        freeze_embeddings=r.teacher_freeze_embeddings, cache_dir=str(cache), seed=0)


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
    from repgeo.files import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / PIN, (json.dumps({"teacher": str(teacher)}) + "\n").encode())


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
        from repgeo.assets.study import smollm2_path

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
    from repgeo.files import atomic_folder

    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / CAUSAL_TEACHER_META).write_text(json.dumps({**settings, "seconds": seconds}, indent=1) + "\n")
    return out, seconds
