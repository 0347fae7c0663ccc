"""End-to-end distillation runs on tiny random models (real Trainer, real transformers classes, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from repgeo.cli_distill import main as cli_main
from repgeo.distill import build_trainer, config_from_dict
from repgeo.distill.toy import make_toy_setup

FAST = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16, "learning_rate": 2e-3,
        "disable_tqdm": True, "logging_steps": 1, "dataloader_pin_memory": False, "use_cpu": True}


def _config(setup, out, task="classification", **sections):
    data = {"task": task, "output_dir": str(out), "teacher": {"path": str(setup["teacher"])},
            "student": {"keep_every": 2}, "data": {"train": str(setup["train"]), "eval": str(setup["eval"])},
            "trainer": dict(FAST), "geometry": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture(scope="module")
def cls_setup(tmp_path_factory):
    return make_toy_setup(tmp_path_factory.mktemp("cls"), "classification", dropout=0.1)


def test_cli_classification_run_writes_the_run_folder(cls_setup, tmp_path, capsys):
    import yaml

    out = tmp_path / "run"
    cfg = _config(cls_setup, out, loss={"metric": "procrustes", "pooling": "cls"},
                  trainer={"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 4},
                  geometry={"enabled": True, "probe_size": 16, "metrics": ["procrustes", "cka"]})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["distill", "--config", str(path), "loss.alpha=2.0", "trainer.learning_rate=1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "layer map: student 1 -> teacher 2, student 2 -> teacher 4" in printed
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["loss"]["alpha"] == 2.0 and resolved["trainer"]["learning_rate"] == 1e-3
    assert json.loads((out / "layer_map.json").read_text()) == {"1": 2, "2": 4}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_f1", "eval_mcc", "eval_loss_kd", "eval_loss_feature"} <= set(metrics)
    assert (out / "final" / "model.safetensors").is_file()
    import pandas as pd

    geo = pd.read_csv(out / "geometry.csv")
    assert set(geo["metric"]) == {"procrustes", "cka"} and set(geo["step"]) == {2, 4}
    assert (out / "geometry.png").stat().st_size > 1000
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    for h in train_logs:
        for key in ("loss_task", "loss_kd", "loss_feature", "loss_feature/s1_t2", "loss_feature/s2_t4"):
            assert key in h
        total = h["loss_task"] + h["loss_kd"] + 2.0 * h["loss_feature"]
        assert h["loss"] == pytest.approx(total, rel=1e-4)
    assert any("geometry/cka/s2_t4" in h for h in history)


def test_cli_config_error_exit_code(cls_setup, tmp_path, capsys):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_config(cls_setup, tmp_path / "run")))
    assert cli_main(["distill", "--config", str(path), "loss.temperatur=3"]) == 2
    assert "loss.temperatur: unknown key" in capsys.readouterr().err


def test_training_loss_decreases(cls_setup, tmp_path):
    cfg = config_from_dict(_config(cls_setup, tmp_path / "run", loss={"metric": "procrustes", "alpha": 1.0},
                                   student={"keep_every": None, "num_layers": 2, "hidden_size": 16},
                                   trainer={"max_steps": 24, "eval_strategy": "no", "learning_rate": 5e-3,
                                            "save_strategy": "no", "lr_scheduler_type": "constant"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    def mean(key, part):
        return sum(h[key] for h in part) / len(part)

    assert mean("loss", logs[-4:]) < mean("loss", logs[:4])
    assert mean("loss_feature", logs[-4:]) < 0.7 * mean("loss_feature", logs[:4]), logs


def test_init_errors(cls_setup, tmp_path):
    bad_map = config_from_dict(_config(cls_setup, tmp_path / "a", loss={"layer_map": {1: 7}}))
    with pytest.raises(ValueError, match="teacher layer 7 is out of range"):
        build_trainer(bad_map, verbose=False)
    other = make_toy_setup(tmp_path / "other", "classification", seed=5, n_train=8, n_eval=4)
    (other["teacher"] / "tokenizer.json").write_text(
        (other["teacher"] / "tokenizer.json").read_text().replace('"good"', '"great"'))
    mismatch = config_from_dict(_config(cls_setup, tmp_path / "b", student={"keep_every": None,
                                                                           "path": str(other["teacher"])}))
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        build_trainer(mismatch, verbose=False)


def test_teacher_cache_skips_the_teacher_and_matches(cls_setup, tmp_path):
    finals = {}
    for cached in (False, True):
        cfg = config_from_dict(_config(cls_setup, tmp_path / f"run{cached}", cache={"enabled": cached},
                                       loss={"metric": "cka", "pooling": "tokens"},
                                       trainer={"max_steps": 3, "eval_strategy": "no", "save_strategy": "no",
                                                "optim": "sgd", "learning_rate": 0.1}))
        trainer, _ = build_trainer(cfg, verbose=False)
        calls = []
        trainer.teacher.register_forward_hook(lambda *a, c=calls: c.append(1))
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        finals[cached] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        assert (len(calls) == 0) == cached
    assert (tmp_path / "runTrue" / "teacher_cache.pt").is_file()
    moved = 0
    for key, value in finals[False].items():  # SGD: Adam's first steps would amplify 1e-7 batching noise
        assert torch.allclose(value, finals[True][key], atol=1e-5), (key, (value - finals[True][key]).abs().max())
        moved += not torch.equal(value, initial[key])
    assert moved > 10


_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import transformers
    from repgeo.distill import load_config, run_distillation

    class Kill(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    run_distillation(load_config(sys.argv[1]), callbacks=[Kill()], verbose=False)
""")


def test_kill_and_resume_matches_uninterrupted_run(cls_setup, tmp_path):
    import yaml

    def write(name):
        cfg = _config(cls_setup, tmp_path / name, loss={"metric": "proj_mse", "projector_lr": 5e-3},
                      trainer={"max_steps": 8, "save_steps": 4, "eval_strategy": "no"})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = subprocess.run([sys.executable, str(driver), str(write("killed")), "6"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoint-4" / "feature_loss.pt").is_file()
    assert not (tmp_path / "killed" / "final").exists()
    resumed = subprocess.run([sys.executable, "-m", "repgeo.cli_distill", "distill", "--config",
                              str(tmp_path / "killed.yaml"), "--resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run([sys.executable, str(driver), str(write("straight")), "-1"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    b = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    pa = torch.load(tmp_path / "killed" / "final" / "feature_loss.pt")
    pb = torch.load(tmp_path / "straight" / "final" / "feature_loss.pt")
    for key in pa:
        assert torch.allclose(pa[key], pb[key], atol=1e-6), key
    # training did move the weights (the comparison is not vacuous)
    start = load_file(tmp_path / "killed" / "checkpoint-4" / "model.safetensors")
    assert any(not torch.allclose(start[k], a[k]) for k in a)


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_instruction_loss_masks_prompt_tokens(tmp_path, family):
    setup = make_toy_setup(tmp_path / "setup", "instruction", family=family, n_train=16, n_eval=8)
    cfg = config_from_dict(_config(setup, tmp_path / "run", task="instruction",
                                   loss={"metric": "procrustes", "pooling": "last", "feature_tokens": "response"},
                                   trainer={"max_steps": 2, "eval_strategy": "no", "save_strategy": "no"},
                                   generation={"max_new_tokens": 5, "num_samples": 4}))
    trainer, _ = build_trainer(cfg, verbose=False)
    item = trainer.train_dataset[0]
    n_prompt = sum(1 for x in item["labels"] if x == -100)
    assert n_prompt >= 3 and item["labels"][n_prompt:] == item["input_ids"][n_prompt:]
    batch = trainer.task.collate([trainer.train_dataset[i] for i in range(4)])
    trainer.model.eval()
    trainer.compute_loss(trainer.model, batch)
    terms = trainer._eval_terms.pop()
    with torch.no_grad():
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        s_logits, t_logits = trainer.model(**inputs).logits, trainer.teacher(**inputs).logits
    labels = batch["labels"]
    logp = torch.log_softmax(s_logits[:, :-1].float(), -1)
    target = labels[:, 1:]
    keep = target != -100
    ce_response = -logp[keep].gather(-1, target[keep][:, None]).mean()
    every = batch["attention_mask"][:, 1:].bool()
    ce_all = -logp[every].gather(-1, batch["input_ids"][:, 1:][every][:, None]).mean()
    assert terms["loss_task"] == pytest.approx(float(ce_response), rel=1e-4)
    assert abs(terms["loss_task"] - float(ce_all)) > 1e-3
    T = cfg.loss.temperature
    pt = torch.softmax(t_logits[:, :-1][keep].float() / T, -1)
    kd = T * T * (pt * (pt.log() - torch.log_softmax(s_logits[:, :-1][keep].float() / T, -1))).sum(-1).mean()
    assert terms["loss_kd"] == pytest.approx(float(kd), rel=1e-3, abs=1e-7)
    trainer.train()
    scores = trainer.evaluate()
    assert 0.0 <= scores["eval_rougeL"] <= 100.0 and "eval_exact_match" in scores
    assert Path(cfg.output_dir).is_dir()
