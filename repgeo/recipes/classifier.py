"""Reusable recipes for sequence classifiers (``AutoModelForSequenceClassification``): load, tokenise, predict,
initialise the head by a linear probe, fine-tune. The demo's teacher and the quality study build on them.

Conventions: texts are tokenised with truncation to ``max_length``; batches are right-padded; class ids follow
the order of a ``labels`` list, labels compared as strings (:func:`label_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repgeo._files import model_source_problem

HEAD_MODULES = ("classifier", "score", "pre_classifier")  # the new classification head of AutoModelFor...


def load_tokenizer(source: str) -> Any:
    """The tokenizer of ``source``, with the EOS token as pad token when it has none."""
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


def encode(tokenizer: Any, texts: Any, max_length: int) -> list[list[int]]:
    """Token ids of ``texts``, each cut to ``max_length``."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def pad_batch(ids: list[list[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` of token id lists, on ``device``."""
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
        logits = model(**pad_batch([ids[i] for i in rows], pad_id, device)).logits
        pred[rows] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return pred


def label_ids(values: Any, labels: list[Any]) -> np.ndarray:
    """Class ids of label ``values`` in the order of ``labels`` (compared as strings)."""
    """Class ids of label ``values`` in the order of ``labels`` (compared as strings)."""
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
                model(**pad_batch([ids[i] for i in order[start : start + batch_size]], pad_id, device))
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

    head = next(iter(_head(model)), None)
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


@dataclass(frozen=True)
class FineTuning:
    """Settings of :func:`fine_tune`: ``steps`` of AdamW at ``lr`` (the head at ``lr * head_lr_mult``) on batches
    of ``batch`` texts cut to ``max_length`` tokens; ``probe_init`` texts for a linear-probe initialised head (0:
    keep the head); ``train`` "all" (the whole model) or "head" (the classification head only); ``seed``."""

    steps: int
    lr: float
    batch: int
    max_length: int
    head_lr_mult: float = 1.0
    probe_init: int = 0
    train: str = "all"
    freeze_embeddings: bool = False
    seed: int = 0


def _head(model: Any) -> list[torch.nn.Module]:
    return [m for name, m in model.named_children() if name in HEAD_MODULES]


def _param_groups(model: Any, ft: FineTuning) -> tuple[list[torch.nn.Parameter], list[dict[str, Any]]]:
    """The trained parameters (``ft.train``) and their AdamW groups (the head at ``lr * head_lr_mult``)."""
    if ft.train == "head":
        model.requires_grad_(False)
        head = _head(model)
        for m in head:
            m.requires_grad_(True)
        if not head:
            raise ValueError("teacher_train='head': the model has no 'classifier' or 'score' module")
    if ft.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    head_ids = {id(p) for m in _head(model) for p in m.parameters()}
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr": ft.lr},
              {"params": [p for p in params if id(p) in head_ids], "lr": ft.lr * ft.head_lr_mult}]
    return params, [g for g in groups if g["params"]]


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW (one kernel per step, the same update as the default for-each one) runs on
    ``params``: floating-point tensors on the CPU or a CUDA device. On a small encoder's CPU step it cut the
    optimiser's share from about 0.10 s to 0.03 s of 0.9 s (``benchmarks/results/demo_default``)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def fine_tune(model: Any, tokenizer: Any, texts: list[str], y: np.ndarray, ft: FineTuning, *,
              progress: bool = True) -> list[dict[str, float]]:
    """Fine-tune classifier ``model`` in place on ``texts`` with class ids ``y`` (AdamW, linear warm-up then decay,
    shuffled batches of similar lengths, gradient norm clipped at 1); returns the loss curve."""
    import transformers
    from tqdm.auto import tqdm
    from transformers.trainer_pt_utils import LengthGroupedSampler

    device = next(model.parameters()).device
    ids = encode(tokenizer, texts, ft.max_length)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if ft.probe_init:
        n = min(len(ids), ft.probe_init)
        linear_probe_init(model, ids[:n], y_t[:n].numpy(), tokenizer.pad_token_id, seed=ft.seed)
    params, groups = _param_groups(model, ft)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01, fused=_fusable(params))
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, max(1, ft.steps // 10), ft.steps)
    gen = torch.Generator().manual_seed(ft.seed)
    lengths = [len(s) for s in ids]
    order: list[int] = []
    curve: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(1, ft.steps + 1), desc="teacher fine-tune", disable=not progress)
    correct = seen = 0
    for step in bar:
        if len(order) < ft.batch:  # random batches of similar lengths (less padding)
            order += list(LengthGroupedSampler(ft.batch, lengths=lengths, generator=gen))
        rows, order = order[: ft.batch], order[ft.batch :]
        out = model(**pad_batch([ids[i] for i in rows], tokenizer.pad_token_id, device), labels=y_t[rows].to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        correct += int((out.logits.argmax(-1).cpu() == y_t[rows]).sum())
        seen += len(rows)
        curve.append({"step": step, "loss": out.loss.item()})
        if step % 5 == 0 or step == ft.steps:
            bar.set_postfix(loss=f"{np.mean([c['loss'] for c in curve[-5:]]):.3f}", train_acc=f"{correct / seen:.2f}")
            correct = seen = 0
    model.requires_grad_(True)
    model.eval()
    return curve
