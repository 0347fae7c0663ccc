"""Small file helpers shared by the modules that read, write or verify files."""

from __future__ import annotations

import hashlib
from pathlib import Path


class DataError(ValueError):
    """A data file cannot be used (unreadable encoding, malformed line, missing column or value, unseen label);
    the message names the file and, where it applies, the record and line."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_text_utf8(path: str | Path, what: str = "data file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises :class:`DataError` naming the file, the byte offset and line of the first invalid byte, instead of a
    bare ``UnicodeDecodeError``.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{bad} at offset {exc.start} (line {line}) cannot be "
            "decoded; re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def model_source_problem(name_or_path: str) -> str:
    """Why ``from_pretrained(name_or_path)`` most likely failed, and what to do: a local path that is not a model
    folder, or a name that was looked up on the Hugging Face hub (offline here, or no such model)."""
    if Path(name_or_path).exists():
        return (f"{name_or_path!r} is a local path but could not be loaded as a transformers model folder "
                "(config.json, weights and tokenizer files are needed)")
    return (f"{name_or_path!r} is not a local folder (resolved: {Path(name_or_path).resolve()}), so it was looked "
            "up on the Hugging Face hub, which failed (offline, or the name does not exist). Download it where the "
            f"hub is reachable (`huggingface-cli download {name_or_path} --local-dir DIR`) and pass DIR instead")
