"""Hugging Face ``datasets`` as distillation data: loading (``data.dataset``), picking splits, reading rows.

``datasets`` is imported only here and only when a dataset is used (install ``repgeo[data]``); the rows of a
``datasets.Dataset`` go through the same tokenisation as the rows of a data file (:meth:`Task.dataset
<repgeo.distill.tasks.Task.dataset>`), so the same rows give the same examples, batches and loss curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repgeo._files import missing_column


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError("Hugging Face datasets need the 'datasets' package: pip install 'repgeo[data]'") from None
    return datasets


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets.Dataset`` or ``DatasetDict`` (checked without importing ``datasets``)."""
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "column_names")


def is_dataset_dict(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets.DatasetDict`` (a mapping of split names to datasets)."""
    return is_hf_dataset(obj) and hasattr(obj, "keys")


def load_hf_dataset(name: str, config: str | None = None) -> Any:
    """A ``DatasetDict`` (or ``Dataset``): a folder written by ``save_to_disk`` is read with ``load_from_disk``,
    anything else (a hub name, a local script or data folder) with ``load_dataset(name, config)``."""
    datasets = _datasets()
    p = Path(name)
    if p.is_dir() and any((p / f).is_file() for f in ("dataset_dict.json", "state.json")):
        if config is not None:
            raise ValueError(f"data.dataset_config: {name!r} is a folder written by save_to_disk, which has no "
                             f"configurations (got {config!r})")
        return datasets.load_from_disk(str(p))
    return datasets.load_dataset(name, config)


def pick_split(data: Any, split: str, key: str = "split") -> Any:
    """``data[split]`` of a ``DatasetDict`` (``data`` itself when it is a ``Dataset``); an unknown split raises
    ``KeyError`` naming ``key``, the split and the available ones."""
    if not is_dataset_dict(data):
        return data
    if split not in data:
        raise KeyError(f"{key}: the dataset has no split {split!r} (splits: {sorted(data)})")
    return data[split]


def dataset_records(ds: Any, fields: Sequence[str], max_samples: int | None, name: str, hint: str
                    ) -> list[dict[str, Any]]:
    """The first ``max_samples`` rows (all when None) of a ``datasets.Dataset`` as dicts of ``fields``; a missing
    column raises :class:`~repgeo._files.DataError` naming the dataset (``name``), the column and the available
    ones."""
    for f in fields:
        if f not in ds.column_names:
            raise missing_column(name, f, ds.column_names, hint, what="dataset")
    n = len(ds) if max_samples is None else min(max_samples, len(ds))
    columns = {f: list(ds[f][:n]) for f in fields}
    return [{f: columns[f][i] for f in fields} for i in range(n)]
