"""``repgeo demo``: the fast mode end to end on the packaged model and data, and the pieces on your own data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from repgeo.cli import main as cli_main

METHODS = ["kd", "proj_mse", "cka", "procrustes", "fg"]


def _assets_available() -> bool:
    from repgeo.assets import AssetError, minilm_path, rotten_tomatoes

    try:
        minilm_path()
        rotten_tomatoes()
    except AssetError:
        return False
    return True


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    if not _assets_available():
        pytest.fail("the packaged assets are missing: run `repgeo fetch-assets` (the README install line does)")
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "out", root / "cache"
    rc = cli_main(["demo", "--fast", "--threads", "1", "--out", str(out), "--cache-dir", str(cache), "--no-progress"])
    return rc, out, cache


def test_fast_demo_report(fast_run, capsys):
    rc, out, _ = fast_run
    assert rc == 0
    acc = pd.read_csv(out / "accuracy.csv")
    assert {"teacher", "init", *METHODS} <= set(acc["model"])
    assert acc["test_accuracy"].between(0, 1).all()
    settings = json.loads((out / "settings.json").read_text())
    test = pd.read_json(out / "data" / "test.jsonl", lines=True)
    train = pd.read_json(out / "data" / "train.jsonl", lines=True)
    assert len(test) == settings["n_test"] and len(train) == settings["n_train"]
    assert not set(test["text"]) & set(train["text"])  # held out
    chance = test["label"].value_counts(normalize=True).max()
    teacher = acc.set_index("model")["test_accuracy"]
    assert teacher["teacher"] > chance + 0.05, (teacher["teacher"], chance)
    students = acc[acc["model"].isin(METHODS)]
    assert (students["test_accuracy"] > chance).all(), students[["model", "test_accuracy"]]
    assert (students["test_accuracy"] < 0.99).all()


def test_fast_demo_geometry_and_certificates(fast_run):
    _, out, _ = fast_run
    audit = pd.read_csv(out / "audit.csv")
    assert {"init", *METHODS} <= set(audit["student"])
    assert {"procrustes", "cka", "fg", "proj_mse"} <= set(audit["metric"])
    assert audit["value"].notna().all()
    cka = audit[audit["metric"] == "cka"]["value"]
    assert cka.between(0, 1).all()
    geo = pd.read_csv(out / "geometry.csv")
    assert set(geo["student"]) >= set(METHODS)
    # no reported column is constant across students by construction (the closed-form projection-MSE was 0 for
    # every student with fewer texts than features): at the last mapped pair every metric differs between them
    last = geo[geo["pair"] == geo["pair"].iloc[-1]]
    for metric, col in last.groupby("metric"):
        assert col["value"].round(6).nunique() == len(col) >= 5, (metric, col["value"].tolist())
    assert (audit["estimator"] == "corrected").all()
    assert {"n", "p", "q", "eff_rank_t", "eff_rank_s", "flag"} <= set(audit.columns)
    # every resampled (mapped) cell has its null floor, and the printed/markdown table shows it
    permuted = geo[geo["p_value"].notna()]
    assert len(permuted) and permuted["floor"].notna().all()
    assert last["floor"].notna().all(), last[last["floor"].isna()]  # held-out proj_mse included
    cert = pd.read_csv(out / "certificates.csv")
    assert len(cert) >= 10 and cert["passed"].astype(bool).all()
    report = (out / "report.md").read_text()
    for section in ("Held-out accuracy", "Geometry at the mapped layer pairs", "Counterexample certificates",
                    "Training curves", "Time"):
        assert section in report
    assert "(floor " in report and "bias-corrected" in report
    for link in [ln.split("](")[1].rstrip(")") for ln in report.splitlines() if ln.startswith("![")]:
        assert (out / link).is_file(), link


def test_fast_demo_figures_are_real_images(fast_run):
    from PIL import Image

    _, out, _ = fast_run
    pngs = [out / f"heatmap_{m}.png" for m in ("procrustes", "cka", "fg")]
    pngs += [out / "training_curves.png", out / "geometry_curves.png"]
    pngs += sorted((out / "counterexamples").glob("*.png"))
    assert len(pngs) >= 10
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.size[0] > 300 and im.size[1] > 200, (p, im.size)
            a = np.asarray(im.convert("L"), dtype=float)
        assert a.std() > 5, f"{p} looks blank"
        assert (a < 128).mean() > 0.005, f"{p} has almost no dark pixels"


def test_fast_demo_caches_the_teacher(fast_run):
    from repgeo.demo.data import load_data
    from repgeo.demo.settings import settings_for
    from repgeo.demo.teacher import prepare_teacher

    _, out, cache = fast_run
    folders = list(cache.glob("teacher-*"))
    assert len(folders) == 1 and (folders[0] / "demo_teacher.json").is_file()
    s = settings_for("fast", threads=1)
    data = load_data(None, n_train=s.n_train, n_test=s.n_test, seed=s.seed)
    t = prepare_teacher(str(__import__("repgeo.assets").assets.minilm_path()), data, s, cache_dir=cache,
                        progress=False, log=lambda m: None)
    assert t.cached and t.path == folders[0]
    first = pd.read_csv(out / "accuracy.csv").set_index("model")["test_accuracy"]["teacher"]
    assert t.accuracy == pytest.approx(first)


def test_missing_assets_name_the_fetch_command(tmp_path, monkeypatch, capsys):
    import repgeo.assets as assets

    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(assets.registry, "_installed", lambda asset: None)
    rc = cli_main(["demo", "--fast", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert "repgeo fetch-assets" in capsys.readouterr().err


def test_own_model_and_data_end_to_end(tmp_path, capsys):
    """A local (tiny, random) OPT model and a CSV with other column names and three string labels."""
    from repgeo.distill.toy import tiny_model, word_tokenizer

    rng = np.random.default_rng(0)
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "poor"], "neu": ["table", "chair", "door"]}
    rows = []
    vocabulary = [w for ws in words.values() for w in ws]
    for i in range(240):
        lab = ["pos", "neg", "neu"][i % 3]
        text = " ".join(rng.choice(words[lab], 3).tolist() + rng.choice(vocabulary, 2).tolist())
        rows.append({"review": text, "sentiment": lab})
    csv = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    tok = word_tokenizer([r["review"] for r in rows], style="causal")
    model = tiny_model("opt", len(tok), hidden_size=32, num_layers=4, num_heads=4, tokenizer=tok)
    folder = tmp_path / "teacher"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "out"
    rc = cli_main(["demo", "--fast", "--threads", "1", "--teacher", str(folder), "--data", str(csv),
                   "--text-column", "review", "--label-column", "sentiment", "--keep-every", "2", "--teacher-steps",
                   "40", "--n-train", "180", "--n-test", "60", "--out", str(out), "--no-cache", "--no-progress"])
    assert rc == 0
    acc = pd.read_csv(out / "accuracy.csv")
    assert {"teacher", *METHODS} <= set(acc["model"])
    assert set(pd.read_json(out / "data" / "test.jsonl", lines=True)["label"]) == {"pos", "neg", "neu"}
    assert (out / "teacher" / "config.json").is_file()  # --no-cache: the teacher stays in the report folder
    assert "model" in capsys.readouterr().out


def test_split_is_stratified_and_seeded():
    from repgeo.demo.data import split

    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 70 + ["b"] * 30})
    a = split(frame, 50, 20, seed=1)
    b = split(frame, 50, 20, seed=1)
    assert a.train.equals(b.train) and a.test.equals(b.test)
    assert (a.test["label"] == "a").sum() == 14
    assert a.labels == ["a", "b"] and a.chance == pytest.approx(0.7)
    small = split(frame.sample(40, random_state=0), 50, 20, seed=0)  # fewer rows than asked: scaled down
    assert len(small.train) + len(small.test) == 40


def test_bad_settings_exit_2(capsys):
    assert cli_main(["demo", "--fast", "--keep-every", "0", "--no-progress"]) == 2
    assert "keep_every" in capsys.readouterr().err


def test_fast_demo_compares_every_student_with_its_initialisation(fast_run):
    _, out, _ = fast_run
    acc = pd.read_csv(out / "accuracy.csv").set_index("model")["test_accuracy"]
    gains = pd.read_csv(out / "vs_init.csv")
    assert set(gains["model"]) == set(METHODS)
    n = len(pd.read_json(out / "data" / "test.jsonl", lines=True))
    for row in gains.itertuples():
        assert row.n == n and row.init_accuracy == pytest.approx(acc["init"])
        assert row.delta == pytest.approx(acc[row.model] - acc["init"], abs=1e-12)
        # d_i takes values in {-1, 0, 1}: its SD is at most sqrt(n / (n - 1)), and 0 only if d is constant
        assert 0 <= row.se <= math.sqrt(1 / (n - 1)) + 1e-12
        assert row.above_2se == (row.delta > 2 * row.se)


def test_paired_difference_matches_the_count_formula_and_a_paired_t_test():
    from scipy import stats

    from repgeo.recipes.scoring import paired_difference

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    a = np.where(rng.random(500) < 0.8, y, (y + 1) % 3)
    b = np.where(rng.random(500) < 0.7, y, (y + 2) % 3)
    d = paired_difference(a, b, y)
    n10 = int(((a == y) & (b != y)).sum())  # A right, B wrong
    n01 = int(((a != y) & (b == y)).sum())
    n = len(y)
    mean = (n10 - n01) / n
    var = (n10 + n01 - n * mean**2) / (n - 1)  # sum (d_i - mean)^2 / (n - 1) with d_i in {-1, 0, 1}
    assert d.n == n and d.delta == pytest.approx(mean, abs=1e-15)
    assert d.se == pytest.approx(math.sqrt(var / n), rel=1e-12)
    assert d.z == pytest.approx(stats.ttest_rel((a == y).astype(float), (b == y).astype(float)).statistic, rel=1e-10)
    assert str(d) == f"{100 * mean:+.1f} points (paired SE {100 * math.sqrt(var / n):.1f})"
    same = paired_difference(a, a, y)
    assert same.delta == 0 and same.se == 0 and math.isnan(same.z)
    with pytest.raises(ValueError, match="same length"):
        paired_difference(a, b[:-1], y)


def test_improvement_table_pairs_each_student_with_the_initialisation_of_its_width():
    from types import SimpleNamespace

    from repgeo.demo.pipeline import improvement_table

    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    data = SimpleNamespace(test=pd.DataFrame({"label": y}), labels=[0, 1])
    wide0, narrow0 = np.zeros(8, int), np.ones(8, int)  # accuracy 3/8 and 5/8
    runs = [SimpleNamespace(name="kd", student="wide", method="kd", accuracy=1.0, predictions=y),
            SimpleNamespace(name="kd (narrow)", student="narrow", method="kd", accuracy=1.0, predictions=y)]
    result = SimpleNamespace(data=data, runs=runs, init_predictions=wide0, init_predictions_narrow=narrow0)
    table = improvement_table(result).set_index("model")
    assert table.loc["kd", "init_accuracy"] == pytest.approx(3 / 8)
    assert table.loc["kd (narrow)", "init_accuracy"] == pytest.approx(5 / 8)
    assert table.loc["kd", "delta"] == pytest.approx(5 / 8)
    assert table.loc["kd", "se"] == pytest.approx(np.std((y == y) - (wide0 == y).astype(float), ddof=1) / math.sqrt(8))
    assert bool(table.loc["kd", "above_2se"]) == (5 / 8 > 2 * table.loc["kd", "se"])


def test_bad_learning_rate_exits_2(capsys):
    assert cli_main(["demo", "--fast", "--student-lr", "0", "--no-progress"]) == 2
    assert "student_lr must be > 0" in capsys.readouterr().err
