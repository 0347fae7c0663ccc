"""The distillation quality study (``benchmarks/distill_quality.py``): its statistics against explicit formulas,
and the ``--quick`` mode end to end on the packaged teacher and data (so the script cannot rot)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("distill_quality", ROOT / "benchmarks" / "distill_quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["distill_quality"] = mod
    spec.loader.exec_module(mod)
    return mod


dq = _load()


def test_paired_matches_explicit_formulas():
    rng = np.random.default_rng(0)
    a = 0.8 + 0.01 * rng.standard_normal(10)
    b = a - 0.004 + 0.003 * rng.standard_normal(10)
    out = dq.paired(a, b)
    d = a - b
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert out["diff"] == pytest.approx(d.mean(), abs=1e-15)
    assert out["ci_low"] == pytest.approx(d.mean() - half) and out["ci_high"] == pytest.approx(d.mean() + half)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(10))
    assert out["p_t"] == pytest.approx(2 * stats.t.sf(abs(t), 9))
    assert out["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert 0 < out["p_wilcoxon"] <= 1


def test_paired_degenerate_cases_are_finite_or_flagged():
    same = dq.paired(np.ones(5), np.ones(5))
    assert same["diff"] == 0 and same["p_t"] == 1.0 and math.isnan(same["p_wilcoxon"])
    shifted = dq.paired(np.ones(5), np.zeros(5))  # constant difference: no spread, the effect is exact
    assert shifted["ci_low"] == shifted["ci_high"] == 1.0 and shifted["p_t"] == 0.0
    one = dq.paired(np.ones(1), np.zeros(1))
    assert one["n"] == 1 and math.isnan(one["p_t"])


def _row(method, seed, acc, regime="r", stage="final"):
    return {"regime": regime, "method": method, "seed": seed, "stage": stage, "test_acc": acc, "dev_acc": acc,
            "sec_per_step": 0.1, "geometry": {"cka/s1_t2": 0.5}, "pooling": "mean", "schedule": "constant"}


def test_summary_names_the_best_non_geometric_method_and_pairs_by_seed():
    rows = []
    for seed in range(4):
        rows += [_row("ft", seed, 0.70), _row("kd", seed, 0.74 + 0.001 * seed), _row("kd+proj_mse", seed, 0.72),
                 _row("kd+cka", seed, 0.73), _row("kd+procrustes", seed, 0.75 + 0.002 * seed),
                 _row("kd+fg", seed, 0.74)]
    s = dq.summarize(rows)["r"]
    assert s["best_non_geometric"] == "kd"
    t = s["tests"]["kd+procrustes vs kd"]
    assert t["n"] == 4 and t["diff"] == pytest.approx(np.mean([0.01 + 0.001 * k for k in range(4)]))
    assert {"kd+procrustes vs kd+proj_mse", "kd+procrustes vs kd+cka", "kd+fg vs kd"} <= set(s["tests"])
    assert s["methods"]["kd+cka"]["mean"] == pytest.approx(0.73) and s["methods"]["kd"]["n"] == 4


def test_score_views_add_a_column_per_extra_causal_score():
    enc = {**_row("kd", 0, 0.8, regime="enc"), "scores": {"test": {"acc": 0.8}}}
    scores = {"test": {"rougeL": 0.6, "exact_match": 0.5}, "heldout": {"rougeL": 0.2, "exact_match": 0.1}}
    causal = {**_row("kd", 0, 0.6, regime="llm"), "scores": scores}
    sweep = {**causal, "stage": "sweep"}
    ref = {"teacher": scores, "student_init": {k: {"rougeL": 0.0, "exact_match": 0.0} for k in scores}}
    views, refs = dq.score_views([enc, causal, sweep], {"enc": {}, "llm": {"scores": ref}})
    assert {v["regime"]: v["test_acc"] for v in views} == {
        "llm · exact match": 0.5, "llm · held-out task": 0.2, "llm · held-out task EM": 0.1}
    assert refs["llm · held-out task"] == {"teacher": {"test": 0.2}, "student_init": {"test": 0.0}}


def test_a_regime_keeps_the_teacher_its_recorded_runs_used(tmp_path):
    regime, teacher = tmp_path / "regime", tmp_path / "teacher-old"
    assert dq.pinned_teacher(regime) is None  # nothing recorded yet
    teacher.mkdir()
    dq.pin_teacher(regime, teacher)
    assert dq.pinned_teacher(regime) is None  # not a model folder (any more): fine-tune afresh
    (teacher / "config.json").write_text("{}")
    assert dq.pinned_teacher(regime) == teacher
    (regime / dq.PIN).write_text('{"teacher": ')  # a cut file counts as no pin
    assert dq.pinned_teacher(regime) is None


def test_run_log_survives_a_cut_line_and_resumes(tmp_path):
    log = dq.RunLog(tmp_path / "runs.jsonl")
    log.add({"key": "a", "x": 1})
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"key": "b", "x"')  # an interrupted write
    again = dq.RunLog(tmp_path / "runs.jsonl")
    assert set(again.rows) == {"a"}
    again.add({"key": "c", "x": 3})
    assert set(dq.RunLog(tmp_path / "runs.jsonl").rows) == {"a", "c"}


def _assets_ready() -> bool:
    from repgeo import assets

    try:
        assets.fetch("minilm")
        assets.fetch("rotten_tomatoes")
    except assets.AssetError:
        return False
    return True


@pytest.mark.skipif(not _assets_ready(), reason="run `repgeo fetch-assets` first")
def test_quick_study_end_to_end(tmp_path, one_torch_thread):
    assert dq.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "distill_quality_quick.json").read_text())
    encoder, causal = (r.name for r in dq.PRESETS["quick"].regimes)
    assert list(res["summary"]) == [encoder, causal, causal + " · exact match"]  # no held-out task in --quick
    s = res["summary"][encoder]
    assert set(s["methods"]) == set(dq.METHODS)
    assert all(m["n"] == 2 for m in s["methods"].values())
    assert set(res["alpha_chosen"]) == set(dq.FEATURE_METHODS)
    runs = res["runs"]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["sec_per_step"] > 0 for r in runs)
    # the causal regime: instruction task scored by generation; its teacher learnt the response format
    assert res["regimes"][causal]["primary"] == "rougeL"
    assert res["regimes"][causal]["teacher"]["test"] >= 0.5
    causal_runs = [r for r in runs if r["regime"] == causal]
    assert {r["method"] for r in causal_runs} == set(dq.METHODS)
    for r in causal_runs:
        assert set(r["scores"]) == {"dev", "test"} and r["test_acc"] == r["scores"]["test"]["rougeL"]
        assert r["scores"]["test"]["exact_match"] <= r["scores"]["test"]["rougeL"] + 1e-12  # EM implies ROUGE-L 1
    em_view = res["summary"][causal + " · exact match"]["methods"]
    assert em_view["kd"]["mean"] == pytest.approx(
        np.mean([r["scores"]["test"]["exact_match"] for r in causal_runs if r["method"] == "kd"]))
    feature_runs = [r for r in runs if "+" in r["method"]]
    assert all(r["feature_loss_init"] > 0 and r["alpha_eff"] == pytest.approx(r["alpha"] / r["feature_loss_init"])
               for r in feature_runs)
    assert {r["stage"] for r in runs} == {"final", "ablation"}  # one α in the quick grid: nothing to sweep
    md = (tmp_path / "out" / "distill_quality_quick.md").read_text()
    assert "| kd+procrustes |" in md and "best non-geometric" in md
    assert (tmp_path / "out" / "distill_quality_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second invocation resumes from runs.jsonl: nothing is trained again
    n_lines = len((tmp_path / "work" / "runs.jsonl").read_text().splitlines())
    assert dq.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "work" / "runs.jsonl").read_text().splitlines()) == n_lines
