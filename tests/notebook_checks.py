"""Shared checks for the notebook tests: execute a notebook headless, and check the copy saved in the repository.

The notebooks are committed *with* their outputs (so their plots show on a code host); a notebook saved without
outputs, half-run, or with an error in it fails :func:`assert_saved_with_outputs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def code_outputs(nb: Any) -> list[Any]:
    """Every output of every code cell, in order."""
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def pngs(nb: Any) -> list[Any]:
    """The outputs that carry an inline PNG image."""
    return [o for o in code_outputs(nb) if "image/png" in o.get("data", {})]


def errors(nb: Any) -> list[Any]:
    """The error outputs (a cell that raised)."""
    return [o for o in code_outputs(nb) if o.get("output_type") == "error"]


def execute(path: Path, cwd: Path, timeout: int = 300) -> Any:
    """Run the notebook at ``path`` top to bottom in a fresh ``python3`` kernel started in ``cwd``; returns it with
    its outputs (the file on disk is left as it is)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def assert_saved_with_outputs(path: Path, min_pngs: int = 1) -> None:
    """The committed notebook was saved after one full top-to-bottom run: every code cell numbered 1, 2, 3, ...
    in order, at least ``min_pngs`` inline PNG images, and no error output."""
    nb = nbformat.read(path, as_version=4)
    counts = [cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} is not saved from one full run: {counts}"
    assert len(pngs(nb)) >= min_pngs, f"{path.name} is saved with {len(pngs(nb))} inline images (< {min_pngs})"
    assert not errors(nb), f"{path.name} is saved with an error output"
