"""The distillation quality study (:mod:`benchmarks.quality_study`): its statistics against explicit formulas, its
geometry probe, and the ``--quick`` mode end to end on the packaged teacher and data (so the study cannot rot)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.quality_study import __main__ as cli
from benchmarks.quality_study import regimes, statistics, teachers
from benchmarks.quality_study.geometry import ESTIMATORS, GeometryProbe, required_rows
from benchmarks.quality_study.runs import RunLog


def test_paired_matches_explicit_formulas():
    rng = np.random.default_rng(0)
    a = 0.8 + 0.01 * rng.standard_normal(10)
    b = a - 0.004 + 0.003 * rng.standard_normal(10)
    out = statistics.paired(a, b)
    d = a - b
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert out["diff"] == pytest.approx(d.mean(), abs=1e-15)
    assert out["ci_low"] == pytest.approx(d.mean() - half) and out["ci_high"] == pytest.approx(d.mean() + half)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(10))
    assert out["p_t"] == pytest.approx(2 * stats.t.sf(abs(t), 9))
    assert out["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert 0 < out["p_wilcoxon"] <= 1


def test_paired_degenerate_cases_are_finite_or_flagged():
    same = statistics.paired(np.ones(5), np.ones(5))
    assert same["diff"] == 0 and same["p_t"] == 1.0 and math.isnan(same["p_wilcoxon"])
    shifted = statistics.paired(np.ones(5), np.zeros(5))  # constant difference: no spread, the effect is exact
    assert shifted["ci_low"] == shifted["ci_high"] == 1.0 and shifted["p_t"] == 0.0
    one = statistics.paired(np.ones(1), np.zeros(1))
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
    s = statistics.summarize(rows)["r"]
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
    views, refs = statistics.score_views([enc, causal, sweep], {"enc": {}, "llm": {"scores": ref}})
    assert {v["regime"]: v["test_acc"] for v in views} == {
        "llm · exact match": 0.5, "llm · held-out task": 0.2, "llm · held-out task EM": 0.1}
    assert refs["llm · held-out task"] == {"teacher": {"test": 0.2}, "student_init": {"test": 0.0}}


def test_a_regime_keeps_the_teacher_its_recorded_runs_used(tmp_path):
    regime, teacher = tmp_path / "regime", tmp_path / "teacher-old"
    assert teachers.pinned_teacher(regime) is None  # nothing recorded yet
    teacher.mkdir()
    teachers.pin_teacher(regime, teacher)
    assert teachers.pinned_teacher(regime) is None  # not a model folder (any more): fine-tune afresh
    (teacher / "config.json").write_text("{}")
    assert teachers.pinned_teacher(regime) == teacher
    (regime / teachers.PIN).write_text('{"teacher": ')  # a cut file counts as no pin
    assert teachers.pinned_teacher(regime) is None


def test_run_log_survives_a_cut_line_and_resumes(tmp_path):
    log = RunLog(tmp_path / "runs.jsonl")
    log.add({"key": "a", "x": 1})
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"key": "b", "x"')  # an interrupted write
    again = RunLog(tmp_path / "runs.jsonl")
    assert set(again.rows) == {"a"}
    again.add({"key": "c", "x": 3})
    assert set(RunLog(tmp_path / "runs.jsonl").rows) == {"a", "c"}


def test_geometry_probe_takes_evaluation_texts_first_until_it_has_enough_token_rows():
    assert required_rows(100) == 1000 and required_rows(384) == 1536  # max(4 x width, 1000)
    ids = {"dev": [[5] * 30] * 20, "test": [[6] * 30] * 50, "train": [[7] * 30] * 100}
    probe = GeometryProbe.take(ids, ["dev", "test", "heldout", "train"], 0, 300)
    assert len(probe.ids) == 40 and probe.splits == ["dev", "test"]  # 20 x 30 + 20 x 30 = 1200 = 4 x 300 rows
    assert np.array_equal(probe.groups, np.repeat(np.arange(40), 30))  # rows grouped by their text
    short = GeometryProbe.take(ids, ["dev", "test", "train"], 0, 2000)  # 8000 rows needed, 5100 exist: all taken
    assert len(short.ids) == 170 and short.splits == ["dev", "test", "train"]


def test_geometry_probe_reads_a_student_equal_to_its_teacher_as_identical():
    """Real tiny models, token rows grouped by text: the teacher against itself is at distance 0, CKA 1, and its
    layer is predicted on held-out texts; an independently initialised student is far from it. Widths and row
    count are reported."""
    from repgeo.distill.toy import tiny_model

    rng = np.random.default_rng(0)
    model = tiny_model("bert", 50, hidden_size=32, num_layers=2)
    texts = [list(rng.integers(5, 50, size=rng.integers(8, 20))) for _ in range(120)]
    probe = GeometryProbe.take({"dev": texts}, ["dev"], 0, 32)
    values, info = probe.measure(model, model, {2: 2})
    assert info["rows"] == sum(map(len, probe.ids)) >= 1000 and info["widths"] == {"s2_t2": [32, 32]}
    assert values["procrustes_corrected/s2_t2"] == pytest.approx(0.0, abs=1e-6)
    assert values["fg_corrected/s2_t2"] == pytest.approx(0.0, abs=1e-6)
    assert values["cka_debiased/s2_t2"] == pytest.approx(1.0, abs=1e-6)
    assert values["proj_mse_heldout/s2_t2"] < 1e-3
    unrelated, _ = probe.measure(model, tiny_model("bert", 50, hidden_size=32, num_layers=2, seed=1), {2: 2})
    assert unrelated["procrustes_corrected/s2_t2"] > 0.5 and unrelated["cka_debiased/s2_t2"] < 0.6
    assert unrelated["proj_mse_heldout/s2_t2"] > 0.2


def test_the_stored_results_render_to_the_stored_report():
    """``--report`` keeps the results format: the committed JSON renders to the committed markdown, byte for byte."""
    from pathlib import Path

    from benchmarks.quality_study.report import markdown

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    res = json.loads((results / "distill_quality.json").read_text())
    assert markdown(res, "python benchmarks/distill_quality.py --preset cpu") == (
        results / "distill_quality.md").read_text()


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
    assert cli.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "distill_quality_quick.json").read_text())
    encoder, causal = (r.name for r in regimes.PRESETS["quick"].regimes)
    assert list(res["summary"]) == [encoder, causal, causal + " · exact match"]  # no held-out task in --quick
    s = res["summary"][encoder]
    assert set(s["methods"]) == set(regimes.METHODS)
    assert all(m["n"] == 2 for m in s["methods"].values())
    assert set(res["alpha_chosen"]) == set(regimes.FEATURE_METHODS)
    runs = res["runs"]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["sec_per_step"] > 0 for r in runs)
    # the causal regime: instruction task scored by generation; its teacher learnt the response format
    assert res["regimes"][causal]["primary"] == "rougeL"
    assert res["regimes"][causal]["teacher"]["test"] >= 0.5
    causal_runs = [r for r in runs if r["regime"] == causal]
    assert {r["method"] for r in causal_runs} == set(regimes.METHODS)
    for r in causal_runs:
        assert set(r["scores"]) == {"dev", "test"} and r["test_acc"] == r["scores"]["test"]["rougeL"]
        assert r["scores"]["test"]["exact_match"] <= r["scores"]["test"]["rougeL"] + 1e-12  # EM implies ROUGE-L 1
    em_view = res["summary"][causal + " · exact match"]["methods"]
    assert em_view["kd"]["mean"] == pytest.approx(
        np.mean([r["scores"]["test"]["exact_match"] for r in causal_runs if r["method"] == "kd"]))
    for r in runs:  # the final geometry: bias-aware estimators on enough token rows, n and widths beside them
        probe = r["geometry_probe"]
        assert probe["rows"] >= probe["rows_needed"] or "train" in probe["splits"]
        last = max(probe["widths"], key=lambda pair: int(pair.split("_")[0][1:]))  # every estimator at the last pair
        assert {k.split("/")[0] for k in r["geometry"] if k.endswith(last)} == set(ESTIMATORS) == {
            "procrustes_corrected", "fg_corrected", "cka_debiased", "proj_mse_heldout"}
        assert {k for k in r["geometry"] if not k.endswith(last)} == {  # the cheap ones at every other pair
            f"{name}/{pair}" for pair in probe["widths"] if pair != last for name in ("fg_corrected", "cka_debiased")}
    assert "token rows of" in (tmp_path / "out" / "distill_quality_quick.md").read_text()
    feature_runs = [r for r in runs if "+" in r["method"]]
    assert all(r["feature_loss_init"] > 0 and r["alpha_eff"] == pytest.approx(r["alpha"] / r["feature_loss_init"])
               for r in feature_runs)
    assert {r["stage"] for r in runs} == {"final", "ablation"}  # one α in the quick grid: nothing to sweep
    md = (tmp_path / "out" / "distill_quality_quick.md").read_text()
    assert "| kd+procrustes |" in md and "best non-geometric" in md
    assert (tmp_path / "out" / "distill_quality_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second invocation resumes from runs.jsonl: nothing is trained again
    n_lines = len((tmp_path / "work" / "runs.jsonl").read_text().splitlines())
    assert cli.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "work" / "runs.jsonl").read_text().splitlines()) == n_lines
