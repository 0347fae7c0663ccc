"""Shared pieces of the tasks: reading records, a list dataset, padding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a CSV (``.csv``/``.tsv``) or JSON-lines (``.jsonl``/``.json``) file into a list of dicts."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(p)!r} not found")
    if p.suffix in (".csv", ".tsv"):
        import pandas as pd

        frame = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")
        return frame.to_dict(orient="records")
    if p.suffix in (".jsonl", ".json"):
        text = p.read_text()
        if p.suffix == ".json" and text.lstrip().startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    raise ValueError(f"data file {str(p)!r}: expected .csv, .tsv, .jsonl or .json")


def require_fields(records: list[dict[str, Any]], fields: Sequence[str], path: str) -> None:
    """Raise naming the missing column."""
    if not records:
        raise ValueError(f"data file {path!r} has no records")
    for f in fields:
        if f not in records[0]:
            raise ValueError(f"data file {path!r} has no field {f!r} (fields: {sorted(records[0])})")


class ListDataset(torch.utils.data.Dataset):
    """A list of already tokenised examples."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Pad integer sequences into a (batch, max_len) long tensor."""
    n = max(len(s) for s in seqs)
    rows = [
        ([*s, *[value] * (n - len(s))] if side == "right" else [*[value] * (n - len(s)), *s]) for s in seqs
    ]
    return torch.tensor(rows, dtype=torch.long)


class Task:
    """Interface of a task (see the package docstring)."""

    name: ClassVar[str] = ""

    def __init__(self, tokenizer: Any, data_cfg: Any) -> None:
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = eos_token)")

    def dataset(self, path: str, max_samples: int | None = None) -> ListDataset:
        raise NotImplementedError

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def kd_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (n, classes) logit rows compared by the KD term."""
        raise NotImplementedError

    def feature_mask(self, batch: dict[str, torch.Tensor], which: str) -> torch.Tensor | None:
        """Token mask for the feature loss (None: every unpadded token)."""
        return None
