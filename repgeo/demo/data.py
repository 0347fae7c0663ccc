"""The demo's data: the packaged Rotten Tomatoes snippets or any CSV / TSV / JSONL file with a text and a label
column, split once (stratified, seeded) into a training and a held-out test set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repgeo._files import missing_column, read_records, record_columns


@dataclass
class DemoData:
    """The split: ``train`` / ``test`` frames with columns ``text`` and ``label`` (original label values),
    ``labels`` (sorted as the distillation runner sorts them: by ``str``), and where the data came from."""

    train: pd.DataFrame
    test: pd.DataFrame
    labels: list[Any]
    source: str
    n_available: int

    @property
    def chance(self) -> float:
        """Accuracy of always predicting the most frequent training label, on the test set."""
        majority = self.train["label"].astype(str).value_counts().idxmax()
        return float((self.test["label"].astype(str) == majority).mean())

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for frame in (self.train, self.test):
            for t, y in zip(frame["text"], frame["label"], strict=True):
                h.update(f"{t}\x1f{y}\x1e".encode())
            h.update(b"\x1d")
        return h.hexdigest()

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``train.jsonl`` and ``test.jsonl`` (fields ``text``, ``label``) for the distillation runner (JSON keeps
        label types, so ``"01"`` stays a string)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "train.jsonl", folder / "test.jsonl"
        for frame, path in zip((self.train, self.test), paths, strict=True):
            frame.to_json(path, orient="records", lines=True, force_ascii=False)
        return paths


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV / TSV / JSON-lines / JSON file as a DataFrame (read by :func:`repgeo._files.read_records`: UTF-8, only
    empty CSV cells are missing, JSON values keep their types)."""
    records = read_records(path)
    return pd.DataFrame(records, columns=record_columns(records))


def load_frame(data: str | None, text_column: str = "text", label_column: str = "label") -> tuple[pd.DataFrame, str]:
    """``(frame with columns text, label, source name)``; rows without text or label are dropped."""
    if data is None:
        from repgeo.assets import rotten_tomatoes

        return rotten_tomatoes(), "Rotten Tomatoes snippets (packaged; 1 = fresh, 0 = rotten)"
    frame = read_table(data)
    for col, what in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in frame.columns:
            raise missing_column(data, col, frame.columns, f"pass {what}")
    frame = frame[[text_column, label_column]].rename(columns={text_column: "text", label_column: "label"})
    frame = frame.dropna()
    frame["text"] = frame["text"].astype(str)
    frame = frame[frame["text"].str.strip() != ""].reset_index(drop=True)
    return frame, str(data)


def split(frame: pd.DataFrame, n_train: int, n_test: int, seed: int, source: str = "") -> DemoData:
    """A seeded, stratified split into ``n_train`` training and ``n_test`` test rows (scaled down 80 / 20 when the
    data holds fewer rows)."""
    from sklearn.model_selection import train_test_split

    n = len(frame)
    if n < 10:
        raise ValueError(f"the data holds {n} usable rows; the demo needs at least 10")
    if n_train + n_test > n:
        n_test = max(2, round(n * n_test / (n_train + n_test)))
        n_train = n - n_test
    keys = frame["label"].astype(str)
    counts = keys.value_counts()
    if len(counts) < 2:
        raise ValueError(f"the data has a single label ({counts.index[0]!r}); classification needs two or more")
    stratify = keys if counts.min() >= 2 and min(n_train, n_test) >= len(counts) else None
    rest = n - n_train - n_test
    idx = np.arange(n)
    if rest > 0:
        idx, _ = train_test_split(idx, train_size=n_train + n_test, random_state=seed,
                                  stratify=None if stratify is None else stratify.iloc[idx])
    train_idx, test_idx = train_test_split(idx, train_size=n_train, test_size=n_test, random_state=seed,
                                           stratify=None if stratify is None else stratify.iloc[idx])
    train = frame.iloc[np.sort(train_idx)].reset_index(drop=True)
    test = frame.iloc[np.sort(test_idx)].reset_index(drop=True)
    labels = sorted({*train["label"], *test["label"]}, key=str)
    labels = [x.item() if hasattr(x, "item") else x for x in labels]
    return DemoData(train, test, labels, source, n)


def load_data(data: str | None, *, text_column: str = "text", label_column: str = "label", n_train: int,
              n_test: int, seed: int) -> DemoData:
    frame, source = load_frame(data, text_column, label_column)
    return split(frame, n_train, n_test, seed, source)
