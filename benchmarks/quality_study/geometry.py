"""The final geometry of a run: bias-aware estimators between the mapped teacher and student layers, on enough rows.

Plug-in metrics on a few rows against wide features are biased (at n = 60 rows and 576 features an unrelated pair
reads as alike; ``benchmarks/results/estimator_bias.md``). So the probe uses **token rows grouped by text**: the
hidden state of every unpadded token of the probe texts, ``groups`` = the text each row came from, so that the
cross-fitting folds keep a text's tokens together. Texts are taken in a fixed order -- the evaluation splits
(dev, test, the held-out task), then training texts only if those hold too few tokens -- until there are at least
``max(4 × width, 1000)`` rows, ``width`` the widest mapped layer of teacher and student. The same texts serve every
run of a regime; the teacher's rows are computed once. When the student reads the texts with **another
tokenizer** (MPNet teacher, MiniLM student), token rows do not correspond: the probe then takes **one mean-pooled
row per text** (the features the pooled losses match), ``groups`` = one text per row, and needs
``max(4 × width, 1000)`` texts.

Estimators (:mod:`repgeo.metrics.estimators`, the audit's): corrected Procrustes distance
(``procrustes_corrected``), corrected FG distance (``fg_corrected``), debiased CKA (``cka_debiased``) and the
held-out projection-MSE (``proj_mse_heldout``: 0 = the student predicts the teacher on unseen texts, ~1 = not at
all). The cross-fitted two (SVDs per fold: ~20-30 s a pair at 2,300 rows x 576 features on a busy 2-core CPU)
are measured at the last mapped pair, the one the report shows; the U-statistic two (under a second) at every
pair. Each run records the values as ``"<estimator>/<pair>"`` and, beside them, the probe: rows, texts, splits and
the widths of every pair.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

MIN_ROWS = 1000
ROWS_PER_WIDTH = 4


#: estimator name -> (plug-in metric it corrects, measured at every pair (True) or at the last pair only)
ESTIMATORS = {"procrustes_corrected": ("procrustes", False), "fg_corrected": ("fg", True),
              "cka_debiased": ("cka", True), "proj_mse_heldout": ("proj_mse", False)}


def _estimators(every_pair_only: bool) -> dict[str, Callable[..., float]]:
    from repgeo.metrics.estimators import corrected

    return {name: corrected(metric) for name, (metric, cheap) in ESTIMATORS.items() if cheap or not every_pair_only}


def required_rows(width: int) -> int:
    """Rows the probe needs against features of ``width``: ``max(4 × width, 1000)``."""
    return max(ROWS_PER_WIDTH * width, MIN_ROWS)


@dataclass
class GeometryProbe:
    """Probe texts (the teacher's token ids, in order; the student's when it has its own tokenizer) and the splits
    they came from; see the module docstring."""

    ids: list[list[int]]
    pad_id: int
    splits: list[str]
    width: int
    student_ids: list[list[int]] | None = None
    student_pad_id: int | None = None
    cache: Path | None = None  # a folder keeping the teacher's rows between processes (a resumed study)
    _teacher: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def unit(self) -> str:
        """``"token"`` (one row per token, shared tokenizer) or ``"text"`` (one mean-pooled row per text)."""
        return "token" if self.student_ids is None else "text"

    @classmethod
    def take(cls, ids_by_split: dict[str, list[list[int]]], order: list[str], pad_id: int, width: int, *,
             student: tuple[dict[str, list[list[int]]], int] | None = None) -> GeometryProbe:
        """Texts of the splits in ``order`` until their rows (tokens, or texts with a ``student`` of its own
        tokenizer: its ids by split and pad id) reach :func:`required_rows` of ``width`` (every text of those
        splits when they hold fewer)."""
        need, ids, s_ids, splits = required_rows(width), [], [], []
        for split in order:
            for i, seq in enumerate(ids_by_split.get(split, [])):
                if (len(ids) if student else sum(map(len, ids))) >= need:
                    break
                ids.append(list(seq))
                if student:
                    s_ids.append(list(student[0][split][i]))
                if split not in splits:
                    splits.append(split)
        if student:
            return cls(ids, pad_id, splits, width, s_ids, student[1])
        return cls(ids, pad_id, splits, width)

    @property
    def groups(self) -> np.ndarray:
        """The text index of every row."""
        if self.unit == "text":
            return np.arange(len(self.ids))
        return np.repeat(np.arange(len(self.ids)), [len(s) for s in self.ids])

    @torch.no_grad()
    def rows(self, model: Any, layers: list[int], batch_size: int = 32, *, student: bool = False
             ) -> dict[int, np.ndarray]:
        """Hidden states at ``layers`` (``hidden_states`` indices), float64: every probe token's, or with the
        ``"text"`` unit every text's mean over its tokens; ``student`` reads the student's ids."""
        from repgeo.recipes.classifier import pad_batch

        ids, pad_id = ((self.student_ids, self.student_pad_id) if student and self.student_ids is not None
                       else (self.ids, self.pad_id))
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: dict[int, list[np.ndarray]] = {i: [] for i in layers}
        for start in range(0, len(ids), batch_size):
            batch = pad_batch(ids[start : start + batch_size], pad_id, device)
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].bool()
            for i in layers:
                h = hidden[i].double()
                if self.unit == "text":
                    m = mask.unsqueeze(-1).double()
                    out[i].append(((h * m).sum(1) / m.sum(1)).cpu().numpy())
                else:
                    out[i].append(h[mask].cpu().numpy())
        model.train(was_training)
        return {i: np.concatenate(r) for i, r in out.items()}

    def _teacher_rows(self, teacher: Any, layers: list[int]) -> None:
        """The teacher's rows at ``layers``: in memory, else from ``cache`` (a file per layer, named by the
        probe's texts and the teacher's name), else computed (and saved there)."""
        import hashlib

        key = hashlib.sha256(f"{self.unit}|{getattr(teacher, 'name_or_path', '')}".encode())
        for seq in self.ids:
            key.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
        files = {i: self.cache / f"geometry-teacher-{key.hexdigest()[:16]}-{i}.npy" for i in layers} if self.cache \
            else {}
        for i, path in files.items():
            if i not in self._teacher and path.is_file():
                self._teacher[i] = np.load(path)
        missing = [i for i in layers if i not in self._teacher]
        if missing:
            self._teacher.update(self.rows(teacher, missing))
        for i, path in files.items():
            if not path.is_file():
                from repgeo.files import atomic_write_bytes

                buf = io.BytesIO()
                np.save(buf, self._teacher[i])
                atomic_write_bytes(path, buf.getvalue())

    def measure(self, teacher: Any, student: Any, layer_map: dict[int, int]) -> tuple[dict[str, float],
                                                                                        dict[str, Any]]:
        """``{"<estimator>/<pair>": value}`` (see the module docstring for which pairs), and the probe's
        description (rows, texts, splits, widths per pair, rows needed)."""
        from repgeo.distill.feature_loss import pair_name

        self._teacher_rows(teacher, sorted(set(layer_map.values())))
        student_rows = self.rows(student, sorted(layer_map), student=True)
        groups = self.groups
        values, widths = {}, {}
        for s, t in layer_map.items():
            X, Y, pair = self._teacher[t], student_rows[s], pair_name(s, t)
            widths[pair] = [int(X.shape[1]), int(Y.shape[1])]
            for name, fn in _estimators(every_pair_only=s != max(layer_map)).items():
                values[f"{name}/{pair}"] = float(fn(X, Y, groups=groups, seed=0))
        info = {"rows": len(groups), "unit": self.unit, "texts": len(self.ids), "splits": self.splits, "widths": widths,
                "rows_needed": required_rows(self.width)}
        return values, info
