"""Where pooled features go: memory, resumable on-disk shards, callbacks, streaming pairs.

The sink protocol used by :func:`repgeo.probe.collect` (subclass :class:`Sink`):

* ``start(meta) -> int``: called once with the run's identity (``model``, ``model_class``,
  ``revision``, ``weights_sha256``, ``layers``, ``pooling``); returns how many leading batches are
  already stored and must be skipped (0 except for a resumed :class:`ShardSink`);
* ``skip(batch_index, fingerprint)``: called for each skipped batch (lets the sink check the input);
* ``write(batch_index, features, fingerprint)``: ``features`` maps layer name → float32 tensor
  (rows × dim) of one batch; ``fingerprint`` is the sha256 of the batch's input tensors;
* ``finish()``: end of the run, returns what ``collect`` returns; ``abort()`` on an exception.

Feature rows keep the order of the batches and, inside a batch, the pooling's row order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repgeo._files import FolderLock, FolderLockedError, atomic_write_bytes, sha256_file
from repgeo._validation import check_int

__all__ = [
    "CallbackSink",
    "FolderLockedError",
    "MemorySink",
    "PairStreamSink",
    "ShardCorruptionError",
    "ShardReader",
    "ShardSink",
    "Sink",
    "StaleCollectionError",
    "load_shards",
    "read_manifest",
]

FORMAT = "repgeo.probe.shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_SHARD_RE = re.compile(r"^shard-\d{6,}\.safetensors$")


class ShardCorruptionError(ValueError):
    """A shard is missing, truncated or does not match its manifest checksum."""


class StaleCollectionError(ValueError):
    """A shard folder holds a collection of other input (model, layers, corpus, order, batch size or length) than
    the run resuming into it; the message names the difference. ``ShardSink(..., fresh=True)`` starts over."""


def to_numpy(x: Any) -> np.ndarray:
    """CPU numpy view of a tensor (bfloat16 is upcast to float32) or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


class Sink:
    """Base class: no resume, no identity checks; override :meth:`write` and :meth:`finish`."""

    #: whether :func:`collect` must compute the model identity (weights hash) for :meth:`start`.
    wants_identity: bool = False
    #: whether :func:`collect` must fingerprint each input batch.
    wants_fingerprint: bool = False

    def start(self, meta: Mapping[str, Any]) -> int:
        return 0

    def skip(self, batch_index: int, fingerprint: str | None) -> None:
        raise RuntimeError(f"{type(self).__name__} does not resume; batch {batch_index} cannot be skipped")

    def write(self, batch_index: int, features: Mapping[str, torch.Tensor], fingerprint: str | None) -> None:
        raise NotImplementedError

    def finish(self) -> Any:
        return None

    def abort(self) -> None:
        return None


class MemorySink(Sink):
    """Keep everything in memory; :meth:`finish` returns ``{layer: np.ndarray}`` (rows concatenated
    in batch order; float32 unless ``dtype="float16"``)."""

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16", "float64"):
            raise ValueError(f"MemorySink dtype must be float32, float16 or float64, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.chunks: dict[str, list[np.ndarray]] = {}

    def write(self, batch_index: int, features: Mapping[str, torch.Tensor], fingerprint: str | None) -> None:
        for name, x in features.items():
            self.chunks.setdefault(name, []).append(to_numpy(x).astype(self.dtype, copy=False))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v, axis=0) for k, v in self.chunks.items()}

    def finish(self) -> dict[str, np.ndarray]:
        return self.arrays()


class CallbackSink(Sink):
    """Call ``fn(batch_index, features)`` for every batch; :meth:`finish` returns ``None``."""

    def __init__(self, fn: Callable[[int, Mapping[str, torch.Tensor]], Any]) -> None:
        self.fn = fn

    def write(self, batch_index: int, features: Mapping[str, torch.Tensor], fingerprint: str | None) -> None:
        self.fn(batch_index, features)


class PairStreamSink:
    """Stream (teacher layer, student layer) chunk pairs into accumulators with ``.update(X, Y)``.

    ``pairs``: ``[(teacher_layer, student_layer), ...]`` (resolved layer names, e.g.
    ``"encoder.layer.3"`` or ``"hidden_states.2"``); ``accumulator_factory()`` makes one accumulator
    per pair (e.g. ``repgeo.metrics.Moments``). Feed it with :meth:`update` on the teacher's and the
    student's features *of the same batch* (the same stimuli, so the same rows); X is the teacher's
    chunk (n × p), Y the student's (n × q). Tensors are passed through untouched (device kept).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]], accumulator_factory: Callable[[], Any]) -> None:
        self.pairs = [tuple(p) for p in pairs]
        if not self.pairs:
            raise ValueError("PairStreamSink needs at least one (teacher_layer, student_layer) pair")
        self.accumulators: dict[tuple[str, str], Any] = {p: accumulator_factory() for p in self.pairs}
        self.batches = 0

    def update(self, teacher: Mapping[str, Any], student: Mapping[str, Any]) -> None:
        for t_name, s_name in self.pairs:
            if t_name not in teacher:
                raise KeyError(f"teacher layer {t_name!r} not in the batch features {list(teacher)}")
            if s_name not in student:
                raise KeyError(f"student layer {s_name!r} not in the batch features {list(student)}")
            X, Y = teacher[t_name], student[s_name]
            if X.shape[0] != Y.shape[0]:
                raise ValueError(
                    f"pair ({t_name!r}, {s_name!r}): teacher has {X.shape[0]} rows, student {Y.shape[0]} "
                    "in this batch; rows must be the same stimuli (token pooling with different "
                    "tokenizers cannot be paired)"
                )
            self.accumulators[(t_name, s_name)].update(X, Y)
        self.batches += 1

    def result(self) -> dict[tuple[str, str], Any]:
        return dict(self.accumulators)


# ----------------------------------------------------------------------------------------------------
# shards


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: not a repgeo shard folder") from None
    except json.JSONDecodeError as e:
        raise ShardCorruptionError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    return manifest


class ShardSink(Sink):
    """Resumable on-disk shards: ``folder/shard-000000.safetensors``, ... plus ``manifest.json``.

    Each shard holds ``batches_per_shard`` consecutive batches: one tensor per layer (key = layer
    name), rows concatenated in batch order, stored as ``dtype`` (``"float32"``, ``"float16"`` or
    ``"bfloat16"``). The manifest records the identity (``model``, ``model_class``, ``revision``,
    ``weights_sha256``, ``layers``, ``pooling``, ``dtype``) and, per shard, its file, batch range,
    rows per layer, sha256 of the file and the sha256 fingerprints of its input batches. It is
    rewritten atomically after each shard, so an interrupted run (even SIGKILL) leaves a consistent
    folder: at most the shard being written is lost, and it is recomputed on resume.

    Resume: running :func:`collect` again on the same folder with the same model, layers, pooling
    and dtype re-reads the manifest, verifies the stored shards' checksums (``verify_on_resume``),
    deletes files not in the manifest, and skips the batches already stored, checking that each
    skipped input batch has the stored fingerprint (so a changed corpus or batch size is refused,
    never silently mixed). The batches must be produced in the same order. A different identity is
    refused with the differing keys named, and so is an input that ends before the stored batches do (a
    shorter corpus: the folder would return rows this input never produced); both raise
    :class:`StaleCollectionError`. ``fresh=True`` instead deletes a stored collection (under the lock) and starts
    over. ``folder/.lock`` keeps two collectors out of one folder.

    ``weights_hash=False`` skips hashing the weights (the identity then relies on the model's name
    and revision only). :meth:`finish` returns a :class:`ShardReader`.
    """

    wants_identity = True
    wants_fingerprint = True

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        batches_per_shard: int = 1,
        weights_hash: bool = True,
        verify_on_resume: bool = True,
        fresh: bool = False,
    ) -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        check_int("batches_per_shard", batches_per_shard, 1)
        self.folder = Path(folder)
        self.dtype = dtype
        self.batches_per_shard = int(batches_per_shard)
        self.weights_hash = weights_hash
        self.verify_on_resume = verify_on_resume
        self.fresh = fresh
        self.stored_batches = 0
        self.manifest: dict[str, Any] = {}
        self.skipped_batches = 0
        self.written_batches = 0
        self._lock = FolderLock(self.folder, "collector")
        self._buffer: list[tuple[int, Mapping[str, torch.Tensor], str | None]] = []
        self._fingerprints: list[str | None] = []

    # -- protocol
    def start(self, meta: Mapping[str, Any]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            return self._start(meta)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, meta: Mapping[str, Any]) -> int:
        identity = {**json.loads(json.dumps(dict(meta))), "dtype": self.dtype}
        if not self.weights_hash:
            identity.pop("weights_sha256", None)
        path = self.folder / MANIFEST
        if self.fresh and path.exists():
            path.unlink()  # the shards become orphans, removed below
        if path.exists():
            manifest = read_manifest(self.folder)
            stored = manifest["identity"]
            diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            if diff:
                details = "; ".join(f"{k}: stored {stored.get(k)!r}, now {identity.get(k)!r}" for k in diff)
                raise StaleCollectionError(
                    f"{self.folder} was written by a different run; differing keys {diff} ({details}). "
                    "Use another folder, or pass fresh=True to start over."
                )
            if self.verify_on_resume:
                ShardReader(self.folder).verify()
            self.manifest = manifest
        else:
            self.manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "identity": identity,
                "batches_per_shard": self.batches_per_shard,
                "complete": False,
                "shards": [],
            }
        self._fingerprints = [fp for s in self.manifest["shards"] for fp in s["inputs_sha256"]]
        self._remove_orphans()
        self.stored_batches = len(self._fingerprints)
        return self.stored_batches

    def skip(self, batch_index: int, fingerprint: str | None) -> None:
        stored = self._fingerprints[batch_index]
        if fingerprint is not None and stored is not None and stored != fingerprint:
            raise StaleCollectionError(
                f"input batch {batch_index} differs from the one stored in {self.folder} "
                "(changed corpus, order, batch size or tokenisation); use another folder, or pass fresh=True to "
                "start over"
            )
        self.skipped_batches += 1

    def write(self, batch_index: int, features: Mapping[str, torch.Tensor], fingerprint: str | None) -> None:
        expected = self._next_batch()
        if batch_index != expected:
            raise RuntimeError(f"ShardSink expected batch {expected}, got {batch_index}")
        self._buffer.append((batch_index, dict(features), fingerprint))
        if len(self._buffer) >= self.batches_per_shard:
            self._flush()

    def finish(self) -> ShardReader:
        try:
            seen = self.skipped_batches + self.written_batches + len(self._buffer)
            if seen < self.stored_batches:
                raise StaleCollectionError(
                    f"{self.folder} holds {self.stored_batches} batches but this input has only {seen} (a shorter "
                    "corpus than the stored collection's); use another folder, or pass fresh=True to start over"
                )
            self._flush()
            self.manifest["complete"] = True
            self._write_manifest()
        finally:
            self._lock.release()
        return ShardReader(self.folder)

    def abort(self) -> None:
        try:
            self._flush()  # buffered batches are complete: keep them
        finally:
            self._lock.release()

    # -- internals
    def _next_batch(self) -> int:
        return len(self._fingerprints) + len(self._buffer)

    def _remove_orphans(self) -> None:
        known = {s["file"] for s in self.manifest["shards"]}
        for p in self.folder.iterdir():
            orphan_shard = _SHARD_RE.match(p.name) and p.name not in known
            if orphan_shard or (p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()

    def _flush(self) -> None:
        if not self._buffer:
            return
        from safetensors.torch import save

        store = STORAGE_DTYPES[self.dtype]
        layers = self.manifest["identity"]["layers"]
        tensors: dict[str, torch.Tensor] = {}
        for name in layers:
            parts = [b[1][name].detach().to("cpu", store) for b in self._buffer]
            tensors[name] = torch.cat(parts, dim=0).contiguous()
        data = save(tensors, metadata={"format": FORMAT})
        index = len(self.manifest["shards"])
        fname = f"shard-{index:06d}.safetensors"
        atomic_write_bytes(self.folder / fname, data)
        first = self._buffer[0][0]
        entry = {
            "file": fname,
            "batches": [first, first + len(self._buffer)],
            "rows": {name: int(tensors[name].shape[0]) for name in layers},
            "shapes": {name: list(tensors[name].shape[1:]) for name in layers},
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "inputs_sha256": [b[2] for b in self._buffer],
        }
        self.manifest["shards"].append(entry)
        self._fingerprints.extend(entry["inputs_sha256"])
        self.written_batches += len(self._buffer)
        self._buffer = []
        self._write_manifest()

    def _write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.folder / MANIFEST, data)


class ShardReader:
    """Read a shard folder written by :class:`ShardSink`.

    ``load()`` returns ``{layer: array}`` with all shards concatenated in batch order, after
    checking each file's size and sha256 against the manifest (``ShardCorruptionError`` naming the
    file otherwise). numpy arrays keep the stored dtype, except bfloat16 which numpy lacks: it is
    upcast to float32 (use ``as_torch=True`` to get bfloat16 tensors).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.manifest["identity"])

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["identity"]["layers"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def num_batches(self) -> int:
        return sum(len(s["inputs_sha256"]) for s in self.manifest["shards"])

    def _check(self, entry: Mapping[str, Any]) -> Path:
        path = self.folder / entry["file"]
        if not path.is_file():
            raise ShardCorruptionError(f"shard {path} listed in the manifest is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise ShardCorruptionError(
                f"shard {path} is {size} bytes, the manifest says {entry['bytes']} (truncated or corrupted)"
            )
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise ShardCorruptionError(f"shard {path} fails its sha256 checksum (corrupted)")
        return path

    def verify(self) -> None:
        """Check every shard's size and checksum; raise ``ShardCorruptionError`` naming the file."""
        for entry in self.manifest["shards"]:
            self._check(entry)

    def iter_shards(
        self, layers: Iterable[str] | None = None, *, verify: bool = True, as_torch: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Yield ``{layer: rows}`` one shard at a time (bounded memory)."""
        from safetensors import safe_open

        names = self._select(layers)
        for entry in self.manifest["shards"]:
            path = self._check(entry) if verify else self.folder / entry["file"]
            try:
                with safe_open(str(path), framework="pt") as f:
                    out = {n: f.get_tensor(n) for n in names}
            except Exception as e:
                raise ShardCorruptionError(f"shard {path} cannot be read: {e}") from e
            yield out if as_torch else {n: to_numpy(t) for n, t in out.items()}

    def load(
        self, layers: Iterable[str] | None = None, *, verify: bool = True, as_torch: bool = False
    ) -> dict[str, Any]:
        names = self._select(layers)
        chunks: dict[str, list[Any]] = {n: [] for n in names}
        for shard in self.iter_shards(names, verify=verify, as_torch=as_torch):
            for n in names:
                chunks[n].append(shard[n])
        if as_torch:
            return {n: torch.cat(c) if c else torch.empty(0) for n, c in chunks.items()}
        return {n: np.concatenate(c) if c else np.empty((0,), np.float32) for n, c in chunks.items()}

    def _select(self, layers: Iterable[str] | None) -> list[str]:
        if layers is None:
            return self.layers
        names = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in names if n not in self.layers]
        if unknown:
            raise KeyError(f"layers {unknown} not stored in {self.folder}; stored: {self.layers}")
        return names


def load_shards(
    folder: str | os.PathLike[str], layers: Iterable[str] | None = None, *, verify: bool = True
) -> dict[str, np.ndarray]:
    """Shortcut for ``ShardReader(folder).load(layers, verify=verify)``."""
    return ShardReader(folder).load(layers, verify=verify)
