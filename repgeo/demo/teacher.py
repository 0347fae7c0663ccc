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
import math
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
    model_source_problem,
    verify_folder,
    write_manifest,
)

from .data import DemoData

TEACHER_META = "demo_teacher.json"
CACHE_MANIFEST = "repgeo_files.json"
HEAD_MODULES = ("classifier", "score", "pre_classifier")  # the new classification head of AutoModelFor...
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
        "train": settings.teacher_train,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_tokenizer(source: str) -> Any:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(source)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"the tokenizer of {source} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def load_classifier(source: str, num_labels: int, tokenizer: Any) -> Any:
    """``AutoModelForSequenceClassification`` with ``num_labels`` outputs (a head of another size is replaced)."""
    import transformers

    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot load teacher: {model_source_problem(source)}. Original error: {exc}") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _batch(ids: list[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    n = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


@torch.no_grad()
def predict(model: Any, ids: list[list[int]], pad_id: int, *, batch_size: int = 64, desc: str | None = None,
            progress: bool = True) -> np.ndarray:
    """Predicted class ids of already tokenised texts (batches sorted by length: less padding)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort([len(s) for s in ids], kind="stable")
    pred = np.empty(len(ids), dtype=np.int64)
    starts = range(0, len(ids), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or desc is None, leave=False):
        rows = order[start : start + batch_size]
        logits = model(**_batch([ids[i] for i in rows], pad_id, device)).logits
        pred[rows] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return pred


def label_ids(values: Any, labels: list[Any]) -> np.ndarray:
    index = {str(x): i for i, x in enumerate(labels)}
    return np.array([index[str(v)] for v in values], dtype=np.int64)


def _head_inputs(model: Any, head: torch.nn.Module, ids: list[list[int]], pad_id: int, *, batch_size: int,
                 dropout: bool, seed: int) -> np.ndarray | None:
    """The rows ``head`` receives for ``ids`` (in order), with dropout active or not; None if not one per text."""
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].detach().float().cpu()))
    was_training = model.training
    model.train(dropout)
    order = np.argsort([len(s) for s in ids], kind="stable")  # similar lengths batched: less padding
    try:
        with torch.random.fork_rng(devices=[]):  # dropout masks drawn from ``seed``, the global RNG left alone
            torch.manual_seed(seed)
            for start in range(0, len(ids), batch_size):
                model(**_batch([ids[i] for i in order[start : start + batch_size]], pad_id, device))
    finally:
        handle.remove()
        model.train(was_training)
    if not rows or rows[0].dim() != 2:
        return None
    X = np.empty((len(ids), rows[0].shape[1]), dtype=np.float32)
    X[order] = torch.cat(rows).numpy()
    return X


@torch.no_grad()
def linear_probe_init(model: Any, ids: list[list[int]], y: np.ndarray, pad_id: int, *, batch_size: int = 64,
                      C: float = 0.1, seed: int = 0) -> float | None:
    """Initialise a new linear classification head with a logistic regression fitted on its own inputs (linear
    probing before fine-tuning, as in LP-FT): a fresh random head otherwise spends the first steps of a short
    fine-tuning undoing itself.

    The regression is fitted on the eval-mode inputs, standardised by their spread *with dropout active*, the
    spread fine-tuning will see. Features that barely vary between texts but do vary under dropout (a saturated
    tanh pooler, e.g. a derived student's, whose pooler was trained on another layer) then cannot get huge
    weights: standardised by their eval-mode spread, they did, and blew the training logits up to ~30 (students
    then collapsed to the majority class). Returns the probe's training accuracy, or None when the head is not a
    plain ``nn.Linear`` on one vector per text (then it is left as it is)."""
    from sklearn.linear_model import LogisticRegression

    head = next((m for name, m in model.named_children() if name in HEAD_MODULES), None)
    if not isinstance(head, torch.nn.Linear):
        return None
    k = head.out_features
    if len(set(y.tolist())) != k:
        return None
    X = _head_inputs(model, head, ids, pad_id, batch_size=batch_size, dropout=False, seed=seed)
    noisy = _head_inputs(model, head, ids, pad_id, batch_size=batch_size, dropout=True, seed=seed)
    if X is None or noisy is None:
        return None
    mu, sd = X.mean(0), np.maximum(X.std(0), noisy.std(0)) + 1e-6  # fit standardised; fold the scaling into the head
    clf = LogisticRegression(C=C, max_iter=2000).fit((X - mu) / sd, y)
    coef = clf.coef_ / sd
    bias = clf.intercept_ - coef @ mu
    if k == 2 and coef.shape[0] == 1:  # binary: logit difference w -> logits (-w/2, w/2)
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
    if head.bias is not None:
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return float(clf.score((X - mu) / sd, y))


def fine_tune(model: Any, tokenizer: Any, data: DemoData, settings: Any, *, progress: bool = True,
              ) -> list[dict[str, float]]:
    """Fine-tune ``model`` in place (AdamW, linear warm-up then decay, shuffled batches of similar lengths); returns
    the loss curve."""
    import transformers
    from tqdm.auto import tqdm
    from transformers.trainer_pt_utils import LengthGroupedSampler

    device = next(model.parameters()).device
    ids = encode(tokenizer, data.train["text"], settings.max_length)
    y = torch.tensor(label_ids(data.train["label"], data.labels))
    if settings.probe_init:
        n = min(len(ids), settings.probe_init)
        linear_probe_init(model, ids[:n], y[:n].numpy(), tokenizer.pad_token_id, seed=settings.seed)
    if settings.teacher_train == "head":
        model.requires_grad_(False)
        head = [m for name, m in model.named_children() if name in HEAD_MODULES]
        for m in head:
            m.requires_grad_(True)
        if not head:
            raise ValueError("teacher_train='head': the model has no 'classifier' or 'score' module")
    params = [p for p in model.parameters() if p.requires_grad]
    head_ids = {id(p) for name, m in model.named_children() if name in HEAD_MODULES for p in m.parameters()}
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": settings.teacher_lr},
              {"params": [p for p in params if id(p) in head_ids], "lr": settings.teacher_lr * settings.head_lr_mult}]
    steps = settings.teacher_steps
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    gen = torch.Generator().manual_seed(settings.seed)
    lengths = [len(s) for s in ids]
    order: list[int] = []
    curve: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(1, steps + 1), desc="teacher fine-tune", disable=not progress)
    correct = seen = 0
    for step in bar:
        if len(order) < settings.teacher_batch:  # random batches of similar lengths (less padding)
            order += list(LengthGroupedSampler(settings.teacher_batch, lengths=lengths, generator=gen))
        rows, order = order[: settings.teacher_batch], order[settings.teacher_batch :]
        batch = _batch([ids[i] for i in rows], tokenizer.pad_token_id, device)
        out = model(**batch, labels=y[rows].to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        correct += int((out.logits.argmax(-1).cpu() == y[rows]).sum())
        seen += len(rows)
        curve.append({"step": step, "loss": out.loss.item()})
        if step % 5 == 0 or step == steps:
            bar.set_postfix(loss=f"{np.mean([c['loss'] for c in curve[-5:]]):.3f}", train_acc=f"{correct / seen:.2f}")
            correct = seen = 0
    model.requires_grad_(True)
    model.eval()
    return curve


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
    curve = fine_tune(model, tokenizer, data, settings, progress=progress) if settings.teacher_steps else []
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


def accuracy_se(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` examples."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1))


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of model A minus that of model B on the same ``n`` test examples, with its paired standard error."""

    delta: float
    se: float
    n: int

    @property
    def z(self) -> float:
        """``delta / se`` (inf when every example changed the same way, nan when none changed)."""
        if self.se > 0:
            return self.delta / self.se
        return math.nan if self.delta == 0 else math.copysign(math.inf, self.delta)

    def __str__(self) -> str:
        return f"{100 * self.delta:+.1f} points (paired SE {100 * self.se:.1f})"


def paired_difference(pred_a: Any, pred_b: Any, y: Any) -> PairedDifference:
    """Paired comparison of two classifiers on the same test examples: with ``d_i = 1[a_i = y_i] - 1[b_i = y_i]``,

        delta = mean(d),   SE = sd(d) / sqrt(n)   (sd with n - 1 degrees of freedom),

    the standard error of the difference of accuracies when both were measured on the same ``n`` examples (much
    smaller than the unpaired ``sqrt(se_a² + se_b²)`` when the two models mostly agree)."""
    a, b, t = (np.asarray(v).reshape(-1) for v in (pred_a, pred_b, y))
    if not len(a) == len(b) == len(t):
        raise ValueError(f"pred_a, pred_b and y must have the same length; got {len(a)}, {len(b)} and {len(t)}")
    if len(t) < 2:
        raise ValueError(f"a paired standard error needs at least 2 examples; got {len(t)}")
    d = (a == t).astype(float) - (b == t).astype(float)
    return PairedDifference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d))
