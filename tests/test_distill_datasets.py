"""Hugging Face ``datasets`` in distillation: ``data.dataset`` in YAML, ``Dataset`` / ``DatasetDict`` given to the
trainer, ``DistillationArguments``, ``--print-config``. Real tiny models, real Trainer, real ``datasets`` objects."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch
import transformers
import yaml

from repgeo._files import DataError
from repgeo.cli import main as cli_main
from repgeo.distill import (
    ClassificationTask,
    ConfigError,
    DataConfig,
    DistillationArguments,
    DistillationTrainer,
    InstructionTask,
    build_trainer,
    config_from_dict,
    derive_student,
    load_config,
)
from repgeo.distill.toy import make_toy_setup, sentiment_records

datasets = pytest.importorskip("datasets")

FAST = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "learning_rate": 2e-3,
        "disable_tqdm": True, "logging_steps": 1, "dataloader_pin_memory": False, "use_cpu": True,
        "max_steps": 6, "save_strategy": "no", "eval_strategy": "no", "lr_scheduler_type": "constant"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The toy CSV setup, and the same rows as a ``DatasetDict`` (built in memory, saved with ``save_to_disk``) with
    a third, smaller split."""
    folder = tmp_path_factory.mktemp("hf")
    s = make_toy_setup(folder, "classification", dropout=0.1)
    train, evals = pd.read_csv(s["train"]), pd.read_csv(s["eval"])
    small = sentiment_records(8, seed=7)
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({c: list(train[c]) for c in train.columns}),
        "validation": datasets.Dataset.from_dict({c: list(evals[c]) for c in evals.columns}),
        "small": datasets.Dataset.from_dict({k: [r[k] for r in small] for k in ("text", "label")}),
    })
    dd.save_to_disk(str(folder / "dsdict"))
    return {**s, "dsdict": folder / "dsdict", "dd": dd, "small": small}


def _config(setup, out, data, **sections):
    cfg = {"task": "classification", "output_dir": str(out), "teacher": {"path": str(setup["teacher"])},
           "student": {"keep_every": 2}, "data": data, "trainer": dict(FAST), "geometry": {"enabled": False},
           "loss": {"metric": "procrustes"}}
    cfg.update(sections)
    return config_from_dict(cfg)


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_the_csv_rows_and_the_dataset_rows_are_the_same(setup):
    # the premise of the loss-curve comparison: the DatasetDict holds the CSV's rows in the CSV's order
    assert setup["dd"]["train"].to_list() == pd.read_csv(setup["train"]).to_dict(orient="records")
    assert len(setup["dd"]["validation"]) == 32


def test_a_saved_dataset_trains_like_the_same_rows_from_csv(setup, tmp_path):
    # each trainer trains right after it is built: the Trainer seeds the global RNG (dropout) when it is built
    from_csv, _ = build_trainer(_config(setup, tmp_path / "a", {"train": str(setup["train"])}), verbose=False)
    from_csv.train()
    from_ds, _ = build_trainer(_config(setup, tmp_path / "b", {"dataset": str(setup["dsdict"])}), verbose=False)
    from_ds.train()
    assert from_ds.train_dataset.items == from_csv.train_dataset.items
    a, b = _losses(from_csv), _losses(from_ds)
    assert len(a) == FAST["max_steps"] and len(set(a)) > 1  # a real curve, not a constant
    assert b == pytest.approx(a, rel=1e-6, abs=1e-7)


def test_dataset_in_memory_with_distillation_arguments_matches_the_yaml_run(setup, tmp_path):
    """The API path (``DistillationArguments`` + a ``datasets.Dataset``, no run configuration) trains exactly as
    the YAML path with the same settings."""
    cfg = _config(setup, tmp_path / "yaml", {"train": str(setup["train"])},
                  loss={"metric": "procrustes", "temperature": 3.0, "alpha": 0.5, "pooling": "cls"})
    reference, _ = build_trainer(cfg, verbose=False)
    reference.train()

    transformers.set_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(setup["teacher"])
    teacher = transformers.AutoModelForSequenceClassification.from_pretrained(setup["teacher"])
    student = derive_student(teacher, keep_every=2, seed=0)
    args = DistillationArguments(output_dir=str(tmp_path / "api"), report_to="none", seed=0, metric="procrustes",
                                 temperature=3.0, alpha=0.5, pooling="cls", **FAST)
    trainer = DistillationTrainer(student, teacher, task=ClassificationTask(tokenizer, DataConfig()), args=args,
                                  train_dataset=setup["dd"]["train"])
    assert trainer.temperature == 3.0 and trainer.alpha == 0.5
    assert trainer.feature_loss is not None and trainer.feature_loss.layer_map == {1: 2, 2: 4}
    trainer.train()
    assert _losses(trainer) == pytest.approx(_losses(reference), rel=1e-6, abs=1e-7)


def test_distillation_arguments_are_training_arguments_and_keywords_win(setup, tmp_path):
    args = DistillationArguments(output_dir=str(tmp_path), temperature=4.0, alpha=0.0, w_kd=0.5, report_to="none",
                                 use_cpu=True)
    assert isinstance(args, transformers.TrainingArguments) and args.remove_unused_columns is False
    assert InstructionTask.name == "instruction"  # both task classes are exported from repgeo.distill
    tokenizer = transformers.AutoTokenizer.from_pretrained(setup["teacher"])
    teacher = transformers.AutoModelForSequenceClassification.from_pretrained(setup["teacher"])
    student = derive_student(teacher, keep_every=2, seed=0)
    task = ClassificationTask(tokenizer, DataConfig())
    trainer = DistillationTrainer(student, teacher, task=task, args=args, temperature=1.5,
                                  train_dataset=setup["dd"]["train"])
    assert (trainer.temperature, trainer.w_kd, trainer.feature_loss) == (1.5, 0.5, None)
    for bad, message in (({"temperature": 0.0}, "temperature: must be > 0"),
                         ({"metric": "procrustez"}, "metric: unknown metric 'procrustez'.*did you mean 'procrustes'"),
                         ({"pooling": "max"}, "pooling: must be one of cls, mean, last, tokens, got 'max'")):
        with pytest.raises(ValueError, match=message):
            DistillationArguments(output_dir=str(tmp_path), **bad)


def test_instruction_rows_from_a_dataset_are_the_jsonl_rows(tmp_path):
    s = make_toy_setup(tmp_path, "instruction", n_train=8, n_eval=4)
    records = [json.loads(line) for line in s["train"].read_text().splitlines()]
    tok = transformers.AutoTokenizer.from_pretrained(s["teacher"])
    task = InstructionTask(tok, DataConfig())
    from_file = task.dataset(str(s["train"]))
    from_ds = task.dataset(datasets.Dataset.from_list(records))
    assert from_ds.items == from_file.items and len(from_ds) == 8
    assert task.dataset(datasets.Dataset.from_list(records), 3).items == from_file.items[:3]
    with pytest.raises(TypeError, match=r"IterableDataset .*not supported"):
        task.dataset(datasets.Dataset.from_list(records).to_iterable_dataset())


def test_dataset_dict_splits_are_picked_by_name(setup, tmp_path):
    cfg = _config(setup, tmp_path / "a", {"dataset": str(setup["dsdict"]), "train_split": "small",
                                          "eval_split": "validation"})
    trainer, _ = build_trainer(cfg, verbose=False)
    tok = trainer.task.tokenizer
    assert [it["input_ids"] for it in trainer.train_dataset.items] == [tok(r["text"])["input_ids"]
                                                                       for r in setup["small"]]
    assert len(trainer.eval_dataset) == 32
    bad = _config(setup, tmp_path / "b", {"dataset": str(setup["dsdict"]), "train_split": "nope"})
    with pytest.raises(ConfigError, match=r"^data.train_split: the dataset has no split 'nope' "
                                          r"\(splits: \['small', 'train', 'validation'\]\)"):
        build_trainer(bad, verbose=False)
    assert not (tmp_path / "b").exists()

    # the trainer API: a DatasetDict as train_dataset / eval_dataset, its splits named by train_split / eval_split
    teacher = transformers.AutoModelForSequenceClassification.from_pretrained(setup["teacher"])
    api = DistillationTrainer(derive_student(teacher, keep_every=2, seed=0), teacher,
                              task=ClassificationTask(tok, DataConfig()),
                              args=DistillationArguments(output_dir=str(tmp_path / "c"), report_to="none",
                                                         use_cpu=True),
                              train_dataset=setup["dd"], eval_dataset=setup["dd"], train_split="small")
    assert len(api.train_dataset) == 8 and len(api.eval_dataset) == 32


def test_a_missing_column_names_the_column_and_the_available_ones(setup, tmp_path):
    cfg = _config(setup, tmp_path / "a", {"dataset": str(setup["dsdict"]), "text_field": "sentence"})
    with pytest.raises(DataError, match=r"dataset '.*dsdict\[train\]' has no column 'sentence' "
                                        r"\(columns: \['text', 'label'\]\)"):
        build_trainer(cfg, verbose=False)
    tok = transformers.AutoTokenizer.from_pretrained(setup["teacher"])
    task = ClassificationTask(tok, DataConfig(label_field="sentiment"))
    with pytest.raises(DataError, match=r"dataset '<in memory>' has no column 'sentiment' \(columns: \['text', "
                                        r"'label'\]\)"):
        task.dataset(setup["dd"]["train"])


def test_the_classification_collator_pads_like_the_tokenizer(setup):
    tok = transformers.AutoTokenizer.from_pretrained(setup["teacher"])
    task = ClassificationTask(tok, DataConfig())
    ds = task.dataset(setup["dd"]["small"])
    batch = task.collate([ds[i] for i in range(4)])
    ids = [ds[i]["input_ids"] for i in range(4)]
    n = max(map(len, ids))
    assert batch["input_ids"].tolist() == [s + [tok.pad_token_id] * (n - len(s)) for s in ids]
    assert batch["attention_mask"].tolist() == [[1] * len(s) + [0] * (n - len(s)) for s in ids]
    assert batch["labels"].tolist() == [r["label"] for r in setup["small"][:4]]
    assert batch["example_index"].tolist() == [0, 1, 2, 3] and batch["labels"].dtype == torch.long


def test_data_config_errors(setup):
    base = {"task": "classification", "output_dir": "o", "teacher": {"path": "t"}}
    with pytest.raises(ConfigError, match=r"^data.train: .*not both"):
        config_from_dict({**base, "data": {"train": "a.csv", "dataset": "imdb"}})
    with pytest.raises(ConfigError, match=r"^data.train: .*one is required"):
        config_from_dict({**base, "data": {}})
    with pytest.raises(ConfigError, match=r"^data.eval_split: only applies with data.dataset"):
        config_from_dict({**base, "data": {"train": "a.csv", "eval_split": "test"}})
    with pytest.raises(ConfigError, match=r"^data.eval: with data.dataset"):
        config_from_dict({**base, "data": {"dataset": "imdb", "eval": "b.csv"}})


@pytest.mark.parametrize("data", ["csv", "dataset"])
def test_print_config_round_trips_and_trains_nothing(setup, tmp_path, capsys, data):
    src = {"train": str(setup["train"])} if data == "csv" else {"dataset": str(setup["dsdict"]),
                                                                "eval_split": "validation"}
    raw = {"task": "classification", "output_dir": str(tmp_path / "run"),
           "teacher": {"path": str(setup["teacher"])}, "student": {"keep_every": 2}, "data": src}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    overrides = ["loss.temperature=3", "trainer.learning_rate=3e-5"]
    assert cli_main(["distill", "--config", str(path), "--print-config", *overrides]) == 0
    printed = capsys.readouterr().out
    loaded = yaml.safe_load(printed)
    assert loaded["loss"]["temperature"] == 3.0 and loaded["loss"]["pooling"] == "mean"  # overrides and defaults
    assert config_from_dict(loaded) == load_config(path, overrides)
    assert not (tmp_path / "run").exists()


def test_without_the_datasets_package_the_error_says_what_to_install(monkeypatch, tmp_path):
    from repgeo.distill.hfdata import load_hf_dataset

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: ``import datasets`` fails
    with pytest.raises(ImportError, match=r"pip install 'repgeo\[data\]'"):
        load_hf_dataset(str(tmp_path))
