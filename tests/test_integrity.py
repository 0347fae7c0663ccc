"""Integrity of every file repgeo reuses (issue 18): stale collections, damaged checkpoints, stale or damaged teacher
caches, damaged assets and demo-teacher caches, concurrent writers, and bad values refused before any work.

Faults are injected for real (a flipped byte, a flipped float exponent inside a safetensors file, a truncated file, a
teacher re-saved in place, a lock held by another writer) and every case must end either in the result of an
undisturbed run or in a one-line error that names the file; a refused run leaves no folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from repgeo._files import (
    FolderLock,
    FolderLockedError,
    IntegrityError,
    atomic_write_text,
    locked_output,
    verify_folder,
    write_manifest,
)
from repgeo.cli import main as cli_main
from repgeo.distill import build_trainer, config_from_dict, run_distillation
from repgeo.distill.config import ConfigError
from repgeo.distill.toy import make_toy_setup
from repgeo.distill.trainer import CHECKPOINT_MANIFEST, checkpoint_problem
from repgeo.probe import ShardSink, StaleCollectionError, collect, load_shards
from tests.integrity_faults import flip_byte, flip_exponent, truncate
from tests.test_distill_runs import _config, _same_final

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_line(err: str) -> str:
    """The single line of a command's stderr, progress bars aside (fails when there are more)."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    return lines[0]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ------------------------------------------------------------------------------------------- file helpers


def test_manifest_catches_truncation_always_and_edits_by_hash(tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(4096))
    (tmp_path / "sub").mkdir()
    atomic_write_text(tmp_path / "sub" / "b.txt", "hello\n")
    manifest = write_manifest(tmp_path, "files.json")
    assert sorted(manifest["files"]) == ["a.bin", "sub/b.txt"]  # the manifest does not list itself
    verify_folder(tmp_path, "files.json", deep=False)
    flip_byte(tmp_path / "a.bin", 100, keep_mtime=True)  # bit rot: same size and time, only a hash sees it
    verify_folder(tmp_path, "files.json", deep=False)
    with pytest.raises(IntegrityError, match=r"a\.bin fails its sha256 checksum"):
        verify_folder(tmp_path, "files.json", deep=True)
    flip_byte(tmp_path / "a.bin", 100)  # back to the original bytes, new mtime: hashed even when not deep
    verify_folder(tmp_path, "files.json", deep=False)
    flip_byte(tmp_path / "sub" / "b.txt", 0)
    with pytest.raises(IntegrityError, match=r"b\.txt fails its sha256"):
        verify_folder(tmp_path, "files.json", deep=False)
    truncate(tmp_path / "a.bin")
    with pytest.raises(IntegrityError, match=r"a\.bin is 2048 bytes, 4096 were written"):
        verify_folder(tmp_path, "files.json", deep=False)


def test_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path):
    with FolderLock(tmp_path, "distillation run"):
        with pytest.raises(FolderLockedError, match=rf"another distillation run \(pid {os.getpid()}\)"):
            FolderLock(tmp_path, "distillation run").acquire()
    assert not (tmp_path / ".lock").exists()  # released and removed
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout.strip())  # a killed writer's lock file: nobody holds the flock
    with FolderLock(tmp_path, "audit") as lock:
        assert lock.path.read_text() == str(os.getpid())


def test_locked_output_refuses_a_file_and_removes_a_folder_it_created_for_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"--out '.*file/sub': '.*file' is an existing file"):
        with locked_output(tmp_path / "file" / "sub", "audit", "--out"):
            pass
    with locked_output(tmp_path / "new" / "deeper", "audit"):
        pass  # wrote nothing
    assert not (tmp_path / "new").exists()
    with locked_output(tmp_path / "kept", "audit") as out:
        (out / "report.md").write_text("r")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["report.md"]


# ------------------------------------------------------------------------------------------- collection


def _bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                                vocab_size=60)).eval()


def _corpus(n_batches: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(5, 60, (4, 7), generator=g),
             "attention_mask": torch.ones(4, 7, dtype=torch.long)} for _ in range(n_batches)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_shorter_corpus_into_a_stored_collection_is_refused_or_started_fresh(tmp_path):
    model, long, short = _bert(), _corpus(6), _corpus(6)[:3]  # the short corpus is the first half of the long one
    folder = tmp_path / "acts"
    collect(model, long, [1], "mean", ShardSink(folder), progress=False)
    before = _files(folder)
    with pytest.raises(StaleCollectionError, match=r"acts holds 6 batches but this input has only 3 .*fresh=True"):
        collect(model, short, [1], "mean", ShardSink(folder), progress=False)
    assert _files(folder) == before  # nothing written, the lock released
    with pytest.raises(StaleCollectionError, match=r"differing keys \['layers'\]"):
        collect(model, long, [2], "mean", ShardSink(folder), progress=False)
    reader = collect(model, short, [1], "mean", ShardSink(folder, fresh=True), progress=False)
    assert reader.num_batches == 3 and reader.complete
    reference = collect(model, short, [1], "mean", ShardSink(tmp_path / "ref"), progress=False)
    got, want = load_shards(folder), load_shards(tmp_path / "ref")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    assert reference.manifest["shards"] == reader.manifest["shards"]


# ------------------------------------------------------------------------------------------- distillation


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_toy_setup(tmp_path_factory.mktemp("integrity"), "classification", n_train=16, n_eval=8,
                          hidden_size=16, num_layers=2)


def _data(setup, out: Path, **sections) -> dict:
    base = {"loss": {"metric": "proj_mse", "projector_lr": 5e-3},
            "trainer": {"max_steps": 4, "save_steps": 2, "eval_strategy": "no", "per_device_train_batch_size": 4}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return _config(setup, out, **base)


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    """An undisturbed 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run_distillation(config_from_dict(_data(setup, out)), verbose=False)
    return out


@pytest.mark.parametrize("victim, fault", [
    ("feature_loss.pt", flip_byte), ("model.safetensors", flip_exponent), ("optimizer.pt", truncate),
    ("scheduler.pt", flip_byte), ("rng_state.pth", truncate), ("trainer_state.json", flip_byte),
])
def test_every_damaged_checkpoint_file_is_named(straight, tmp_path, victim, fault):
    ck = tmp_path / "checkpoint-4"
    shutil.copytree(straight / "checkpoint-4", ck)
    assert checkpoint_problem(ck, with_projectors=True) is None
    fault(ck / victim)
    problem = checkpoint_problem(ck, with_projectors=True)
    assert problem is not None and str(ck / victim) in problem and "\n" not in problem
    (ck / CHECKPOINT_MANIFEST).unlink()  # a checkpoint whose writing stopped before its manifest
    assert "repgeo_checkpoint.json is missing" in checkpoint_problem(ck, with_projectors=True)


def _copy_run(straight: Path, dest: Path) -> Path:
    shutil.copytree(straight, dest)
    shutil.rmtree(dest / "final")
    (dest / "metrics.json").unlink(missing_ok=True)
    return dest


def test_resume_falls_back_from_a_damaged_checkpoint_to_the_uninterrupted_result(setup, straight, tmp_path, capsys):
    out = _copy_run(straight, tmp_path / "run")
    flip_exponent(out / "checkpoint-4" / "model.safetensors")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_data(setup, out)))
    code, err = run_cli(["distill", "--config", str(path), "--resume"], capsys)
    assert code == 0
    warning = one_line(err)
    assert warning.startswith("repgeo distill: warning: --resume: skipping incomplete checkpoint(s) checkpoint-4 in ")
    assert f"{out / 'checkpoint-4' / 'model.safetensors'} fails its sha256 checksum" in warning
    assert warning.endswith("resuming from checkpoint-2")
    _same_final(out, straight)
    assert checkpoint_problem(out / "checkpoint-4", with_projectors=True) is None  # rewritten by the resumed run


def test_resume_with_no_intact_checkpoint_exits_2_naming_the_files(setup, straight, tmp_path, capsys):
    out = _copy_run(straight, tmp_path / "run")
    truncate(out / "checkpoint-4" / "feature_loss.pt")
    flip_byte(out / "checkpoint-2" / "optimizer.pt")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_data(setup, out)))
    code, err = run_cli(["distill", "--config", str(path), "--resume"], capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"repgeo distill: --resume: no intact checkpoint in {out}: checkpoint-4: ")
    assert "feature_loss.pt is" in line and "checkpoint-2: " in line and "optimizer.pt fails its sha256" in line
    assert line.endswith("; run without --resume to start over")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # nothing written


def test_two_runs_into_one_output_dir(setup, tmp_path, capsys):
    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_data(setup, out)))
    out.mkdir()
    with FolderLock(out, "distillation run"):  # another run is writing there
        with pytest.raises(FolderLockedError):
            run_distillation(config_from_dict(_data(setup, out)), verbose=False)
        code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2
    assert one_line(err).startswith(f"repgeo distill: {out} is being written by another distillation run (pid ")
    assert sorted(p.name for p in out.iterdir()) == []


# ------------------------------------------------------------------------------------------- teacher cache


def _cache_cfg(setup, out: Path, teacher: Path | None = None):
    sections = {"cache": {"enabled": True}, "loss": {"metric": "cka"}}
    if teacher is not None:
        sections["teacher"] = {"path": str(teacher)}
    return config_from_dict(_data(setup, out, **sections))


def _cache_rows(trainer) -> torch.Tensor:
    c = trainer.teacher_cache
    rows = [*c.logits, *[r for layer in c.features.values() for r in layer]]
    return torch.cat([r.flatten() for r in rows])


def test_teacher_cache_follows_the_teacher_content_and_rebuilds_a_damaged_file(setup, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(setup["teacher"], teacher)
    out = tmp_path / "run"
    first, _ = build_trainer(_cache_cfg(setup, out, teacher), verbose=False)
    rows = _cache_rows(first)
    cache_file = out / "teacher_cache.pt"
    assert json.loads((out / "teacher_cache.pt.json").read_text())["meta"]["teacher_sha256"]
    again, _ = build_trainer(_cache_cfg(setup, out, teacher), verbose=False)  # reused: same rows
    assert torch.equal(_cache_rows(again), rows)

    for fault in (flip_byte, truncate):
        fault(cache_file)
        with pytest.warns(UserWarning, match=rf"teacher cache not reused, rebuilt: {cache_file}"):
            rebuilt, _ = build_trainer(_cache_cfg(setup, out, teacher), verbose=False)
        assert torch.equal(_cache_rows(rebuilt), rows)

    # the teacher re-saved in place (same path, same file names and sizes, new weights): a new cache
    model = type(first.teacher).from_pretrained(teacher)
    with torch.no_grad():
        next(iter(model.parameters())).mul_(1.5)
    model.save_pretrained(teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a changed input is no damage: rebuilt without a warning
        changed, _ = build_trainer(_cache_cfg(setup, out, teacher), verbose=False)
    fresh, _ = build_trainer(_cache_cfg(setup, tmp_path / "fresh", teacher), verbose=False)
    assert not torch.allclose(_cache_rows(changed), rows)
    assert torch.equal(_cache_rows(changed), _cache_rows(fresh))


# ------------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("override, message", [
    ("trainer.max_steps=ten", "trainer.max_steps: expected an integer, got 'ten'"),
    ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size: must be >= 1, got 0"),
    ("trainer.learning_rate=-1", "trainer.learning_rate: must be > 0, got -1"),
    ("trainer.max_steps=0", "trainer.max_steps: must be >= 1, got 0 (a value <= 0 means"),
    ("trainer.max_steps=-5", "trainer.max_steps: must be >= 1, got -5"),
    ("trainer.lr_scheduler_type=cosin", "trainer.lr_scheduler_type: unknown value 'cosin'; did you mean 'cosine'?"),
    ("trainer.adam_beta2=1.0", "trainer.adam_beta2: must be in [0, 1), got 1.0"),
    ("trainer.use_cpu=maybe", "trainer.use_cpu: expected true or false, got 'maybe'"),
])
def test_bad_trainer_values_exit_2_before_any_file(setup, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_data(setup, out)))
    code, err = run_cli(["distill", "--config", str(path), override], capsys)
    assert code == 2
    assert one_line(err).startswith(f"repgeo distill: configuration error: {message}")
    assert not out.exists()


def test_max_steps_below_one_is_fine_when_epochs_are_asked_for(setup, tmp_path):
    cfg = config_from_dict(_data(setup, tmp_path / "run", trainer={"max_steps": -1, "num_train_epochs": 2}))
    assert cfg.trainer["max_steps"] == -1


def test_a_late_refusal_leaves_no_folder_and_a_file_as_output_dir_is_refused(setup, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"loss\.layer_map"):  # found only once the models are loaded
        run_distillation(config_from_dict(_data(setup, out, loss={"layer_map": {1: 9}})), verbose=False)
    assert not out.exists()
    (tmp_path / "taken").write_text("a file")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_data(setup, tmp_path / "taken")))
    code, err = run_cli(["distill", "--config", str(path)], capsys)
    assert code == 2 and "output_dir" in one_line(err) and "is an existing file" in err


def test_distill_counts_the_texts_it_cuts(setup, tmp_path):
    import pandas as pd
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(setup["teacher"])
    texts = pd.read_csv(setup["train"])["text"].tolist()
    max_length = 7
    expected = sum(len(tok(t)["input_ids"]) > max_length for t in texts)
    assert 0 < expected < len(texts)
    cfg = config_from_dict(_data(setup, tmp_path / "run", data={"max_length": max_length}))
    with pytest.warns(UserWarning, match=rf"^{expected} of {len(texts)} training texts were cut to "
                                         rf"data\.max_length={max_length} tokens"):
        trainer, _ = build_trainer(cfg, verbose=False)
    assert max(len(x["input_ids"]) for x in trainer.train_dataset.items) == max_length


# ------------------------------------------------------------------------------------------- audit


def _audit_argv(setup, tmp_path: Path, *extra: str, out: Path | None = None) -> list[str]:
    data = tmp_path / "texts.txt"
    data.write_text("good movie\nbad film\nfine show\nawful plot\n")
    return ["audit", "--teacher", str(setup["teacher"]), "--student", str(setup["teacher"]), "--data", str(data),
            "--out", str(out or tmp_path / "out"), "--n-perm", "0", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--n-folds", "1"], "--n-folds must be 0 (no intervals) or >= 2"),
    (["--max-length", "1000"], "--max-length 1000 exceeds the 128 positions of --teacher"),
])
def test_audit_bad_values_exit_2_before_work(setup, tmp_path, capsys, extra, message):
    code, err = run_cli(_audit_argv(setup, tmp_path, *extra), capsys)
    assert code == 2 and one_line(err).startswith(f"repgeo audit: {message}")
    assert not (tmp_path / "out").exists()


def test_audit_output_that_is_a_file_or_locked_is_refused(setup, tmp_path, capsys):
    (tmp_path / "out.txt").write_text("x")
    code, err = run_cli(_audit_argv(setup, tmp_path, out=tmp_path / "out.txt"), capsys)
    assert code == 2 and "out.txt' is an existing file" in one_line(err)
    busy = tmp_path / "busy"
    busy.mkdir()
    with FolderLock(busy, "audit"):
        code, err = run_cli(_audit_argv(setup, tmp_path, out=busy), capsys)
    assert code == 2 and "is being written by another audit (pid" in one_line(err)
    assert list(busy.iterdir()) == []


def test_an_audit_refused_on_its_data_leaves_no_out_folder(setup, tmp_path, capsys):
    argv = _audit_argv(setup, tmp_path, out=tmp_path / "new" / "out")
    argv[argv.index("--data") + 1] = str(tmp_path / "missing.txt")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "missing.txt" in err
    assert not (tmp_path / "new").exists()


def test_demo_out_that_is_a_file_or_locked_is_refused_before_work(tmp_path, capsys):
    (tmp_path / "report").write_text("x")
    code, err = run_cli(["demo", "--fast", "--out", str(tmp_path / "report"), "--no-progress"], capsys)
    assert code == 2 and one_line(err).startswith(f"repgeo demo: --out '{tmp_path / 'report'}'")
    busy = tmp_path / "busy"
    busy.mkdir()
    with FolderLock(busy, "demo"):
        code, err = run_cli(["demo", "--fast", "--out", str(busy), "--no-progress"], capsys)
    assert code == 2 and "is being written by another demo (pid" in one_line(err)


# ------------------------------------------------------------------------------------------- assets


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A private copy of the repgeo cache's Rotten Tomatoes wheel (the asset is re-extracted from it)."""
    from repgeo import assets

    wheel = assets.cache_dir() / "wheels" / assets.ASSETS["rotten_tomatoes"].wheel_name
    if not wheel.is_file():
        pytest.skip("run `repgeo fetch-assets` first")
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    shutil.copy(wheel, tmp_path / "cache" / "wheels")
    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets.registry, "_installed", lambda asset: None)
    return tmp_path / "cache"


def test_a_damaged_extracted_asset_is_named_with_the_command_that_repairs_it(private_cache):
    from repgeo import assets
    from repgeo._files import sha256_file

    asset = assets.ASSETS["rotten_tomatoes"]
    path = assets.fetch("rotten_tomatoes", download=True)
    assert (private_cache / "extracted" / "rotten_tomatoes" / ".repgeo_files.json").is_file()
    for fault, message in ((flip_byte, "fails its sha256 checksum"), (truncate, "bytes, ")):
        fault(path)
        with pytest.raises(assets.AssetError) as info:
            assets.fetch("rotten_tomatoes")
        text = str(info.value)
        assert "\n" not in text and str(path) in text and message in text
        assert "`repgeo fetch-assets --force`" in text
        assert assets.fetch("rotten_tomatoes", force=True) == path
        assert sha256_file(path) == asset.checksums[0][1]
    flip_byte(path, keep_mtime=True)  # bit rot (same size and time): a file this small is hashed on every use
    with pytest.raises(assets.AssetError, match="fails its sha256"):
        assets.fetch("rotten_tomatoes")


def test_an_asset_extracted_without_a_manifest_is_extracted_again(private_cache):
    from repgeo import assets

    path = assets.fetch("rotten_tomatoes", download=True)
    (private_cache / "extracted" / "rotten_tomatoes" / ".repgeo_files.json").unlink()
    flip_byte(path)
    assert assets.fetch("rotten_tomatoes") == path  # an older repgeo's extraction: redone from the checked wheel
    assert len(assets.rotten_tomatoes()) == 12808 - 56


def test_a_damaged_archive_names_the_file_and_the_fix(private_cache, monkeypatch, tmp_path):
    from repgeo import assets

    damaged = tmp_path / "rt.csv.bz2"
    shutil.copy(assets.fetch("rotten_tomatoes", download=True), damaged)
    flip_byte(damaged, 2000)
    monkeypatch.setattr(assets.demo, "fetch", lambda name, download=False: damaged)
    with pytest.raises(assets.AssetError, match=rf"{damaged} cannot be read \(OSError: Invalid data stream\); run "
                                                r"`repgeo fetch-assets --force`"):
        assets.rotten_tomatoes()


# ------------------------------------------------------------------------------------------- demo teacher cache


def test_demo_teacher_cache_is_verified_and_refit_when_damaged(setup, tmp_path):
    from repgeo.demo.data import load_data
    from repgeo.demo.settings import settings_for
    from repgeo.demo.teacher import prepare_teacher

    data = load_data(str(setup["train"]), n_train=12, n_test=4, seed=0)
    s = settings_for("fast", teacher_steps=2, teacher_batch=4, probe_init=0, max_length=16, threads=1)
    logs: list[str] = []
    first = prepare_teacher(str(setup["teacher"]), data, s, cache_dir=tmp_path, progress=False, log=logs.append)
    assert not first.cached and (first.path / "repgeo_files.json").is_file()
    weights = first.path / "model.safetensors"
    reference = {k: v.clone() for k, v in load_file(weights).items()}  # not a view of the file
    flip_exponent(weights)
    again = prepare_teacher(str(setup["teacher"]), data, s, cache_dir=tmp_path, progress=False, log=logs.append)
    assert any(f"{weights} fails its sha256 checksum" in m and "fine-tuning it again" in m for m in logs), logs
    assert not again.cached and again.path == first.path
    refit = load_file(weights)
    assert all(torch.equal(refit[k], reference[k]) for k in reference)  # the same teacher, fine-tuned again
    third = prepare_teacher(str(setup["teacher"]), data, s, cache_dir=tmp_path, progress=False, log=logs.append)
    assert third.cached and np.array_equal(third.predictions, first.predictions)


def test_resume_refuses_training_data_changed_in_place(setup, tmp_path):
    train = tmp_path / "train.csv"
    shutil.copy(setup["train"], train)
    data = _data(setup, tmp_path / "run", data={"train": str(train)}, trainer={"max_steps": 2})
    run_distillation(config_from_dict(data), verbose=False)
    with open(train, "a") as f:
        f.write("an extra review that was not there,1\n")
    with pytest.raises(IntegrityError, match=rf"^--resume: the content of data\.train '{train}' changed since the run"):
        run_distillation(config_from_dict(data), resume=True, verbose=False)


# ------------------------------------------------------------------------------------------- random faults (--slow)

REPO = Path(__file__).resolve().parents[1]
_ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}

_COLLECTOR = """
import sys, torch
torch.set_num_threads(1)
from tests.test_integrity import _bert, _corpus
from repgeo.probe import FolderLockedError, ShardSink, collect
model, batches = _bert(), _corpus(int(sys.argv[2]))
print("ready", flush=True)
try:
    collect(model, batches, [1, "encoder.layer.0.output"], "tokens", ShardSink(sys.argv[1]), progress=False)
except FolderLockedError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""

_DEMO_TEACHER = """
import sys, torch
torch.set_num_threads(1)
from tests.test_integrity import _demo_inputs
from repgeo.demo.teacher import prepare_teacher
source, data, settings = _demo_inputs(sys.argv[1], sys.argv[2])
print("ready", flush=True)
prepare_teacher(source, data, settings, cache_dir=sys.argv[3], progress=False, log=lambda m: None)
"""

_FETCH = """
from repgeo import assets
print("ready", flush=True)
assets.fetch("rotten_tomatoes", download=True, force=True)
"""


def _demo_inputs(teacher: str, train: str):
    from repgeo.demo.data import load_data
    from repgeo.demo.settings import settings_for

    data = load_data(train, n_train=12, n_test=4, seed=0)
    return teacher, data, settings_for("fast", teacher_steps=3, teacher_batch=4, max_length=16, threads=1)


class _Trials:
    """Outcome of each fault trial: ``identical`` (finished with the undisturbed result), ``refused`` (stopped with
    a one-line error naming a file) or ``silent`` (anything else: a different result, a traceback, several lines)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, area: str, fault: str, outcome: str, detail: str = "") -> None:
        self.rows.append((area, fault, outcome, detail))

    def refusal(self, area: str, fault: str, message: str, must_name: Path) -> None:
        lines = [ln for ln in message.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
        ok = len(lines) == 1 and str(must_name) in lines[0] and "Traceback" not in message
        self.add(area, fault, "refused" if ok else "silent", message[-2000:])

    def compare(self, area: str, fault: str, same: bool, detail: str = "") -> None:
        self.add(area, fault, "identical" if same else "silent", detail)


def _spawn(code_or_argv: str | list[str], *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-c", code_or_argv, *args] if isinstance(code_or_argv, str) else code_or_argv
    return subprocess.Popen(argv, cwd=REPO, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after_ready(proc: subprocess.Popen, delay: float) -> None:
    """Wait for the child's ``ready`` line, then SIGKILL it ``delay`` seconds later (if it still runs)."""
    import signal
    import time

    proc.stdout.readline()
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)


def _kill_at_checkpoint(proc: subprocess.Popen, folder: Path, delay: float, timeout: float = 300) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``folder`` appears (a checkpoint being written)."""
    import signal
    import time

    end = time.monotonic() + timeout
    while proc.poll() is None and not folder.exists() and time.monotonic() < end:
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)


def _cli(argv: list[str]) -> tuple[int, str]:
    """``repgeo ARGV`` in this process: (exit status, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        code = cli_main(argv)
    return code, err.getvalue()


def _same_files(a: Path, b: Path) -> bool:
    return _files(a) == _files(b)


def _final_equal(a: Path, b: Path) -> bool:
    if not (a / "final" / "model.safetensors").is_file():
        return False
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    pa, pb = torch.load(a / "final" / "feature_loss.pt"), torch.load(b / "final" / "feature_loss.pt")
    return (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
            and pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa))


def _collection_trials(t: _Trials, rnd, root: Path) -> None:
    n = 40
    model, corpus = _bert(), _corpus(n)
    layers = [1, "encoder.layer.0.output"]
    ref = root / "ref"
    collect(model, corpus, layers, "tokens", ShardSink(ref), progress=False)

    def resume(folder: Path, batches=corpus) -> None:
        collect(model, batches, layers, "tokens", ShardSink(folder), progress=False)

    for i in range(4):  # SIGKILL at a random point, then resume
        folder = root / f"kill{i}"
        _kill_after_ready(_spawn(_COLLECTOR, str(folder), str(n)), rnd.uniform(0.0, 0.4))
        stored = len(json.loads((folder / "manifest.json").read_text())["shards"]) if (
            folder / "manifest.json").is_file() else 0
        resume(folder)
        t.compare("collection", f"SIGKILL after {stored}/{n} batches + resume", _same_files(folder, ref))
    for i, fault in enumerate([flip_byte, flip_byte, truncate, truncate]):  # a damaged shard or manifest
        folder = root / f"fault{i}"
        shutil.copytree(ref, folder)
        shards = sorted(folder.glob("shard-*.safetensors"))
        victim = rnd.choice(shards) if fault is flip_byte else rnd.choice([*shards, folder / "manifest.json"])
        fault(victim)
        try:
            resume(folder)
            t.compare("collection", fault.__name__, _same_files(folder, ref))
        except (ValueError, OSError) as exc:
            t.refusal("collection", fault.__name__, f"{type(exc).__name__}: {exc}", folder)
    for i in range(2):  # stale input: a shorter corpus, or one batch changed
        folder = root / f"stale{i}"
        shutil.copytree(ref, folder)
        if i == 0:
            batches = corpus[: rnd.randrange(5, n)]
        else:
            batches = [dict(b) for b in corpus]
            j = rnd.randrange(n)
            batches[j] = {**batches[j], "input_ids": batches[j]["input_ids"].flip(1)}
        try:
            resume(folder, batches)
            t.add("collection", "stale input", "silent", "a changed corpus was accepted")
        except StaleCollectionError as exc:
            t.refusal("collection", "stale input", str(exc), folder)
        assert _same_files(folder, ref)
    for i in range(2):  # two collectors into one folder at once
        folder = root / f"twice{i}"
        procs = [_spawn(_COLLECTOR, str(folder), str(n)) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        refused = [err for code, err in results if code == 2]
        if [c for c, _ in results if c not in (0, 2)] or not _same_files(folder, ref):
            t.add("collection", "concurrent writer", "silent", str(results)[-2000:])
        elif refused:
            t.refusal("collection", "concurrent writer", refused[0], folder)
        else:
            t.compare("collection", "concurrent writer", True)


def _distill_trials(t: _Trials, rnd, root: Path, setup) -> None:
    def config(out: Path, train: Path | None = None) -> Path:
        data = _data(setup, out, trainer={"max_steps": 10, "save_steps": 2})
        if train is not None:
            data["data"]["train"] = str(train)
        path = out.parent / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def cli(path: Path, *extra: str) -> subprocess.Popen:
        return _spawn([sys.executable, "-m", "repgeo", "distill", "--config", str(path), *extra])

    ref = root / "ref"
    proc = cli(config(ref))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    def user_resume(out: Path, path: Path, trial: str) -> None:
        """What a user does after a crash: --resume when a checkpoint is there, else run again."""
        resume = any(out.glob("checkpoint-*"))
        trial += " + resume" if resume else " + rerun"
        code, err = _cli(["distill", "--config", str(path), *(["--resume"] if resume else [])])
        if code == 0:
            t.compare("distillation", trial, _final_equal(out, ref), err[-2000:])
        elif code == 2:
            t.refusal("distillation", trial, err, out)
        else:
            t.add("distillation", trial, "silent", err[-2000:])

    for i in range(5):  # SIGKILL during training or in the middle of writing a checkpoint
        out = root / f"kill{i}"
        path = config(out)
        step, delay = rnd.choice([2, 4, 6, 8]), rnd.uniform(0.0, 0.1)
        _kill_at_checkpoint(cli(path), out / f"checkpoint-{step}", delay)
        user_resume(out, path, f"SIGKILL {delay:.2f} s after checkpoint-{step} appeared")
    faults = [("byte flip", flip_byte)] * 3 + [("exponent flip", flip_exponent)] * 2 + [("truncation", truncate)] * 3
    for i, (name, fault) in enumerate(faults):  # a damaged file in one checkpoint (or, once, in every one)
        out = root / f"fault{i}"
        shutil.copytree(ref, out)
        shutil.rmtree(out / "final")
        checkpoints = sorted(out.glob("checkpoint-*"))
        for ck in checkpoints if i == 2 else [rnd.choice(checkpoints)]:
            files = [p for p in ck.iterdir() if p.is_file()]
            victim = ck / "model.safetensors" if fault is flip_exponent else rnd.choice(files)
            fault(victim)
        user_resume(out, config(out), name)
    for i in range(2):  # two runs into one output_dir at once
        out = root / f"twice{i}"
        path = config(out)
        procs = [cli(path) for _ in range(2)]
        results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        refused = [err for code, err in results if code == 2]
        if [c for c, _ in results if c not in (0, 2)] or not _final_equal(out, ref):
            t.add("distillation", "concurrent writer", "silent", str(results)[-2000:])
        elif refused:
            t.refusal("distillation", "concurrent writer", refused[0], out)
        else:
            t.compare("distillation", "concurrent writer", True)
    for i in range(2):  # stale input: the training data edited in place after a crash
        out = root / f"stale{i}"
        train = root / f"stale{i}.csv"
        shutil.copy(setup["train"], train)
        path = config(out, train)
        _kill_at_checkpoint(cli(path), out / "checkpoint-4", rnd.uniform(0.0, 0.1))
        with open(train, "a") as f:
            f.write("a review added later,1\n")
        code, err = _cli(["distill", "--config", str(path), "--resume"])
        if code == 2:
            t.refusal("distillation", "stale input", err, train)
        else:
            t.add("distillation", "stale input", "silent", f"exit {code}: {err[-2000:]}")


def _teacher_cache_trials(t: _Trials, rnd, root: Path, setup) -> None:
    teacher = root / "teacher"
    shutil.copytree(setup["teacher"], teacher)
    rows = _cache_rows(build_trainer(_cache_cfg(setup, root / "ref", teacher), verbose=False)[0])
    faults = [(flip_byte, "teacher_cache.pt")] * 2 + [(truncate, "teacher_cache.pt")] * 2 + [
        (flip_byte, "teacher_cache.pt.json"), (truncate, "teacher_cache.pt.json")]
    for i, (fault, name) in enumerate(faults):
        out = root / f"fault{i}"
        shutil.copytree(root / "ref", out)
        fault(out / name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = _cache_rows(build_trainer(_cache_cfg(setup, out, teacher), verbose=False)[0])
        said = [str(w.message) for w in caught if "teacher cache" in str(w.message)]
        t.compare("teacher cache", f"{fault.__name__} {name}", torch.equal(got, rows) and all(
            "\n" not in m for m in said), "; ".join(said))
    for i in range(2):  # the teacher re-saved in place with other weights
        moved = root / f"teacher{i}"
        shutil.copytree(setup["teacher"], moved)
        out = root / f"resaved{i}"
        build_trainer(_cache_cfg(setup, out, moved), verbose=False)
        model = transformers_model(moved)
        with torch.no_grad():
            rnd_param = list(model.parameters())[rnd.randrange(len(list(model.parameters())))]
            rnd_param.add_(0.05)
        model.save_pretrained(moved)
        got = _cache_rows(build_trainer(_cache_cfg(setup, out, moved), verbose=False)[0])
        fresh = _cache_rows(build_trainer(_cache_cfg(setup, root / f"fresh{i}", moved), verbose=False)[0])
        t.compare("teacher cache", "teacher re-saved in place", torch.equal(got, fresh))


def transformers_model(folder: Path):
    import transformers

    return transformers.AutoModelForSequenceClassification.from_pretrained(folder)


def _asset_trials(t: _Trials, rnd, root: Path, monkeypatch) -> None:
    from repgeo import assets
    from repgeo._files import sha256_file

    wheel = assets.cache_dir() / "wheels" / assets.ASSETS["rotten_tomatoes"].wheel_name
    expected = assets.ASSETS["rotten_tomatoes"].checksums[0][1]
    monkeypatch.setattr(assets.registry, "_installed", lambda asset: None)
    faults = [("byte flip", lambda p: flip_byte(p, rnd.randrange(p.stat().st_size))),
              ("byte flip, mtime kept", lambda p: flip_byte(p, rnd.randrange(p.stat().st_size), keep_mtime=True)),
              ("truncation", lambda p: truncate(p, rnd.uniform(0.1, 0.9))), ("truncation", truncate),
              ("manifest byte flip", None), ("byte flip", flip_byte)]
    for i, (name, fault) in enumerate(faults):
        cache = root / f"cache{i}"
        (cache / "wheels").mkdir(parents=True)
        shutil.copy(wheel, cache / "wheels")
        monkeypatch.setenv("REPGEO_CACHE", str(cache))
        path = assets.fetch("rotten_tomatoes", download=True)
        if fault is None:
            manifest = cache / "extracted" / "rotten_tomatoes" / ".repgeo_files.json"
            flip_byte(manifest, rnd.randrange(manifest.stat().st_size))
        else:
            fault(path)
        try:
            got = assets.fetch("rotten_tomatoes", download=True)
            t.compare("assets", name, sha256_file(got) == expected)
        except assets.AssetError as exc:
            t.refusal("assets", name, str(exc), cache)
    for i in range(2):  # SIGKILL during a (re-)extraction
        cache = root / f"kill{i}"
        (cache / "wheels").mkdir(parents=True)
        shutil.copy(wheel, cache / "wheels")
        monkeypatch.setenv("REPGEO_CACHE", str(cache))
        if i:
            assets.fetch("rotten_tomatoes", download=True)  # an extraction already there
        proc = subprocess.Popen([sys.executable, "-c", _FETCH], cwd=REPO, env={**_ENV, "REPGEO_CACHE": str(cache)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _kill_after_ready(proc, rnd.uniform(0.0, 0.3))
        try:
            got = assets.fetch("rotten_tomatoes", download=True)
            t.compare("assets", "SIGKILL during extraction", sha256_file(got) == expected)
        except assets.AssetError as exc:
            t.refusal("assets", "SIGKILL during extraction", str(exc), cache)


def _demo_trials(t: _Trials, rnd, root: Path, setup) -> None:
    from repgeo.demo.teacher import prepare_teacher

    source, data, settings = _demo_inputs(str(setup["teacher"]), str(setup["train"]))
    ref = prepare_teacher(source, data, settings, cache_dir=root / "ref", progress=False, log=lambda m: None)
    weights = {k: v.clone() for k, v in load_file(ref.path / "model.safetensors").items()}

    def check(cache: Path, name: str) -> None:
        logs: list[str] = []
        got = prepare_teacher(source, data, settings, cache_dir=cache, progress=False, log=logs.append)
        w = load_file(got.path / "model.safetensors")
        same = w.keys() == weights.keys() and all(torch.equal(w[k], weights[k]) for k in w)
        t.compare("demo teacher cache", name, same and np.array_equal(got.predictions, ref.predictions)
                  and all("\n" not in m for m in logs), "; ".join(logs))

    faults = [("exponent flip", lambda f: flip_exponent(f / "model.safetensors", index=rnd.randrange(64)))] * 3 + [
        ("byte flip", lambda f: flip_byte(rnd.choice([p for p in f.iterdir() if p.is_file()])))] * 2 + [
        ("truncation", lambda f: truncate(rnd.choice([p for p in f.iterdir() if p.is_file()])))] * 2
    for i, (name, fault) in enumerate(faults):
        cache = root / f"fault{i}"
        shutil.copytree(root / "ref", cache)
        fault(cache / ref.path.name)
        check(cache, name)
    cache = root / "kill"
    proc = _spawn(_DEMO_TEACHER, source, str(setup["train"]), str(cache))
    _kill_after_ready(proc, rnd.uniform(0.0, 2.0))
    check(cache, "SIGKILL while fine-tuning / caching")


@pytest.mark.slow
def test_random_faults_end_identical_or_with_one_line_error(setup, tmp_path, monkeypatch):
    """Random faults (SIGKILL at random points, byte flips, float-exponent flips, truncation, stale input,
    concurrent writers) over collection, distillation, the teacher cache, assets and the demo teacher cache: every
    trial must finish with the undisturbed result or stop with a one-line error naming the file."""
    import random

    seed = int(os.environ.get("REPGEO_FAULT_SEED", "18"))
    rnd = random.Random(seed)
    t = _Trials()
    for area, run in [("collection", lambda r: _collection_trials(t, rnd, r)),
                      ("distillation", lambda r: _distill_trials(t, rnd, r, setup)),
                      ("teacher_cache", lambda r: _teacher_cache_trials(t, rnd, r, setup)),
                      ("assets", lambda r: _asset_trials(t, rnd, r, monkeypatch)),
                      ("demo", lambda r: _demo_trials(t, rnd, r, setup))]:
        (tmp_path / area).mkdir()
        run(tmp_path / area)
    summary: dict[str, dict[str, int]] = {}
    for area, fault, outcome, _ in t.rows:
        summary.setdefault(area, {}).setdefault(outcome, 0)
        summary[area][outcome] += 1
        print(f"  {area:20s} {fault:55s} {outcome}")
    print(f"random fault trials (seed {seed}): {len(t.rows)}: {json.dumps(summary)}")
    silent = [r for r in t.rows if r[2] == "silent"]
    assert not silent, silent
    assert len(t.rows) >= 50
    assert {"collection", "distillation", "teacher cache", "assets", "demo teacher cache"} == set(summary)
