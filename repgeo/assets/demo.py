"""The demo's two assets (``repgeo fetch-assets`` fetches them): the all-MiniLM-L6-v2 teacher and the Rotten
Tomatoes snippets. Fetching and checking are in :mod:`repgeo.assets.registry`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import damaged_asset_error, fetch

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["minilm_path", "rotten_tomatoes"]


def minilm_path(*, download: bool = False) -> Path:
    """The all-MiniLM-L6-v2 model folder, loadable with ``transformers.AutoModel.from_pretrained``."""
    return fetch("minilm", download=download)


def rotten_tomatoes(*, download: bool = False) -> pd.DataFrame:
    """The Rotten Tomatoes snippets as a DataFrame with columns ``text`` and ``label`` (1 = fresh, 0 = rotten).

    Rows whose category is ``plot`` (synopses, not reviews) and duplicate texts are dropped; the order is the
    file's, so splits made with a fixed seed are reproducible.
    """
    import pandas as pd

    path = fetch("rotten_tomatoes", download=download)
    try:
        df = pd.read_csv(path, usecols=["category", "text"])
    except (OSError, EOFError, ValueError) as exc:  # a damaged .bz2 stream or CSV
        raise damaged_asset_error("rotten_tomatoes", f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    df = df.drop_duplicates(subset="text").reset_index(drop=True)
    return pd.DataFrame({"text": df["text"].astype(str), "label": (df["category"] == "fresh").astype(int)})
