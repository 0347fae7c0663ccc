"""The distillation walkthrough notebook executes end to end (a short real CPU run), and the committed copy
carries its outputs."""

from __future__ import annotations

from tests.notebook_checks import NOTEBOOKS, assert_saved_with_outputs, code_outputs, errors, execute, pngs

NOTEBOOK = NOTEBOOKS / "03_distill.ipynb"


def test_distill_notebook_saved_with_outputs():
    assert_saved_with_outputs(NOTEBOOK)  # the geometry curves


def test_distill_notebook_executes():
    nb = execute(NOTEBOOK, NOTEBOOK.parent)
    assert not errors(nb)
    assert pngs(nb), "the geometry curves are not displayed inline"
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in code_outputs(nb))
    assert "geometry.csv" in text and "loss_feature" in text
