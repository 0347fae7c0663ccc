"""Shared pieces of the tasks: reading records, a list dataset, padding, the teacher's inputs of a batch.

Teacher and student normally read the same input ids (one tokenizer). A task whose teacher-student terms compare
one row per example (classification: logits, ``cls`` / ``mean`` / ``last`` pooled features) may instead give the
teacher its own tokenisation of each text, for a student with another tokenizer: the examples and batches then
carry it under :data:`TEACHER_KEYS` (``teacher_input_ids``, ``teacher_attention_mask``) beside the student's
``input_ids`` / ``attention_mask``, and whatever runs the teacher (trainer, teacher cache, geometry probe) takes
:func:`teacher_inputs` of the batch and gives the student :func:`student_inputs`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from repgeo._files import DataError, read_records, read_text_utf8, require_columns


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a CSV / TSV / JSON-lines / JSON file, read by :func:`repgeo._files.read_records` (UTF-8; in
    CSV files only empty cells are missing values, ``NA`` or ``null`` stay text). Problems raise
    :class:`~repgeo._files.DataError` naming the file (and the line); a missing file ``FileNotFoundError``."""
    return read_records(path)


def record_where(path: str | Path, i: int) -> str:
    """``"record i (line n)"``: where record ``i`` (0-based, as returned by :func:`load_records`) sits in its
    file. Computed on the error path only (re-reads the file)."""
    p = Path(path)
    line = None
    try:
        text = read_text_utf8(p)
        if p.suffix in (".csv", ".tsv"):
            import csv

            reader = csv.reader(io.StringIO(text), delimiter="\t" if p.suffix == ".tsv" else ",")
            next(reader, None)  # header
            for k, _ in enumerate(reader):
                if k == i:
                    line = reader.line_num
                    break
        elif not text.lstrip().startswith("["):
            nonblank = [n for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
            line = nonblank[i] if i < len(nonblank) else None
    except (OSError, ValueError):
        pass
    return f"record {i} (line {line})" if line is not None else f"record {i}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


FIELDS_HINT = "set data.text_field / data.label_field (or prompt_field / response_field)"


def require_fields(records: list[dict[str, Any]], fields: Sequence[str], path: str, what: str = "data file"
                   ) -> None:
    """Raise :class:`~repgeo._files.DataError` naming the file (or ``what`` and ``path``: ``dataset split
    'train'``), the missing column, or the first record (and its line in a file) whose value is absent or empty."""
    if not records:
        raise DataError(f"{what} {path!r} has no records")
    require_columns(records[:1], fields, path, FIELDS_HINT, what)
    def where(i: int) -> str:  # on the error path only: it re-reads the file
        return record_where(path, i) if what == "data file" else f"record {i}"

    for i, r in enumerate(records):
        for f in fields:
            if f not in r:
                raise DataError(f"{what} {path!r}, {where(i)}: no field {f!r} (fields: {sorted(r)})")
            if _missing(r[f]):
                raise DataError(f"{what} {path!r}, {where(i)}: field {f!r} is empty")


def read_source(source: Any, fields: Sequence[str], max_samples: int | None, name: str | None = None
                ) -> tuple[list[dict[str, Any]], str, str]:
    """The first ``max_samples`` records of ``source`` -- a data file's path (:func:`load_records`) or a
    ``datasets.Dataset`` (:func:`~repgeo.distill.hfdata.dataset_records`) -- checked by :func:`require_fields`,
    with the source's name (``name``, or the path; ``"<in memory>"`` for an unnamed dataset) and kind (``"data
    file"`` or ``"dataset"``) for error messages."""
    from repgeo.distill.hfdata import dataset_records, is_dataset_dict, is_hf_dataset

    if is_dataset_dict(source):
        raise TypeError(f"give one split of the DatasetDict (splits: {sorted(source)}), e.g. dataset['train']")
    if is_hf_dataset(source):
        if not hasattr(source, "__len__"):
            raise TypeError(f"{type(source).__name__} (a streamed dataset) is not supported: load it without "
                            "streaming=True, or take rows with .take(n) and Dataset.from_list")
        name, what = name or "<in memory>", "dataset"
        records = dataset_records(source, fields, max_samples, name, FIELDS_HINT)
    else:
        name, what = str(source), "data file"
        records = load_records(source)[:max_samples]
    require_fields(records, fields, name, what)
    return records, name, what


class ListDataset(torch.utils.data.Dataset):
    """A list of already tokenised examples; ``n_truncated`` counts the texts cut to ``data.max_length``."""

    def __init__(self, items: list[dict[str, Any]], n_truncated: int = 0) -> None:
        self.items = items
        self.n_truncated = n_truncated

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


#: Batch keys of the teacher's own tokenisation (only when it differs from the student's), by the model argument.
TEACHER_KEYS: dict[str, str] = {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}


def teacher_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The teacher's ``input_ids`` and ``attention_mask`` of ``batch``: its own tokenisation when the batch
    carries one (:data:`TEACHER_KEYS`), else the shared one."""
    if TEACHER_KEYS["input_ids"] in batch:
        return {arg: batch[key] for arg, key in TEACHER_KEYS.items()}
    return {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}


def student_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` without the teacher's own tokenisation (the same dict when it has none)."""
    if TEACHER_KEYS["input_ids"] not in batch:
        return batch
    return {k: v for k, v in batch.items() if k not in TEACHER_KEYS.values()}


def pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Pad integer sequences into a (batch, max_len) long tensor."""
    n = max(len(s) for s in seqs)
    rows = [
        ([*s, *[value] * (n - len(s))] if side == "right" else [*[value] * (n - len(s)), *s]) for s in seqs
    ]
    return torch.tensor(rows, dtype=torch.long)


class Task:
    """Interface of a task (see the package docstring): what the runner and the trainer ask of it instead of
    comparing task names.

    ``model_class_name``: the ``transformers`` auto class its teacher and student load with; ``labels``: the class
    labels (None when the task has none); ``compute_metrics``: the Trainer's metric function over stored
    predictions (None: nothing is scored from logits); ``scored_by_generation``: evaluation keeps no logits, the
    task scores generated text instead (:meth:`eval_scores`); ``one_tokenizer``: why teacher and student must
    read the same input ids (empty: the task can give the teacher its own tokenisation, ``teacher_tokenizer``).
    """

    name: ClassVar[str] = ""
    one_tokenizer: ClassVar[str] = "the task feeds teacher and student the same input ids"
    model_class_name: ClassVar[str] = ""
    scored_by_generation: ClassVar[bool] = False
    compute_metrics: Any = None
    labels: list[Any] | None = None

    def __init__(self, tokenizer: Any, data_cfg: Any, teacher_tokenizer: Any | None = None) -> None:
        """``tokenizer``: the student's (and the teacher's, unless ``teacher_tokenizer`` gives the teacher its
        own; only where :attr:`one_tokenizer` is empty)."""
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        for tok in (tokenizer, teacher_tokenizer):
            if tok is not None and tok.pad_token_id is None:
                raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = eos_token)")
        if teacher_tokenizer is not None and self.one_tokenizer:
            raise ValueError(f"the {self.name} task cannot give the teacher its own tokenizer: {self.one_tokenizer}")
        self.teacher_tokenizer = teacher_tokenizer

    def dataset(self, source: Any, max_samples: int | None = None, *, name: str | None = None) -> ListDataset:
        """The tokenised examples of ``source``: a data file's path or a ``datasets.Dataset`` (its rows read by
        :func:`read_source`, the columns named by the task's ``data_cfg``), the first ``max_samples`` of them;
        ``name`` names a dataset in error messages."""
        raise NotImplementedError

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def kd_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (n, classes) logit rows compared by the KD term."""
        raise NotImplementedError

    def feature_mask(self, batch: dict[str, torch.Tensor], which: str) -> torch.Tensor | None:
        """Token mask for the feature loss (None: every unpadded token)."""
        return None

    def kd_counts(self, batch: dict[str, torch.Tensor]) -> list[int]:
        """How many of the :meth:`kd_logits` rows of ``batch`` belong to each example (one by default)."""
        return [1] * int(batch["input_ids"].shape[0])

    @classmethod
    def model_class(cls) -> Any:
        """The ``transformers`` auto class (``from_pretrained``) of this task's models."""
        import transformers

        return getattr(transformers, cls.model_class_name)

    def student_kwargs(self, teacher: Any) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments of a student loaded from a folder, matched to ``teacher``."""
        return {}

    def check_teacher(self, teacher: Any, teacher_path: str) -> None:
        """Raise :class:`~repgeo._files.DataError` when ``teacher`` cannot serve this task's data."""

    def prepare_student(self, student: Any) -> None:
        """Record in the student's config what the task knows about its outputs (e.g. the label names)."""

    def eval_scores(self, model: Any, dataset: Any, *, generation: dict[str, Any], batch_size: int
                    ) -> dict[str, float]:
        """Scores computed at evaluation beside ``compute_metrics`` (none by default)."""
        return {}
