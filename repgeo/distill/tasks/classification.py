"""Sequence classification (BERT family): text + label -> class; accuracy, F1, MCC."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import transformers

from repgeo._files import DataError

from .base import TEACHER_KEYS, ListDataset, Task, read_source, record_where


class ClassificationTask(Task):
    """Records ``{text_field: str, label_field: label}``; labels mapped to ids in sorted order (or
    ``data.labels`` order when given).

    With a ``teacher_tokenizer`` (a student with its own tokenizer) every text is tokenised twice: ``input_ids``
    for the student, ``teacher_input_ids`` for the teacher (each cut to ``data.max_length`` of its own tokens);
    the KD term compares one logit row per example and the pooled features one row per example, so no token
    alignment is needed (token pooling is refused by the runner)."""

    name = "classification"
    model_class_name = "AutoModelForSequenceClassification"
    one_tokenizer = ""

    def __init__(self, tokenizer: Any, data_cfg: Any, labels: list[Any] | None = None,
                 teacher_tokenizer: Any | None = None) -> None:
        super().__init__(tokenizer, data_cfg, teacher_tokenizer)
        self.labels: list[Any] | None = list(labels) if labels is not None else data_cfg.labels
        self._collator: Any = None
        self._teacher_collator: Any = None
        self._labels_source = ("the labels given" if labels is not None
                               else "data.labels" if data_cfg.labels is not None else None)

    def dataset(self, source: Any, max_samples: int | None = None, *, name: str | None = None) -> ListDataset:
        """Tokenised examples of ``source`` (a data file's path or a ``datasets.Dataset``). The first source read
        (the training set) fixes the label set unless ``data.labels`` lists it; a later one (eval) with a label
        outside it raises :class:`~repgeo._files.DataError` naming the file (or split), record, line and label."""
        cfg = self.data_cfg
        records, name, what = read_source(source, [cfg.text_field, cfg.label_field], max_samples, name)
        if self.labels is None:
            self.labels = sorted({r[cfg.label_field] for r in records}, key=str)
            self._labels_source = f"the training data {name!r}"
        index = {str(lab): i for i, lab in enumerate(self.labels)}
        items, cut = [], 0
        for i, r in enumerate(records):
            key = str(r[cfg.label_field])
            if key not in index:
                where = record_where(name, i) if what == "data file" else f"record {i}"
                raise DataError(
                    f"{what} {name!r}, {where}: label {r[cfg.label_field]!r} does not occur in "
                    f"{self._labels_source} (labels: {self.labels}); a model cannot learn a class it is never "
                    "trained on. Fix the file, or list every class in data.labels"
                )
            ids, was_cut = self._encode(self.tokenizer, str(r[cfg.text_field]))
            item = {"input_ids": ids, "labels": index[key], "example_index": i}
            if self.teacher_tokenizer is not None:
                teacher_ids, teacher_cut = self._encode(self.teacher_tokenizer, str(r[cfg.text_field]))
                item[TEACHER_KEYS["input_ids"]] = teacher_ids
                was_cut = was_cut or teacher_cut
            cut += was_cut
            items.append(item)
        return ListDataset(items, cut)

    def _encode(self, tokenizer: Any, text: str) -> tuple[list[int], bool]:
        """Token ids of ``text`` cut to ``data.max_length``, and whether it was cut."""
        ids = tokenizer(text)["input_ids"]
        if len(ids) <= self.data_cfg.max_length:
            return ids, False
        return tokenizer(text, truncation=True, max_length=self.data_cfg.max_length)["input_ids"], True

    @property
    def num_labels(self) -> int:
        if self.labels is None:
            raise RuntimeError("labels are known once a training set is read")
        return len(self.labels)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``transformers.DataCollatorWithPadding`` (pads ``input_ids`` with the pad token on the tokenizer's
        padding side, adds the attention mask) over ``input_ids``, ``labels`` and ``example_index``; the teacher's
        own ids, when there are any, padded the same way by its tokenizer into :data:`TEACHER_KEYS`."""
        if self._collator is None:
            self._collator = transformers.DataCollatorWithPadding(self.tokenizer, return_tensors="pt")
        batch = dict(self._collator([{k: f[k] for k in ("input_ids", "labels", "example_index")} for f in features]))
        if self.teacher_tokenizer is not None:
            if self._teacher_collator is None:
                self._teacher_collator = transformers.DataCollatorWithPadding(self.teacher_tokenizer,
                                                                              return_tensors="pt")
            teacher = self._teacher_collator([{"input_ids": f[TEACHER_KEYS["input_ids"]]} for f in features])
            batch.update({key: teacher[arg] for arg, key in TEACHER_KEYS.items()})
        return batch

    def kd_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return logits

    def student_kwargs(self, teacher: Any) -> dict[str, Any]:
        return {"num_labels": teacher.config.num_labels}

    def check_teacher(self, teacher: Any, teacher_path: str) -> None:
        """The teacher's head must have one output per label of the data."""
        if teacher.config.num_labels != self.num_labels:
            source = (f"data file {self.data_cfg.train!r}" if self.data_cfg.train is not None
                      else str(self._labels_source))
            raise DataError(f"{source} has {self.num_labels} labels ({self.labels}) but the "
                            f"teacher {teacher_path!r} has {teacher.config.num_labels} (config.num_labels); use the "
                            "data the teacher was trained on, or list its classes in data.labels")

    def prepare_student(self, student: Any) -> None:
        """The label names in ``id2label`` / ``label2id`` (saved with the student)."""
        labels = [str(x) for x in self.labels or []]
        student.config.id2label = dict(enumerate(labels))
        student.config.label2id = {lab: i for i, lab in enumerate(labels)}

    @staticmethod
    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        """Accuracy, F1 (binary for 2 classes, else macro) and Matthews correlation."""
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        pred = np.asarray(logits).argmax(-1)
        labels = np.asarray(labels)
        average = "binary" if logits.shape[-1] == 2 else "macro"
        return {
            "accuracy": float(accuracy_score(labels, pred)),
            "f1": float(f1_score(labels, pred, average=average, zero_division=0)),
            "mcc": float(matthews_corrcoef(labels, pred)),
        }
