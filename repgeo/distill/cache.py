"""Teacher cache: the teacher's KD logits and pooled features, computed once per dataset and reused.

The teacher is frozen and run in eval mode, so its outputs for a training example never change. The cache runs
it once over the training set and stores, per example, the logit rows the KD term compares and the pooled rows
of every mapped teacher layer; :class:`~repgeo.distill.trainer.DistillationTrainer` then looks batches up by
``example_index`` instead of running the teacher. Next to the cache, ``<name>.json`` records what it depends on
(the sha256 of the teacher's files and of the data, layers, pooling, token selection, max length) and the size
and sha256 of the cache file itself: a cache built from other inputs is rebuilt, a damaged one is refused
(:class:`~repgeo._files.IntegrityError`), never silently reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from repgeo._files import IntegrityError, atomic_path, atomic_write_text, build_manifest, verify_files
from repgeo.probe.pooling import effective_mask

from .tasks import TEACHER_KEYS, teacher_inputs


class TeacherCache:
    """Per-example teacher logit rows and feature rows, looked up by ``example_index``."""

    def __init__(self, logits: list[torch.Tensor] | None, features: dict[int, list[torch.Tensor]] | None,
                 meta: dict[str, Any]) -> None:
        self.logits, self.features, self.meta = logits, features, meta

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: Any,
        dataset: Any,
        collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        *,
        task: Any,
        feature_loss: Any | None,
        feature_tokens: str = "all",
        with_logits: bool = True,
        meta: dict[str, Any] | None = None,
        batch_size: int = 64,
    ) -> TeacherCache:
        """Run the teacher once over ``dataset`` (items must carry ``example_index`` 0..n-1 in order). Batches are
        formed from examples of similar length (less padding; padding does not change the masked outputs)."""
        teacher.eval()
        device = next(teacher.parameters()).device
        items = [dataset[i] for i in range(len(dataset))]
        ids_key = TEACHER_KEYS["input_ids"] if items and TEACHER_KEYS["input_ids"] in items[0] else "input_ids"
        order = sorted(range(len(items)), key=lambda i: len(items[i][ids_key]))
        logits: list[torch.Tensor | None] = [None] * len(items)
        layers = feature_loss.teacher_layers if feature_loss is not None else []
        feats: dict[int, list[torch.Tensor | None]] = {t: [None] * len(items) for t in layers}
        for start in range(0, len(order), batch_size):
            rows_idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate([items[i] for i in rows_idx]).items()}
            teacher_in = teacher_inputs(batch)  # its own ids when it reads the text through its own tokenizer
            out = teacher(**teacher_in, output_hidden_states=feature_loss is not None)
            b = batch["input_ids"].shape[0]
            if with_logits:
                rows = task.kd_logits(out.logits, batch).float().cpu()
                for i, r in zip(rows_idx, rows.split(task.kd_counts(batch)), strict=True):
                    logits[i] = r
            if feature_loss is not None:
                tmask = task.feature_mask(batch, feature_tokens)
                f = feature_loss.teacher_features(out.hidden_states, teacher_in["attention_mask"], tmask)
                if feature_loss.pooling == "tokens":
                    counts = effective_mask(out.hidden_states[0], teacher_in["attention_mask"], tmask).sum(1).tolist()
                else:
                    counts = [1] * b
                for t, rows in f.items():
                    for i, r in zip(rows_idx, rows.cpu().split(counts), strict=True):
                        feats[t][i] = r
        return cls(logits if with_logits else None, feats if feature_loss is not None else None, dict(meta or {}))

    def lookup(
        self, index: torch.Tensor, device: torch.device | None = None
    ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor] | None] | None:
        """Teacher logit rows and feature rows of a batch, in batch order; None if an index is not cached."""
        idx = index.tolist()
        n = len(self.logits) if self.logits is not None else len(next(iter(self.features.values())))
        if any(i < 0 or i >= n for i in idx):
            return None
        logits = torch.cat([self.logits[i] for i in idx]).to(device) if self.logits is not None else None
        feats = (
            {t: torch.cat([rows[i] for i in idx]).to(device) for t, rows in self.features.items()}
            if self.features is not None
            else None
        )
        return logits, feats

    def save(self, path: str | Path) -> None:
        """Write the cache atomically (a temporary file in the same folder, then renamed: an interrupted write
        leaves no partial cache), then its record ``<path>.json`` (inputs and checksum)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save({"meta": self.meta, "logits": self.logits, "features": self.features}, tmp)
        record = build_manifest(path.parent, [path.name], meta=self.meta)
        atomic_write_text(_record_path(path), json.dumps(record, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, meta: dict[str, Any] | None = None) -> TeacherCache | None:
        """The cache at ``path``; None when it is missing, has no record or was built from other inputs than
        ``meta`` (rebuild it). A cache whose file differs in size or sha256 from its record, or cannot be read,
        raises :class:`~repgeo._files.IntegrityError` naming the file."""
        p = Path(path)
        rec_path = _record_path(p)
        if not p.is_file() or not rec_path.is_file():
            return None
        try:
            record = json.loads(rec_path.read_text())
            stored_meta, files = record["meta"], record["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{rec_path} is damaged ({type(exc).__name__}: {exc})") from None
        if meta is not None and json.loads(json.dumps(meta)) != stored_meta:
            return None
        verify_files(p.parent, {"files": files}, deep=True)
        try:
            data = torch.load(p, weights_only=False)
        except Exception as exc:
            raise IntegrityError(f"{p} cannot be read ({type(exc).__name__}: {exc})") from None
        return cls(data["logits"], data["features"], data["meta"])


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")

