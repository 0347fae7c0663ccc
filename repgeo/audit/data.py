"""Reading audit stimuli (texts) from files, and loading models by folder or hub name."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from repgeo._files import (
    TABULAR_SUFFIXES,
    DataError,
    missing_column,
    model_source_problem,
    read_records,
    read_text_utf8,
    record_columns,
)

__all__ = ["load_model", "read_texts"]

TEXT_COLUMNS = ("text", "sentence", "content", "prompt", "question", "document")


def read_texts(path: str | os.PathLike[str], text_column: str | None = None) -> list[str]:
    """Texts from a ``.txt`` file (one per non-empty line) or a table (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``,
    ``.json``; read by :func:`repgeo._files.read_records`, every CSV cell as text, a JSON line may also be a bare
    string): column ``text_column``, default the first of ``text``, ``sentence``, ``content``, ``prompt``,
    ``question``, ``document`` present, else the only column.

    Empty and whitespace-only texts are kept here (the audit drops and reports them). Raises ``ValueError``
    (:class:`~repgeo._files.DataError`) naming the file for an empty file, an unknown extension, a missing
    column or a file that is not UTF-8 (naming the byte offset).
    """
    path = Path(path)
    if path.suffix.lower() not in (".txt", *TABULAR_SUFFIXES):
        raise DataError(f"unsupported data file {path.name!r}: use .txt (one text per line) or a table "
                        f"({', '.join(TABULAR_SUFFIXES)})")
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"data file {str(path)!r} not found")
        texts = [line for line in read_text_utf8(path).splitlines() if line.strip()]
    else:
        records = read_records(path, strings=True, bare_key=text_column or TEXT_COLUMNS[0])
        col = _pick_column(records, text_column, path) if records else ""
        for i, r in enumerate(records):
            if col not in r:
                raise DataError(f"data file {str(path)!r}, record {i}: no column {col!r} (columns: {list(r)})")
        texts = ["" if _missing(r[col]) else str(r[col]) for r in records]
    if not texts:
        raise DataError(f"data file {path} holds no texts")
    return texts


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pick_column(records: list[dict[str, Any]], text_column: str | None, path: Path) -> str:
    fields = record_columns(records)
    if text_column is not None:
        if text_column not in fields:
            raise missing_column(path, text_column, fields, "pass text_column")
        return text_column
    for name in TEXT_COLUMNS:
        if name in fields:
            return name
    if len(fields) == 1:
        return fields[0]
    raise DataError(f"{path}: cannot tell which column holds the text among {fields}; pass text_column")


def load_model(name_or_path: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local folder or a Hugging Face hub name (passed to transformers unchanged).

    The base model (``AutoModel``) is loaded, in eval mode; a tokenizer without a pad token gets its EOS
    token as pad token. Offline, a hub name fails with a message that says what to do.
    """
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise OSError(f"cannot load model: {model_source_problem(name_or_path)}. Original error: {e}") from e
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
