"""Stimulus preparation for an audit: data (texts, files, tensors, batches) -> the teacher's and the student's
batches of the same stimuli, with what was dropped or cut, and the rows each stimulus contributes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from repgeo._validation import SENTENCE_POOLINGS
from repgeo.probe import TOKEN_MASK_KEY, TokenizedTexts, tokenize_texts

from .data import read_texts

__all__ = ["Stimuli", "batch_rows", "default_layers", "prepare_stimuli"]


@dataclass
class Stimuli:
    """The same stimuli prepared for each model. ``info``: ``dropped_empty`` (indices of empty texts),
    ``truncated`` (indices of texts cut to ``max_length``), ``n_texts``."""

    teacher: list[Any]
    student: list[Any]
    info: dict[str, Any] = field(default_factory=lambda: {"dropped_empty": [], "truncated": []})

    @property
    def n(self) -> int:
        """Number of stimuli (checked equal for both models)."""
        n_t = sum(int(batch_rows(b, "mean").shape[0]) for b in self.teacher)
        n_s = sum(int(batch_rows(b, "mean").shape[0]) for b in self.student)
        if n_t != n_s:
            raise ValueError(
                f"different stimulus counts: the teacher's data holds {n_t} stimuli, the student's {n_s}; "
                "both must be the same stimuli in the same order"
            )
        return n_t

    def groups(self, pooling: str) -> np.ndarray | None:
        """Stimulus id of every row with token pooling (None: one row per stimulus)."""
        if pooling != "tokens":
            return None
        counts = np.concatenate([batch_rows(b, pooling) for b in self.teacher])
        return np.repeat(np.arange(counts.size), counts)


def _is_texts(data: Any) -> bool:
    return isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) > 0 and all(
        isinstance(t, str) for t in data
    )


def _tensor_batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("the data tensor holds no stimuli")
    return [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)]


def _batches_of(data: Any, batch_size: int) -> list[Any]:
    """Non-text data as a list of batches."""
    if isinstance(data, TokenizedTexts):
        return list(data.batches)
    if isinstance(data, torch.Tensor):
        return _tensor_batches(data, batch_size)
    if isinstance(data, np.ndarray):
        return _tensor_batches(torch.from_numpy(data), batch_size)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        out = list(data)
        if not out:
            raise ValueError("data holds no batches")
        return out
    if isinstance(data, Mapping):
        return [data]
    raise TypeError(
        f"data must be texts, a path to a .txt/.csv/.jsonl file, a tensor, or a list of batches; got {type(data)}"
    )


def batch_rows(batch: Any, pooling: str) -> np.ndarray:
    """Rows per stimulus of one batch (1 each, or the number of pooled tokens with ``pooling='tokens'``)."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        ids = batch.get("input_ids")
        ref = mask if mask is not None else ids
        if ref is None:
            ref = next(v for v in batch.values() if isinstance(v, torch.Tensor))
        b = ref.shape[0]
        if pooling != "tokens":
            return np.ones(b, dtype=np.int64)
        eff = (mask != 0) if mask is not None else torch.ones(ref.shape[:2], dtype=torch.bool)
        if batch.get(TOKEN_MASK_KEY) is not None:
            eff = eff & batch[TOKEN_MASK_KEY].bool()
        return eff.sum(dim=1).cpu().numpy().astype(np.int64)
    first = batch if isinstance(batch, torch.Tensor) else batch[0]
    if pooling == "tokens":
        return np.full(first.shape[0], first.shape[1] if first.ndim > 1 else 1, dtype=np.int64)
    return np.ones(first.shape[0], dtype=np.int64)


def default_layers(model: nn.Module, who: str) -> list[int]:
    """Every hidden state (``0..num_hidden_layers``) of a transformers model; a clear error for other models."""
    from repgeo.probe import unwrap_model
    from repgeo.probe.select import num_hidden_states

    n = num_hidden_states(unwrap_model(model))
    if n is None:
        raise ValueError(
            f"{who}_layers is required for a model without config.num_hidden_layers "
            f"({type(model).__name__}); give module names or globs (see `repgeo layers` / list_layers)"
        )
    return list(range(n))


def _same_tokenization(a: Sequence[Mapping[str, torch.Tensor]], b: Sequence[Mapping[str, torch.Tensor]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for key in ("input_ids", "attention_mask"):
            if key in x or key in y:
                if key not in x or key not in y or x[key].shape != y[key].shape or not torch.equal(x[key], y[key]):
                    return False
    return True


def _non_empty(texts: list[str], info: dict[str, Any]) -> list[str]:
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        warnings.warn(f"dropped {len(empty)} empty text(s) at indices {empty[:10]}", stacklevel=3)
        texts = [t for t in texts if t.strip()]
        info["dropped_empty"] = empty
    if not texts:
        raise ValueError("data holds no non-empty texts")
    return texts


def _tokenized(texts: list[str], t_tok: Any, s_tok: Any, *, pooling: str, batch_size: int,
               max_length: int) -> Stimuli:
    stimuli = Stimuli([], [])
    texts = _non_empty(texts, stimuli.info)
    if t_tok is None:
        raise ValueError("texts need a tokenizer: pass tokenizer=... (or give the teacher by folder / hub name)")
    kw = {"batch_size": batch_size, "max_length": max_length, "padding_side": "right", "warn": False}
    t_tt = tokenize_texts(t_tok, texts, **kw)
    stimuli.teacher = list(t_tt.batches)
    truncated = set(t_tt.truncated)
    stimuli.student = stimuli.teacher
    if s_tok is not t_tok:
        s_tt = tokenize_texts(s_tok, texts, **kw)
        truncated |= set(s_tt.truncated)
        if not _same_tokenization(stimuli.teacher, s_tt.batches):
            stimuli.student = list(s_tt.batches)
    stimuli.info.update(truncated=sorted(truncated), n_texts=len(texts))
    if truncated:
        warnings.warn(f"{len(truncated)} of {len(texts)} texts were cut to max_length={max_length} tokens",
                      stacklevel=3)
    if stimuli.student is not stimuli.teacher and pooling not in SENTENCE_POOLINGS:
        raise ValueError(
            f"teacher and student tokenise the texts differently, so pooling={pooling!r} cannot pair their "
            f"rows: token-level pairing needs identical tokenization. Use a per-text pooling "
            f"({', '.join(SENTENCE_POOLINGS)})"
        )
    return stimuli


def prepare_stimuli(data: Any, *, tokenizer: Any, student_tokenizer: Any, student_data: Any = None,
                    text_column: str | None = None, pooling: str = "mean", batch_size: int = 32,
                    max_length: int = 128) -> Stimuli:
    """Batches of ``data`` for each model (see :func:`repgeo.audit.audit` for the accepted forms).

    Texts (or a file of them) are tokenised with right padding and cut to ``max_length`` tokens, once per
    distinct tokenizer; empty texts are dropped and reported. ``student_tokenizer`` defaults to ``tokenizer``.
    Fewer than 3 stimuli, differing counts, or token pooling across different tokenisations raise ``ValueError``.
    """
    if isinstance(data, (str, os.PathLike)):
        data = read_texts(data, text_column)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) == 0:
        raise ValueError("data holds no stimuli (empty list)")
    s_tok = student_tokenizer or tokenizer
    if _is_texts(data):
        stimuli = _tokenized(list(data), tokenizer, s_tok, pooling=pooling, batch_size=batch_size,
                             max_length=max_length)
    else:
        if student_data is None and s_tok is not tokenizer and student_tokenizer is not None:
            raise ValueError("a separate student tokenizer needs texts as data (or pass student_data)")
        teacher = _batches_of(data, batch_size)
        stimuli = Stimuli(teacher, teacher if student_data is None else _batches_of(student_data, batch_size))
    if stimuli.n < 3:
        raise ValueError(f"an audit needs at least 3 stimuli; got {stimuli.n}")
    return stimuli
