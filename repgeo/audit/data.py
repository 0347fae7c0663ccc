"""Reading audit stimuli (texts) from files, and loading models by folder or hub name."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from repgeo._files import model_source_problem, read_text_utf8

__all__ = ["load_model", "read_texts"]

TEXT_COLUMNS = ("text", "sentence", "content", "prompt", "question", "document")


def read_texts(path: str | os.PathLike[str], text_column: str | None = None) -> list[str]:
    """Texts from a ``.txt`` (one per non-empty line), ``.csv`` (column ``text_column``, default the first of
    ``text``, ``sentence``, ``content``, ``prompt``, ``question``, ``document`` present, else the only column)
    or ``.jsonl`` file (field ``text_column``, same defaults; a line may also be a bare JSON string).

    Empty and whitespace-only texts are kept here (the audit drops and reports them). Raises
    ``ValueError`` for an empty file, an unknown extension, a missing column or a file that is not UTF-8 (naming
    the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [line.rstrip("\r\n") for line in read_text_utf8(path).splitlines()]
        texts = [t for t in texts if t.strip()]
    elif suffix == ".csv":
        with io.StringIO(read_text_utf8(path), newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            col = _pick_column(fields, text_column, path)
            texts = [row.get(col) or "" for row in reader] if col else []
    elif suffix in (".jsonl", ".ndjson"):
        texts = []
        col = text_column
        for lineno, line in enumerate(read_text_utf8(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno} is not valid JSON: {e}") from None
            if isinstance(obj, str):
                texts.append(obj)
                continue
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object or string, got {type(obj).__name__}")
            if col is None:
                col = _pick_column(list(obj), None, path)
            if col not in obj:
                raise ValueError(f"{path}:{lineno} has no field {col!r} (fields: {sorted(obj)})")
            texts.append(str(obj[col]) if obj[col] is not None else "")
    else:
        raise ValueError(f"unsupported data file {path.name!r}: use .txt (one text per line), .csv or .jsonl")
    if not texts:
        raise ValueError(f"data file {path} holds no texts")
    return texts


def _pick_column(fields: list[str], text_column: str | None, path: Path) -> str:
    if not fields:
        raise ValueError(f"data file {path} holds no texts (no header)")
    if text_column is not None:
        if text_column not in fields:
            raise ValueError(f"{path} has no column {text_column!r}; columns: {fields}")
        return text_column
    for name in TEXT_COLUMNS:
        if name in fields:
            return name
    if len(fields) == 1:
        return fields[0]
    raise ValueError(f"{path}: cannot tell which column holds the text among {fields}; pass text_column")


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
