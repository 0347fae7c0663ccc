"""Tests for repgeo.probe sinks: on-disk shards (atomicity, resume after SIGKILL, checksums,
identity checks, locking), storage dtypes and the reader."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from repgeo.probe import (
    FolderLockedError,
    ShardCorruptionError,
    ShardReader,
    ShardSink,
    collect,
    load_shards,
    read_manifest,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


LAYERS = ["encoder.layer.0.output", -1]


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100)
    return BertModel(cfg).eval()


def make_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (3, 6), generator=g)
        mask = torch.ones(3, 6, dtype=torch.long)
        lengths = torch.randint(1, 7, (3,), generator=g)
        for r, ln in enumerate(lengths.tolist()):
            mask[r, ln:] = 0
        out.append({"input_ids": ids * mask, "attention_mask": mask})
    return out


def run(folder, batches, model=None, layers=LAYERS, pooling="tokens", **kw):
    sink = ShardSink(folder, **kw)
    return collect(model or tiny_bert(), batches, layers, pooling, sink=sink, progress=False), sink


def test_roundtrip_matches_memory_and_manifest(tmp_path):
    model, batches = tiny_bert(), make_batches(5)
    mem = collect(model, batches, LAYERS, "tokens", progress=False)
    reader, _ = run(tmp_path / "acts", batches, model, batches_per_shard=2)
    assert isinstance(reader, ShardReader) and reader.complete and reader.num_batches == 5
    got = reader.load()
    assert list(got) == ["encoder.layer.0.output", "hidden_states.2"]
    for k in mem:
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], mem[k])
    m = read_manifest(tmp_path / "acts")
    assert [s["batches"] for s in m["shards"]] == [[0, 2], [2, 4], [4, 5]]
    rows = [int(b["attention_mask"].sum()) for b in batches]
    assert [s["rows"]["hidden_states.2"] for s in m["shards"]] == [rows[0] + rows[1], rows[2] + rows[3], rows[4]]
    ident = m["identity"]
    assert ident["pooling"] == "tokens" and ident["dtype"] == "float32"
    assert ident["layers"] == ["encoder.layer.0.output", "hidden_states.2"]
    assert ident["model_class"].endswith("BertModel") and len(ident["weights_sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [
        "manifest.json", "shard-000000.safetensors", "shard-000001.safetensors", "shard-000002.safetensors",
    ]  # fmt: skip
    # per-layer selection and torch output
    only = load_shards(tmp_path / "acts", ["hidden_states.2"])
    assert list(only) == ["hidden_states.2"]
    with pytest.raises(KeyError, match="not stored"):
        reader.load(["nope"])
    # a second run on a complete folder computes nothing and changes nothing
    before = (tmp_path / "acts" / "manifest.json").read_bytes()
    _, sink2 = run(tmp_path / "acts", batches, model, batches_per_shard=2)
    assert sink2.skipped_batches == 5 and sink2.written_batches == 0
    assert (tmp_path / "acts" / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_storage_dtypes(tmp_path, dtype):
    model, batches = tiny_bert(), make_batches(2)
    mem = collect(model, batches, LAYERS, "mean", progress=False)
    reader, _ = run(tmp_path, batches, model, pooling="mean", dtype=dtype)
    tdt = getattr(torch, dtype)
    as_t = reader.load(as_torch=True)
    as_np = reader.load()
    for k in mem:
        assert as_t[k].dtype == tdt
        expected = torch.from_numpy(mem[k]).to(tdt)
        assert torch.equal(as_t[k], expected)
        assert as_np[k].dtype == (np.float16 if dtype == "float16" else np.float32)
        np.testing.assert_array_equal(as_np[k], expected.float().numpy())
    with pytest.raises(ValueError, match="storage dtype"):
        ShardSink(tmp_path / "x", dtype="int8")


def test_corrupted_and_truncated_shards_named(tmp_path):
    batches = make_batches(3)
    run(tmp_path, batches)
    shard = tmp_path / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardCorruptionError, match=r"shard-000001\.safetensors fails its sha256"):
        load_shards(tmp_path)
    with pytest.raises(ShardCorruptionError, match=r"shard-000001\.safetensors"):
        run(tmp_path, batches)  # resume verifies the stored shards too
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardCorruptionError, match=r"shard-000001\.safetensors is \d+ bytes.*truncated"):
        ShardReader(tmp_path).verify()
    shard.unlink()
    with pytest.raises(ShardCorruptionError, match=r"shard-000001\.safetensors listed in the manifest is missing"):
        load_shards(tmp_path)


def test_different_run_is_refused_with_keys_named(tmp_path):
    batches = make_batches(2)
    run(tmp_path, batches)
    with pytest.raises(ValueError, match=r"differing keys \['weights_sha256'\]"):
        run(tmp_path, batches, model=tiny_bert(seed=1))
    with pytest.raises(ValueError, match=r"differing keys \['layers'\]"):
        run(tmp_path, batches, layers=["encoder.layer.1.output", -1])
    with pytest.raises(ValueError, match=r"differing keys \['dtype', 'pooling'\]"):
        run(tmp_path, batches, pooling="mean", dtype="float16")
    # a changed corpus (same model, layers...) is caught by the input fingerprints
    with pytest.raises(ValueError, match="input batch 0 differs"):
        run(tmp_path, make_batches(3, seed=5))
    assert read_manifest(tmp_path)["identity"]["pooling"] == "tokens"


def test_lock_keeps_second_collector_out(tmp_path):
    meta = {"model": "m", "layers": ["a"], "pooling": "mean"}
    first = ShardSink(tmp_path)
    assert first.start(meta) == 0
    second = ShardSink(tmp_path)
    with pytest.raises(FolderLockedError, match=f"another collector \\(pid {os.getpid()}\\)"):
        second.start(meta)
    first.finish()
    assert second.start(meta) == 0  # free again
    second.finish()


def test_exception_keeps_completed_batches_then_resume_is_exact(tmp_path):
    model, batches = tiny_bert(), make_batches(7)
    reference, _ = run(tmp_path / "ref", batches, model, batches_per_shard=3)

    def failing():
        yield from batches[:4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "res", failing(), model, batches_per_shard=3)
    m = read_manifest(tmp_path / "res")
    assert not m["complete"] and [s["batches"] for s in m["shards"]] == [[0, 3], [3, 4]]
    # leftovers of a crash between a shard write and the manifest update are cleaned up
    (tmp_path / "res" / "shard-000002.safetensors").write_bytes(b"partial")
    (tmp_path / "res" / ".shard-000003.safetensors.abc.tmp").write_bytes(b"partial")
    reader, sink = run(tmp_path / "res", batches, model, batches_per_shard=3)
    assert sink.skipped_batches == 4 and sink.written_batches == 3
    assert not list((tmp_path / "res").glob("*.tmp"))
    ref, got = reference.load(), reader.load()
    for k in ref:
        assert ref[k].tobytes() == got[k].tobytes()


# Self-contained (torch only, no transformers import: fast start) collector run in a subprocess.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    from repgeo.probe import ShardSink, collect

    torch.set_num_threads(1)


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True) for _ in range(2)
            )

        def forward(self, input_ids, attention_mask):
            h = self.embed(input_ids)
            for layer in self.layers:
                h = layer(h, src_key_padding_mask=attention_mask == 0)
            return h


    def batches():
        g = torch.Generator().manual_seed(0)
        for _ in range(12):
            ids = torch.randint(5, 100, (3, 6), generator=g)
            lengths = torch.randint(1, 7, (3,), generator=g)
            mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
            yield {"input_ids": ids * mask, "attention_mask": mask}


    def slow():
        for i, b in enumerate(batches()):
            if i >= 2:
                time.sleep(0.2)
            yield b


    torch.manual_seed(0)
    model = Encoder()
    for mode, folder in zip(sys.argv[1::2], sys.argv[2::2]):
        sink = ShardSink(folder, batches_per_shard=2)
        collect(model, slow() if mode == "slow" else batches(), ["layers.0", "layers.1"], "tokens",
                sink=sink, progress=False)
        rows = sum(int(b["attention_mask"].sum()) for b in batches())
        print(folder, sink.skipped_batches, sink.written_batches, rows)
    """
)


def _sigkill_after_shards(proc: subprocess.Popen, folder: Path, n_shards: int, delay: float = 0.0) -> None:
    """SIGKILL the collector ``proc`` ``delay`` seconds after its manifest lists ``n_shards`` shards; then reap it."""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len(read_manifest(folder)["shards"]) >= n_shards:
                    break
            except (FileNotFoundError, ValueError):
                pass
            assert proc.poll() is None, "collector exited before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("no shards written in time")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_sigkill_mid_run_then_resume_is_byte_identical(tmp_path):
    script = tmp_path / "collect_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen([sys.executable, str(script), "slow", str(killed)], env=env)
    _sigkill_after_shards(proc, killed, 2)
    assert proc.returncode == -signal.SIGKILL
    stored = read_manifest(killed)
    assert not stored["complete"] and 2 <= len(stored["shards"]) < 6
    done = stored["shards"][-1]["batches"][1]
    # resume (the kernel released the dead collector's lock), then an uninterrupted reference run
    out = subprocess.run(
        [sys.executable, str(script), "fast", str(killed), "fast", str(ref)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    resumed_line, ref_line = out.stdout.splitlines()[-2:]
    _, skipped, written, rows = resumed_line.split()
    assert (int(skipped), int(written)) == (done, 12 - done)
    assert ref_line.split()[1:3] == ["0", "12"]
    a, b = load_shards(killed), load_shards(ref)
    assert list(a) == list(b) == ["layers.0", "layers.1"]
    for k in a:
        assert a[k].shape == (int(rows), 32)
        assert a[k].tobytes() == b[k].tobytes()
    assert (killed / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    assert json.loads((ref / "manifest.json").read_text())["complete"]


def _folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a shard folder but the lock (which holds the writer's pid)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _check_shards_exact(folder: Path, n_batches: int, per_shard: int) -> None:
    """The manifest lists each batch exactly once, in order, and the folder holds exactly the listed shards."""
    m = read_manifest(folder)
    ranges = [tuple(s["batches"]) for s in m["shards"]]
    assert ranges == [(i, min(i + per_shard, n_batches)) for i in range(0, n_batches, per_shard)]
    files = [s["file"] for s in m["shards"]]
    assert len(set(files)) == len(files)
    assert sorted(p.name for p in folder.glob("shard-*")) == sorted(files)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_random_sigkill_trials_resume_byte_identical(tmp_path):
    """Three collectors killed at random points (after a random number of shards plus a random delay, drawn from a
    seeded RNG, so some kills land inside a write), each resumed: every folder ends byte-identical to an
    uninterrupted run, with no shard missing or duplicated."""
    import random

    rng = random.Random(20240611)
    script = tmp_path / "collect_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    trials = []
    for t in range(3):
        folder, min_shards, delay = tmp_path / f"killed{t}", rng.randint(1, 4), rng.uniform(0.0, 0.25)
        proc = subprocess.Popen([sys.executable, str(script), "slow", str(folder)], env=env)
        _sigkill_after_shards(proc, folder, min_shards, delay)
        assert proc.returncode == -signal.SIGKILL, (t, min_shards, delay)
        stored = read_manifest(folder)
        assert not stored["complete"] and min_shards <= len(stored["shards"]) < 6
        trials.append((folder, stored["shards"][-1]["batches"][1]))
    ref = tmp_path / "ref"
    args = [a for folder, _ in trials for a in ("fast", str(folder))] + ["fast", str(ref)]
    out = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()[-4:]
    assert lines[-1].split()[1:3] == ["0", "12"]
    _check_shards_exact(ref, 12, 2)
    expected = _folder_files(ref)
    assert len(expected) == 7  # manifest + 6 shards
    for (folder, done), line in zip(trials, lines[:3], strict=True):
        assert [int(v) for v in line.split()[1:3]] == [done, 12 - done]
        _check_shards_exact(folder, 12, 2)
        got = _folder_files(folder)
        assert got.keys() == expected.keys() and all(got[k] == expected[k] for k in expected), folder


class _FullDisk:
    """A file object on a full disk: ``write`` stores the first half of the bytes, then raises ENOSPC."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to name the file being written")
@pytest.mark.parametrize(("victim", "nth"), [("shard-000002.safetensors", 1), ("manifest.json", 3)])
def test_disk_full_mid_write_leaves_no_valid_looking_file(tmp_path, monkeypatch, victim, nth):
    """The disk fills up while the third shard (or the manifest update after it) is written: half the bytes reach
    the temporary file, then ENOSPC. No partial file is left under a final name, the manifest still describes
    only complete shards, and the next run resumes to a folder byte-identical to an uninterrupted one."""
    import repgeo.probe.sinks as sinks

    model, batches = tiny_bert(), make_batches(5)
    run(tmp_path / "ref", batches, model)
    real_fdopen, seen = os.fdopen, []

    def fdopen(fd, *args, **kwargs):  # from its nth atomic write on, `victim` finds the disk full
        f = real_fdopen(fd, *args, **kwargs)
        written = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if written.startswith(f".{victim}.") and written.endswith(".tmp"):
            seen.append(written)
            if len(seen) >= nth:
                return _FullDisk(f)
        return f

    folder = tmp_path / "full"
    monkeypatch.setattr(sinks.os, "fdopen", fdopen)
    with pytest.raises(OSError) as info:
        run(folder, batches, model)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # partial temp files removed
    stored = read_manifest(folder)
    assert not stored["complete"] and [s["file"] for s in stored["shards"]] == [
        "shard-000000.safetensors", "shard-000001.safetensors"]
    ShardReader(folder).verify()  # what the manifest lists is intact
    # the third shard is absent, or (manifest write failed) complete but unlisted: readers ignore it
    assert victim == "manifest.json" or not (folder / "shard-000002.safetensors").exists()
    assert ShardReader(folder).load()["hidden_states.2"].shape[0] == sum(
        int(b["attention_mask"].sum()) for b in batches[:2])
    _, sink = run(folder, batches, model)  # disk space is back: resume
    assert (sink.skipped_batches, sink.written_batches) == (2, 3)
    assert _folder_files(folder) == _folder_files(tmp_path / "ref")
