"""The v2 protocol's pieces (:mod:`benchmarks.quality_study`): the dev-plateau stopping rule (on a synthetic dev
curve, through a real ``transformers.Trainer``), the α-grid extension rule, the seeds-for-power formula against a
simulation, Holm's adjustment against explicit values, the verdicts, the primary comparisons' summary and the
stage selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.quality_study import alpha_grid, power, statistics
from benchmarks.quality_study.plateau import Plateau, PlateauStop
from benchmarks.quality_study.study import stages_to_run

# -- plateau ----------------------------------------------------------------------------------------------------


def test_plateau_rule_on_synthetic_dev_curves():
    rule = Plateau(patience=1, max_epochs=8)
    assert rule.best([0.70]) == 0 and not rule.stop([0.70])
    assert not rule.stop([0.70, 0.72])  # gained: go on
    assert rule.stop([0.70, 0.72, 0.72])  # no gain over the best (a tie is no gain)
    assert rule.best([0.70, 0.72, 0.72]) == 1
    assert rule.stop([0.70, 0.72, 0.71]) and rule.best([0.70, 0.72, 0.71]) == 1
    patient = Plateau(patience=2, max_epochs=8)
    assert not patient.stop([0.70, 0.72, 0.71]) and patient.stop([0.70, 0.72, 0.71, 0.715])
    assert patient.best([0.70, 0.72, 0.71, 0.73]) == 3 and not patient.stop([0.70, 0.72, 0.71, 0.73])
    rising = [0.5 + 0.01 * k for k in range(8)]
    assert not rule.stop(rising[:7]) and rule.stop(rising)  # max_epochs
    strict = Plateau(patience=1, max_epochs=8, min_delta=0.005)
    assert strict.stop([0.70, 0.704]) and strict.best([0.70, 0.704]) == 0  # a gain under min_delta is no gain


@pytest.mark.parametrize("bad", [{"patience": 0}, {"max_epochs": 0}, {"min_delta": -0.1},
                                 {"min_delta": float("nan")}])
def test_plateau_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Plateau(**bad)
    with pytest.raises(ValueError, match="empty"):
        Plateau().best([])


def test_plateau_callback_stops_a_real_trainer_and_restores_the_best_epoch(tmp_path, one_torch_thread):
    """A tiny BERT classifier trained by ``transformers.Trainer``; the dev score is a scripted synthetic curve
    (0.5, 0.7, 0.6, 0.9, ...): with patience 1 training stops after epoch 3 and the epoch-2 weights come back."""
    import torch
    import transformers

    from repgeo.distill.toy import tiny_model

    torch.manual_seed(0)
    model = tiny_model("bert", 40, hidden_size=16, num_layers=1, num_labels=2)
    rows = [{"input_ids": torch.randint(5, 40, (8,)), "labels": torch.tensor(i % 2)} for i in range(16)]
    curve, snapshots = iter([0.5, 0.7, 0.6, 0.9, 0.95]), []

    def score(m):
        snapshots.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return next(curve)

    stop = PlateauStop(score, Plateau(patience=1, max_epochs=5))
    args = transformers.TrainingArguments(str(tmp_path), num_train_epochs=5, per_device_train_batch_size=4,
                                          learning_rate=1e-2, save_strategy="no", report_to="none",
                                          disable_tqdm=True, use_cpu=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[stop])
    trainer.train()
    assert [c["dev"] for c in stop.curve] == [0.5, 0.7, 0.6] and trainer.state.global_step == 12
    assert stop.best == {"epoch": 2, "step": 8, "dev": 0.7}
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)  # the epoch-2 weights
    assert not all(torch.equal(final[k], snapshots[2][k]) for k in final)  # not the last epoch's
    assert stop.eval_seconds > 0


# -- α grid -----------------------------------------------------------------------------------------------------


def test_alpha_grid_extends_until_the_choice_is_interior():
    assert alpha_grid.grid_ratio((0.3, 1.0, 3.0)) == pytest.approx(10 / 3) and alpha_grid.grid_ratio((1.0,)) == 3
    means = {0.3: 0.70, 1.0: 0.71, 3.0: 0.72}  # best at the top edge: one more point above
    assert alpha_grid.next_alpha(means, 3.0, added=0, max_extend=3) == 9.0
    means[9.0] = 0.715  # now 3 is interior
    assert alpha_grid.is_interior(means) and alpha_grid.next_alpha(means, 3.0, added=1, max_extend=3) is None
    low = {0.3: 0.75, 1.0: 0.71, 3.0: 0.70}  # best at the bottom edge: one more point below
    assert alpha_grid.next_alpha(low, 3.0, added=0, max_extend=3) == 0.1
    assert alpha_grid.next_alpha(low, 3.0, added=3, max_extend=3) is None  # the limit
    assert alpha_grid.next_alpha({1.0: 0.7}, 3.0, added=0, max_extend=1) == 3.0  # one point: extend upwards
    assert alpha_grid.choose({0.3: 0.7, 3.0: 0.7, 1.0: 0.69}) in (0.3, 3.0)
    assert alpha_grid.choose({0.5: 0.7, 3.0: 0.7}) == 0.5  # tie: nearest 1 in log scale
    with pytest.raises(ValueError, match="positive"):
        alpha_grid.grid_ratio((0.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        alpha_grid.choose({})


# -- power ------------------------------------------------------------------------------------------------------


def _simulated_power(n, sd, delta, level, reps=20000, seed=0):
    d = np.random.default_rng(seed).normal(delta, sd, size=(reps, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    return float(np.mean(p < level))


@pytest.mark.parametrize(("sd", "comparisons"), [(0.015, 2), (0.03, 4), (0.008, 1)])
def test_seeds_for_power_matches_a_simulation(sd, comparisons):
    """The returned n reaches 80 % power at level 0.05/m in a Monte-Carlo of paired t-tests; n − 1 does not."""
    n = power.seeds_for_power(sd, delta=0.01, level=0.05, comparisons=comparisons)
    a = 0.05 / comparisons
    assert power.paired_power(n, sd, 0.01, a) >= 0.8 > power.paired_power(n - 1, sd, 0.01, a)
    se = math.sqrt(0.8 * 0.2 / 20000)
    assert _simulated_power(n, sd, 0.01, a) == pytest.approx(power.paired_power(n, sd, 0.01, a), abs=4 * se)
    assert _simulated_power(n - 1, sd, 0.01, a, seed=1) < 0.8 + 4 * se
    z = stats.norm.ppf(1 - a / 2) + stats.norm.ppf(0.8)  # the large-n approximation, a lower bound
    assert (z * sd / 0.01) ** 2 <= n <= (z * sd / 0.01) ** 2 + 6


@pytest.mark.parametrize("pairs", [3, 5, 12])
def test_sd_upper_limit_covers_the_true_sd_at_its_confidence(pairs):
    """In a Monte-Carlo of pilots of k normal pairs, the upper limit lies above the true SD in 80 % of them; at
    k = 5 it is the sample SD times sqrt(4 / chi2_0.2(4)) = 1.557."""
    rng = np.random.default_rng(pairs)
    sds = rng.normal(0.0, 0.02, size=(20000, pairs)).std(axis=1, ddof=1)
    upper = np.array([power.sd_upper_limit(s, pairs - 1, 0.8) for s in sds[:2000]])
    factor = upper / sds[:2000]
    assert np.allclose(factor, factor[0])  # a fixed multiple of the sample SD
    covered = np.mean(sds * factor[0] >= 0.02)
    assert covered == pytest.approx(0.8, abs=4 * math.sqrt(0.8 * 0.2 / 20000))
    if pairs == 5:
        assert factor[0] == pytest.approx(1.557, abs=1e-3)
    with pytest.raises(ValueError, match="df must be >= 1"):
        power.sd_upper_limit(0.01, 0, 0.8)
    with pytest.raises(ValueError, match="confidence"):
        power.sd_upper_limit(0.01, 4, 1.0)


def test_power_rejects_bad_input():
    with pytest.raises(ValueError, match="sd"):
        power.paired_power(5, 0.0, 0.01, 0.05)
    with pytest.raises(ValueError, match="n must be"):
        power.paired_power(1, 0.01, 0.01, 0.05)
    with pytest.raises(ValueError, match="comparisons"):
        power.seeds_for_power(0.01, comparisons=0)
    with pytest.raises(ValueError, match="n_max"):
        power.seeds_for_power(1.0, delta=0.001, n_max=50)


def test_holm_matches_explicit_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04): monotone
    assert power.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert power.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = power.holm([0.02, float("nan"), 0.01])  # NaN stays NaN and is not counted
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_verdicts():
    assert power.verdict(0.02, 0.03, 0.01) == "significant gain"
    assert power.verdict(-0.02, -0.01, 0.01) == "significant loss"
    assert power.verdict(0.002, 0.008, 0.3) == "conclusive: CI excludes +1 point"
    assert power.verdict(0.005, 0.015, 0.2) == "inconclusive"
    assert power.verdict(0.0, float("nan"), float("nan")) == "inconclusive"
    assert power.verdict(0.02, 0.03, 0.05) == "inconclusive"  # not below the level


# -- the summary of the main stage ------------------------------------------------------------------------------


def _row(regime, method, seed, test, dev=0.7):
    return {"regime": regime, "method": method, "seed": seed, "stage": "main", "test_acc": test, "dev_acc": dev,
            "alpha": 1.0, "steps_to_plateau": 10 * (seed + 1), "epochs": 3, "sec_per_step": 0.1,
            "scores": {"test": {"acc": test}}, "geometry": {"cka_debiased/s1_t2": 0.5}}


def test_summary_tests_each_geometric_loss_against_the_recorded_comparator_with_holm():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(8):
        base = 0.8 + 0.01 * rng.standard_normal()
        rows += [_row("a", "kd", seed, base), _row("a", "kd+cka", seed, base - 0.01),
                 _row("a", "kd+procrustes", seed, base + 0.03 + 0.002 * rng.standard_normal()),
                 _row("a", "kd+fg", seed, base + 0.001 * rng.standard_normal()),
                 _row("b", "kd", seed, base), _row("b", "kd+procrustes", seed, base - 0.03 + 0.001 * seed)]
    decisions = {"a": {"comparator": {"method": "kd+cka"}}, "b": {"comparator": {"method": "kd"}}}
    s = statistics.summarize(rows, decisions)
    assert set(s["a"]["tests"]) == {"kd+procrustes vs kd+cka", "kd+fg vs kd+cka"}  # vs the comparator only
    assert "kd+procrustes vs kd" not in s["a"]["tests"] and "kd+procrustes vs kd+cka" not in s["a"]["secondary"]
    raw = [s["a"]["tests"]["kd+procrustes vs kd+cka"]["p_t"], s["a"]["tests"]["kd+fg vs kd+cka"]["p_t"],
           s["b"]["tests"]["kd+procrustes vs kd"]["p_t"]]
    adjusted = power.holm(raw)  # over every primary comparison of every regime
    assert s["b"]["tests"]["kd+procrustes vs kd"]["p_holm"] == pytest.approx(adjusted[2])
    assert s["a"]["tests"]["kd+procrustes vs kd+cka"]["verdict"] == "significant gain"
    assert s["b"]["tests"]["kd+procrustes vs kd"]["verdict"] == "significant loss"
    assert s["a"]["tests"]["kd+fg vs kd+cka"]["verdict"] == "significant gain"  # +1 point, tiny spread
    assert s["a"]["methods"]["kd"]["steps_to_plateau"] == 45 and s["a"]["methods"]["kd"]["n"] == 8
    # the family-wise (Bonferroni) upper end over the 3 primary comparisons, from the explicit formula
    from scipy import stats

    t = s["a"]["tests"]["kd+procrustes vs kd+cka"]
    wide = {m: np.array([r["test_acc"] for r in rows if r["regime"] == "a" and r["method"] == m])
            for m in ("kd+procrustes", "kd+cka")}
    d = wide["kd+procrustes"] - wide["kd+cka"]
    expected = d.mean() + stats.t.ppf(1 - 0.05 / 6, 7) * d.std(ddof=1) / np.sqrt(8)
    assert t["ci_high_family"] == pytest.approx(expected) and t["ci_high_family"] > t["ci_high"]


def test_a_null_difference_is_conclusive_only_when_the_family_wise_interval_excludes_one_point():
    """Paired differences of mean exactly 0 and SD s over 25 seeds, two primary comparisons: the Bonferroni
    interval's upper end is t(0.9875, 24) s / 5 = 0.478 s. At s = 1 point it lies below +1 point (conclusive); at
    s = 2.3 points it does not (inconclusive), although the unadjusted 95 % interval's (0.413 s) would."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal(25)
    z = (z - z.mean()) / z.std(ddof=1)
    for sd, expected in ((0.01, "conclusive: CI excludes +1 point"), (0.023, "inconclusive")):
        rows = []
        for seed in range(25):
            base = 0.8 + 0.02 * rng.standard_normal()
            rows += [_row("a", "kd+cka", seed, base, dev=base),
                     _row("a", "kd+procrustes", seed, base + sd * z[seed], dev=base + 0.5 * sd * z[seed]),
                     _row("a", "kd+fg", seed, base - sd * z[seed], dev=base)]
        s = statistics.summarize(rows, {"a": {"comparator": {"method": "kd+cka"}}})
        for t in s["a"]["tests"].values():
            assert t["diff"] == pytest.approx(0.0, abs=1e-12) and t["ci_high"] < 0.01
            assert t["ci_high_family"] == pytest.approx(0.478 * sd, rel=1e-3)
            assert t["verdict"] == expected
            # the power check: the seeds the observed test SD needs, by the same rule the power stage uses
            assert t["sd"] == pytest.approx(sd) and t["seeds_needed_observed"] == power.seeds_for_power(
                sd, delta=0.01, level=0.05, comparisons=2)
        assert s["a"]["tests"]["kd+procrustes vs kd+cka"]["sd_dev"] == pytest.approx(0.5 * sd)
        assert s["a"]["tests"]["kd+fg vs kd+cka"]["sd_dev"] == pytest.approx(0.0, abs=1e-12)
        need = s["a"]["tests"]["kd+fg vs kd+cka"]["seeds_needed_observed"]
        assert (need <= 25) if sd == 0.01 else (need > 25)


def test_a_changed_regime_or_training_setting_gets_new_run_keys_but_an_estimate_does_not():
    import dataclasses

    from benchmarks.quality_study import regimes
    from benchmarks.quality_study.runs import RunSpec, setup_key

    pre = regimes.PRESETS["cpu2"]
    r = pre.regimes[0]
    key = RunSpec(r.name, "kd", 0, 0.0, "main", setup_key(r, pre)).key
    for changed_r, changed_pre in ((dataclasses.replace(r, n_train=r.n_train + 1), pre),
                                   (dataclasses.replace(r, max_epochs=r.max_epochs + 1), pre),
                                   (r, dataclasses.replace(pre, lr=pre.lr * 2))):
        assert changed_r.name == r.name and RunSpec(r.name, "kd", 0, 0.0, "main", setup_key(changed_r, changed_pre)
                                                    ).key != key
    cheaper = dataclasses.replace(r, sec_per_step=r.sec_per_step / 2, geometry_seconds=1.0)
    assert RunSpec(r.name, "kd", 0, 0.0, "main", setup_key(cheaper, pre)).key == key


def test_learning_rate_stage_runs_kd_on_the_grid_then_every_run_uses_the_decided_rate(tmp_path, monkeypatch):
    """With a ``lr_grid`` the ``lr`` stage runs KD on the sweep seeds at each rate (dev); once decided, every
    later run carries that rate in its identity, and the sweep reuses KD's runs at it (none pending twice)."""
    import dataclasses
    import json

    from benchmarks.quality_study import regimes
    from benchmarks.quality_study.study import SWEEP_SEED0, Study

    pre = dataclasses.replace(regimes.PRESETS["cpu2"], lr_grid=(1e-5, 2e-5, 4e-5), sweep_seeds=2)
    monkeypatch.setitem(regimes.PRESETS, "lr-test", pre)
    st = Study("lr-test", tmp_path, execute=False, log=lambda s: None)
    st.lr()
    assert sorted((s.lr, s.seed) for _, s, _ in st.pending) == [
        (lr, SWEEP_SEED0 + i) for lr in (1e-5, 2e-5, 4e-5) for i in range(2)]
    assert {s.method for _, s, _ in st.pending} == {"kd"}
    name = pre.regimes[0].name
    (tmp_path / "decisions.json").write_text(json.dumps({name: {"lr": {"lr": 4e-5, "means": {}, "interior": False}}}))
    st = Study("lr-test", tmp_path, execute=False, log=lambda s: None)
    st.sweep()
    assert {s.lr for _, s, _ in st.pending} == {4e-5}
    kd = [s for _, s, _ in st.pending if s.method == "kd"]
    assert len(kd) == 2 and kd[0].key != st.spec(pre.regimes[0], "kd", kd[0].seed, 0.0, "sweep", 2e-5).key


def test_stage_selection():
    assert stages_to_run(None, None) == ["teacher", "lr", "sweep", "pilot", "power", "main", "confirm_power", "confirm",
                                         "report"]
    assert stages_to_run("main", None) == ["main"]
    assert stages_to_run(None, "pilot") == ["teacher", "lr", "sweep", "pilot"]
    with pytest.raises(ValueError, match="--until must be one of"):
        stages_to_run(None, "final")
    with pytest.raises(ValueError, match="not both"):
        stages_to_run("main", "main")


# -- the instruction regime: one run to its plateau ------------------------------------------------------------


def test_instruction_regime_run_with_reverse_kl_reaches_a_plateau(tmp_path, one_torch_thread):
    """A toy instruction regime (tiny random Llama teacher fine-tuned on templated Rotten Tomatoes, a 2-block
    student): one ``rkd+procrustes`` run (reverse KL + Procrustes) trains to its dev plateau through the engine,
    is scored by generation (ROUGE-L, exact match) on dev and test, and gets its final geometry."""
    from benchmarks.quality_study import regimes
    from benchmarks.quality_study.data import prepare
    from benchmarks.quality_study.runs import RunSpec, run_config, run_one

    preset = regimes.Preset(regimes=[], batch=8, causal_teacher_lr=3e-3)
    r = regimes.Regime("rotten_tomatoes", 48, 16, 16, family="causal", teacher="toy", student_layers=2,
                       teacher_steps=30, max_length=48, max_epochs=2)
    p = prepare(preset, r, tmp_path, lambda msg: None)
    spec = RunSpec(r.name, "rkd+procrustes", 0, 1.0, "main")
    cfg = run_config(preset, p, spec, tmp_path / "cfg", tmp_path / "cache.pt")
    assert cfg["loss"]["kd"] == "reverse" and cfg["loss"]["metric"] == "procrustes"
    assert cfg["trainer"]["num_train_epochs"] == 2 and cfg["trainer"]["max_steps"] == -1
    row = run_one(preset, p, spec, tmp_path)
    import yaml

    from benchmarks.quality_study.data import regime_folder

    used = yaml.safe_load((regime_folder(tmp_path, r) / "runs" / spec.key / "config.yaml").read_text())
    assert used["loss"]["kd"] == "reverse" and used["loss"]["w_kd"] == 1.0  # what the engine trained with
    assert 1 <= row["epochs"] <= 2 and row["steps_to_plateau"] in {c["step"] for c in row["curve"]}
    assert row["dev_acc"] == pytest.approx(max(c["dev"] for c in row["curve"]))
    assert set(row["scores"]["test"]) == {"rougeL", "exact_match"} and row["test_acc"] == row["scores"]["test"][
        "rougeL"]
    assert row["geometry_probe"]["unit"] == "token" and row["feature_loss_init"] > 0


def test_report_says_plainly_when_the_geometry_probe_is_short_of_its_rule():
    from benchmarks.quality_study.report import probe_sentence

    short = {"rows": 3066, "rows_needed": 3072, "unit": "text", "texts": 3066, "splits": ["dev", "test", "train"]}
    text = probe_sentence(short, "s3_t12")
    assert "6 short of the rule's 3072" in text and "3.99 rows per feature" in text and "768" in text
    enough = dict(short, rows=4000, texts=4000)
    text = probe_sentence(enough, "s3_t12")
    assert "short" not in text and "the rule asks ≥ 3072" in text and text.endswith("at s3_t12.")


def _confirm_study(tmp_path, monkeypatch, diffs, main_seeds=6, execute=True):
    """A cpu2-like preset whose main stage has ``main_seeds`` primary seeds decided, with the recorded main runs
    giving the comparator 0.75 and each geometric loss 0.75 + ``diffs[seed]`` on test."""
    import dataclasses

    from benchmarks.quality_study import regimes
    from benchmarks.quality_study.runs import RunLog
    from benchmarks.quality_study.study import Study

    pre = dataclasses.replace(regimes.PRESETS["cpu2"], confirm_max_seeds=60)
    monkeypatch.setitem(regimes.PRESETS, "confirm-test", pre)
    name = pre.regimes[0].name
    decisions = {name: {"lr": {"lr": 5e-5}, "comparator": {"method": "kd+cka"}, "power": {"seeds": main_seeds},
                        "alpha": {m: {"alpha": 0.3} for m in ("cka", "procrustes", "fg")}}}
    (tmp_path / "decisions.json").write_text(json.dumps(decisions))
    st = Study("confirm-test", tmp_path, execute=False, log=lambda s: None)
    r = st.regimes[0]
    log = RunLog(tmp_path / "runs.jsonl")
    for seed, d in enumerate(diffs):
        for method, test in (("kd+cka", 0.75), ("kd+procrustes", 0.75 + d), ("kd+fg", 0.75 + d)):
            spec = st.spec(r, method, seed, 0.3, "main")
            log.add({**dataclasses.asdict(spec), "key": spec.key, "dev_acc": 0.7, "test_acc": test,
                     "scores": {"test": {"acc": test}}, "steps_to_plateau": 10, "epochs": 3, "sec_per_step": 0.1,
                     "run_seconds": 10.0, "steps": 30})
    messages = []
    return Study("confirm-test", tmp_path, execute=execute, log=messages.append), messages


def test_confirmation_runs_fresh_seeds_sized_from_the_main_stages_test_sd_when_a_verdict_is_inconclusive(
        tmp_path, monkeypatch):
    from benchmarks.quality_study.study import CONFIRM_SEED0, Study

    rng = np.random.default_rng(4)
    z = rng.standard_normal(6)
    diffs = 0.02 * (z - z.mean()) / z.std(ddof=1)  # mean 0, paired SD 2 points: inconclusive at 6 seeds
    st, _ = _confirm_study(tmp_path, monkeypatch, diffs)
    st.confirm_power()
    c = json.loads((tmp_path / "decisions.json").read_text())[st.regimes[0].name]["confirm_power"]
    upper = power.sd_upper_limit(0.02, 5, 0.8)
    needed = power.seeds_for_power(upper, delta=0.01, level=0.05, comparisons=2)
    assert c["paired_sd_test"] == pytest.approx(0.02) and c["paired_sd_test_upper"] == pytest.approx(upper)
    assert c["seeds_needed"] == needed and c["seeds"] == min(needed, 60) and c["capped"] == (needed > 60)
    assert sorted(c["inconclusive"]) == ["kd+fg vs kd+cka", "kd+procrustes vs kd+cka"]
    planner = Study("confirm-test", tmp_path, execute=False, log=lambda s: None)
    planner.confirm()
    specs = [s for _, s, _ in planner.pending]
    assert {s.stage for s in specs} == {"confirm"}
    assert {s.method for s in specs} == {"kd+cka", "kd+procrustes", "kd+fg"}
    assert sorted({s.seed for s in specs}) == list(range(CONFIRM_SEED0, CONFIRM_SEED0 + c["seeds"]))  # fresh seeds
    # analysed alone: the confirmation's rows give its own tests, the main stage's rows are not in them
    rows = [_row(st.regimes[0].name, m, CONFIRM_SEED0 + i, 0.75 + (0.004 if m != "kd+cka" else 0.0) + 0.001 * (i % 3))
            for i in range(8) for m in ("kd+cka", "kd+procrustes", "kd+fg")]
    for x in rows:
        x["stage"] = "confirm"
    conf = statistics.summarize(rows + [x for x in st.runs.rows.values()], st.decisions, stage="confirm")
    t = conf[st.regimes[0].name]["tests"]["kd+procrustes vs kd+cka"]
    assert t["n"] == 8 and t["diff"] == pytest.approx(0.004)
    from benchmarks.quality_study.report import _confirmation

    text = "\n".join(_confirmation({"decisions": st.decisions, "confirmation": conf}))
    assert f"{c['seeds']} seeds from {CONFIRM_SEED0}" in text and "8 of " in text
    assert "| **kd+procrustes vs kd+cka** | 8 | +0.40 |" in text


@pytest.mark.parametrize(("case", "main_seeds"), [("significant", 6), ("incomplete", 7)])
def test_no_confirmation_after_a_conclusive_main_stage_or_before_it_is_complete(tmp_path, monkeypatch, case,
                                                                                 main_seeds):
    diffs = 0.05 + 0.002 * np.arange(6)  # +5 points, tiny spread: significant gains
    st, messages = _confirm_study(tmp_path, monkeypatch, diffs, main_seeds=main_seeds)
    st.confirm_power()
    decided = json.loads((tmp_path / "decisions.json").read_text())[st.regimes[0].name]
    if case == "incomplete":  # 6 of 7 decided seeds: nothing decided yet, and the log says why
        assert "confirm_power" not in decided and "incomplete" in messages[-1]
    else:
        assert decided["confirm_power"]["seeds"] == 0 and decided["confirm_power"]["inconclusive"] == []
        assert "the main stage is conclusive" in messages[-1]
    st.confirm()
    assert st.pending == []
