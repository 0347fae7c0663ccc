"""Execute notebooks/02_counterexamples.ipynb headless (nbclient, kernel python3); it asserts its claims hold. The
committed copy carries its outputs."""

from __future__ import annotations

import os

from tests.notebook_checks import NOTEBOOKS, assert_saved_with_outputs, errors, execute, pngs

NOTEBOOK = NOTEBOOKS / "02_counterexamples.ipynb"


def test_counterexamples_notebook_saved_with_outputs():
    assert_saved_with_outputs(NOTEBOOK, min_pngs=8)  # one figure per construction, the invariance audit, §5.1


def test_counterexamples_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # small matrices; threads only fight other jobs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = execute(NOTEBOOK, tmp_path, timeout=120)
    assert not errors(nb)
    assert len(pngs(nb)) >= 8
    assert os.listdir(tmp_path) == []  # the notebook writes nothing
