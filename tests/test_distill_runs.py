"""End-to-end distillation runs on tiny random models (real Trainer, real transformers classes, no network)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from repgeo.cli import main as cli_main
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
                                                                           "path": str(other["teacher"])},
                                        loss={"pooling": "tokens"}))  # other tokenizers: pooled features only
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


def test_each_input_is_hashed_once_per_run(cls_setup, tmp_path, monkeypatch):
    """The teacher's files and the training data are read for their sha256 once per run (not once for
    ``inputs.json``, again for the teacher cache's key and a third time for the resume check), and the hash
    recorded in ``inputs.json`` is the one the teacher cache is keyed by."""
    from collections import Counter

    from repgeo import _files
    from repgeo.distill import TeacherCache, run_distillation

    real, seen = _files.sha256_file, []
    monkeypatch.setattr(_files, "sha256_file", lambda path: seen.append(Path(path).resolve()) or real(path))
    teacher, data = Path(cls_setup["teacher"]).resolve(), Path(cls_setup["train"]).resolve()
    expected = Counter([*(f.resolve() for f in teacher.rglob("*") if f.is_file()), data])
    out = tmp_path / "run"
    cfg = config_from_dict(_config(cls_setup, out, cache={"enabled": True}, loss={"metric": "cka"},
                                   trainer={"max_steps": 2, "save_steps": 2, "eval_strategy": "no"}))
    for resume in (False, True):
        seen.clear()
        run_distillation(cfg, resume=resume, verbose=False)
        assert Counter(p for p in seen if p == data or teacher in p.parents) == expected, resume
    recorded = json.loads((out / "inputs.json").read_text())
    cache = TeacherCache.load(out / "teacher_cache.pt")
    assert recorded["teacher.path"] == cache.meta["teacher_sha256"] == _files.content_sha256(teacher)
    assert recorded["data.train"] == cache.meta["data_sha256"] == _files.content_sha256(data)


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
    resumed = subprocess.run([sys.executable, "-m", "repgeo", "distill", "--config",
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


def test_instruction_teacher_cache_holds_each_examples_response_logits(tmp_path):
    """The cache splits the teacher's KD rows by example with the task's own count (response tokens for the
    instruction task): a batch looked up in another order equals the live teacher's rows for that batch."""
    setup = make_toy_setup(tmp_path / "setup", "instruction", family="opt", n_train=12, n_eval=4)
    cfg = config_from_dict(_config(setup, tmp_path / "run", task="instruction", cache={"enabled": True},
                                   loss={"metric": "cka", "pooling": "mean", "feature_tokens": "response"},
                                   trainer={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    batch = trainer.task.collate([trainer.train_dataset[i] for i in (5, 0, 9, 2)])
    counts = trainer.task.kd_counts(batch)
    assert counts == [sum(1 for x in trainer.train_dataset[i]["labels"][1:] if x != -100) for i in (5, 0, 9, 2)]
    logits, _ = trainer.teacher_cache.lookup(batch["example_index"])
    with torch.no_grad():
        out = trainer.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    live = trainer.task.kd_logits(out.logits, batch)
    assert logits.shape == live.shape and sum(counts) == live.shape[0]
    assert torch.allclose(logits, live.float(), atol=1e-5)


_FORK_DRIVER = textwrap.dedent("""
    import json, os, signal, sys, traceback
    import torch, transformers
    from repgeo.distill import load_config, run_distillation

    torch.set_num_threads(1)

    class Kill(transformers.TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    # argv: reference.yaml, then (trial.yaml, kill step) pairs. Every child is forked before this process computes
    # anything, trains until it SIGKILLs itself at its step; then each trial is resumed and the reference trained.
    trials, report = list(zip(sys.argv[2::2], sys.argv[3::2])), {}
    for path, step in trials:
        pid = os.fork()
        if pid == 0:
            try:
                run_distillation(load_config(path), callbacks=[Kill(int(step))], verbose=False)
            except BaseException:
                traceback.print_exc()
            os._exit(3)  # only reached when the kill did not happen
        _, status = os.waitpid(pid, 0)
        out = load_config(path).output_dir
        report[path] = {"sigkill": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                        "final": os.path.exists(os.path.join(out, "final")),
                        "checkpoints": sorted(p for p in os.listdir(out) if p.startswith("checkpoint-"))}
    for path, _ in trials:
        run_distillation(load_config(path), resume=True, verbose=False)
    run_distillation(load_config(sys.argv[1]), verbose=False)
    print(json.dumps(report))
""")


def _same_final(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), (a, key)
    pa, pb = torch.load(a / "final" / "feature_loss.pt"), torch.load(b / "final" / "feature_loss.pt")
    assert pa.keys() == pb.keys() and all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)


def test_random_kill_trials_resume_to_the_uninterrupted_result(cls_setup, tmp_path):
    """Two runs SIGKILLed at random steps (seeded RNG), each resumed from its last checkpoint: both end with the
    weights and projectors of an uninterrupted run."""
    import random

    import yaml

    steps = random.Random(7).sample(range(3, 8), 2)

    def write(name):
        cfg = _config(cls_setup, tmp_path / name, loss={"metric": "proj_mse", "projector_lr": 5e-3},
                      trainer={"max_steps": 8, "save_steps": 2, "eval_strategy": "no"})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    driver = tmp_path / "driver.py"
    driver.write_text(_FORK_DRIVER)
    trials = [(write(f"trial{i}"), step) for i, step in enumerate(steps)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(driver), write("straight"), *[str(a) for t in trials for a in t]],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    for i, (path, step) in enumerate(trials):
        assert report[path]["sigkill"] and not report[path]["final"], (step, report[path], out.stderr[-2000:])
        assert report[path]["checkpoints"] == [f"checkpoint-{s}" for s in range(2, step, 2)]
        _same_final(tmp_path / f"trial{i}", tmp_path / "straight")
    start = load_file(tmp_path / "trial0" / "checkpoint-2" / "model.safetensors")
    final = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    assert any(not torch.allclose(start[k], final[k]) for k in final)  # training moved the weights


def _full_disk_save(victim: str, real_save):
    """A ``torch.save`` for which writes whose path contains ``victim`` find the disk full: half the bytes land in
    the file, then ENOSPC."""

    def save(obj, f, *args, **kwargs):
        if victim not in str(f):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[: buf.tell() // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    return save


class _StepCounter(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_disk_full_during_a_checkpoint_then_resume(cls_setup, tmp_path, monkeypatch):
    """The disk fills up while checkpoint-4 is written (the projectors' feature_loss.pt, or the Trainer's own
    optimizer.pt): the run fails with ENOSPC, checkpoint-4 is not taken for complete (no trainer_state.json, no
    partial feature_loss.pt), and --resume continues from checkpoint-2 to the uninterrupted result."""
    from repgeo.distill import run_distillation
    from repgeo.distill.trainer import checkpoint_complete

    def cfg(name):
        return config_from_dict(_config(cls_setup, tmp_path / name, loss={"metric": "proj_mse", "projector_lr": 5e-3},
                                        trainer={"max_steps": 6, "save_steps": 2, "eval_strategy": "no"}))

    run_distillation(cfg("straight"), verbose=False)
    for victim in ("checkpoint-4/.feature_loss.pt", "checkpoint-4/optimizer.pt"):
        name = victim.split("/")[1].strip(".")
        monkeypatch.setattr(torch, "save", _full_disk_save(victim, torch.save))
        with pytest.raises(OSError) as info:
            run_distillation(cfg(name), verbose=False)
        monkeypatch.undo()
        assert info.value.errno == errno.ENOSPC
        ck = tmp_path / name / "checkpoint-4"
        assert not (ck / "trainer_state.json").exists() and not checkpoint_complete(ck, True)
        assert not (ck / "feature_loss.pt").exists() or name == "optimizer.pt"
        assert not [p.name for p in ck.iterdir() if p.name.endswith(".tmp")]
        assert checkpoint_complete(tmp_path / name / "checkpoint-2", True)
        trained = _StepCounter()
        with pytest.warns(UserWarning, match=r"--resume: skipping incomplete checkpoint\(s\) checkpoint-4 in "):
            result = run_distillation(cfg(name), resume=True, callbacks=[trained], verbose=False)
        assert result.trainer.state.global_step == 6 and trained.steps == [3, 4, 5, 6]  # from checkpoint-2
        assert checkpoint_complete(ck, True)
        torch.load(ck / "optimizer.pt")  # rewritten whole by the resumed run
        _same_final(tmp_path / name, tmp_path / "straight")


def test_disk_full_while_saving_the_teacher_cache(cls_setup, tmp_path, monkeypatch):
    """TeacherCache.save hits ENOSPC half-way: no cache file (nor temporary file) is left, so the next run rebuilds
    the cache and uses it."""
    from repgeo.distill import TeacherCache

    cfg = config_from_dict(_config(cls_setup, tmp_path / "run", cache={"enabled": True}, loss={"metric": "cka"},
                                   trainer={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"}))
    monkeypatch.setattr(torch, "save", _full_disk_save("teacher_cache.pt", torch.save))
    with pytest.raises(OSError) as info:
        build_trainer(cfg, verbose=False)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert [p.name for p in (tmp_path / "run").iterdir() if "cache" in p.name] == []
    trainer, _ = build_trainer(cfg, verbose=False)
    assert trainer.teacher_cache is not None
    saved = TeacherCache.load(tmp_path / "run" / "teacher_cache.pt", trainer.teacher_cache.meta)
    assert saved is not None and len(saved.logits) == len(trainer.train_dataset)


def test_relative_alpha_is_alpha_over_the_initial_feature_loss(cls_setup, tmp_path):
    """``loss.alpha_relative``: alpha_eff = alpha / (feature loss of the untrained student on the first training
    examples, eval mode), recorded in alpha.json; checked against the loss recomputed here batch by batch."""
    from repgeo.distill.alpha import initial_feature_loss

    cfg = config_from_dict(_config(cls_setup, tmp_path / "rel", loss={"metric": "fg", "alpha": 0.5,
                                                                      "alpha_relative": True},
                                   trainer={"max_steps": 1, "save_strategy": "no"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    info = json.loads((tmp_path / "rel" / "alpha.json").read_text())
    items = [trainer.train_dataset[i] for i in range(min(128, len(trainer.train_dataset)))]
    bs = trainer.args.per_device_train_batch_size
    trainer.model.eval()
    values, weights = [], []
    with torch.no_grad():
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            if len(chunk) < 2:
                continue
            batch = trainer.task.collate(chunk)
            batch.pop("example_index")
            t = trainer.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                output_hidden_states=True)
            s = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=True)
            feats = trainer.feature_loss.teacher_features(t.hidden_states, batch["attention_mask"], None)
            values.append(float(trainer.feature_loss(feats, s.hidden_states, batch["attention_mask"], None).total))
            weights.append(len(chunk))
    expected = sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
    assert info["feature_loss_init"] == pytest.approx(expected, rel=1e-6) and expected > 0
    assert info["alpha_eff"] == pytest.approx(0.5 / expected) and trainer.alpha == pytest.approx(info["alpha_eff"])
    assert initial_feature_loss(trainer) == pytest.approx(expected, rel=1e-6)  # reproducible: no dropout


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alpha_schedule_decays_the_weight_step_by_step(cls_setup, tmp_path, schedule):
    from repgeo.distill.alpha import schedule_factor

    cfg = config_from_dict(_config(cls_setup, tmp_path / schedule, loss={"metric": "cka", "alpha": 2.0,
                                                                         "alpha_schedule": schedule},
                                   trainer={"max_steps": 4, "save_strategy": "no", "eval_strategy": "no"}))
    trainer, _ = build_trainer(cfg, verbose=False)
    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(trainer.alpha)

    trainer.add_callback(Record())  # after the schedule's callback: sees the value the step uses
    trainer.train()
    expected = [2.0 * schedule_factor(schedule, k, 4) for k in range(4)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(2.0) and seen[-1] < seen[0]
    assert schedule_factor("linear", 4, 4) == 0.0 and schedule_factor("cosine", 2, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="alpha schedule must be one of"):
        schedule_factor("exponential", 0, 1)


def test_a_bad_batch_after_the_first_stops_training_at_the_next_log(cls_setup, tmp_path):
    """After the eagerly checked first batch the feature loss defers its input checks (no host syncs); the trainer
    evaluates them at every log, so a later constant (zero) student layer stops the run instead of training on."""
    cfg = config_from_dict(_config(cls_setup, tmp_path / "run", loss={"metric": "procrustes", "alpha": 1.0},
                                   trainer={"max_steps": 6, "eval_strategy": "no", "save_strategy": "no",
                                            "logging_steps": 2}))
    trainer, _ = build_trainer(cfg, verbose=False)
    calls = {"n": 0}

    def zero_after_two_calls(module, args, output):
        calls["n"] += 1
        if calls["n"] <= 2:
            return output
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]), *output[1:])
        return torch.zeros_like(output)

    layer = trainer.model.base_model.encoder.layer[0]
    layer.register_forward_hook(zero_after_two_calls, prepend=True)  # before the hidden-states recorder
    with pytest.raises(ValueError, match=r"feature loss at or before step 4: .*zero after preprocessing"):
        trainer.train()
    assert trainer.state.global_step == 4  # trained no further than the log that saw the bad batch
