"""File helpers shared by the modules that read, write or verify files: atomic writes of a file or a whole folder
(fsync of the data and of its folder), sha256 manifests of what a run wrote (sizes checked on every open, hashes on
reuse), folder locks with stale-lock handling, and the one tabular reader (:func:`read_records`: CSV, TSV, JSON
lines, JSON) whose errors name the file, the line and the byte. Scripts and studies use the public face,
:mod:`repgeo.files`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file cannot be used (unreadable encoding, malformed line, missing column or value, unseen label);
    the message names the file and, where it applies, the record and line."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_text_utf8(path: str | Path, what: str = "data file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises :class:`DataError` naming the file, the byte offset and line of the first invalid byte, instead of a
    bare ``UnicodeDecodeError``.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{what} {str(path)!r} is not UTF-8 text: byte 0x{bad} at offset {exc.start} (line {line}) cannot be "
            "decoded; re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


# ----------------------------------------------------------------------------------------------------
# the one tabular reader

#: File types :func:`read_records` reads (the suffix decides, in any case).
TABULAR_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


def read_records(path: str | Path, *, strings: bool = False, bare_key: str | None = None,
                 what: str = "data file") -> list[dict[str, Any]]:
    """The rows of a tabular data file as a list of dicts, by one set of rules:

    * ``.csv`` / ``.tsv`` (header row; read with pandas, so quoted cells may hold commas and line breaks), or
      JSON lines (``.jsonl`` / ``.ndjson``, one JSON object per non-blank line; ``.json`` may instead hold one
      JSON array of objects);
    * the file is UTF-8 (a byte-order mark is dropped); anything else is an error naming the byte and line;
    * in CSV / TSV only an empty cell is a missing value (``NaN``): ``NA``, ``null`` or ``None`` stay text.
      Cell types are inferred (``1`` is an int) unless ``strings=True`` (every cell is text); JSON values keep
      their JSON types;
    * ``bare_key``: a JSON line that is a bare string becomes ``{bare_key: line}`` (without it, an error).

    Raises ``FileNotFoundError`` for a missing file and :class:`DataError` naming the file (and line) for an
    unknown suffix, an empty file, bad encoding or a malformed line. A header without rows gives ``[]``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} not found")
    suffix = p.suffix.lower()
    if suffix not in TABULAR_SUFFIXES:
        raise DataError(f"{what} {str(p)!r}: expected {', '.join(TABULAR_SUFFIXES[:-1])} or {TABULAR_SUFFIXES[-1]}")
    text = read_text_utf8(p, what)
    if not text.strip():
        raise DataError(f"{what} {str(p)!r} is empty")
    if suffix in (".csv", ".tsv"):
        return _read_delimited(p, text, "\t" if suffix == ".tsv" else ",", strings, what)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = list(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(f"{what} {str(p)!r}, line {exc.lineno}: not valid JSON: {exc.msg}") from None
        lines = [None] * len(records)
    else:
        records, lines = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{what} {str(p)!r}, line {lineno}: not valid JSON ({exc.msg}); JSON-lines files "
                                "hold one JSON object per line") from None
            lines.append(lineno)
    for i, (r, lineno) in enumerate(zip(records, lines, strict=True)):
        if isinstance(r, str) and bare_key is not None:
            records[i] = {bare_key: r}
        elif not isinstance(r, dict):
            where = f"line {lineno}" if lineno is not None else f"record {i}"
            raise DataError(f"{what} {str(p)!r}, {where}: expected a JSON object, got {r!r:.60}")
    return records


def _read_delimited(p: Path, text: str, sep: str, strings: bool, what: str) -> list[dict[str, Any]]:
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=[""],
                            dtype=str if strings else None)
    except pd.errors.ParserError as exc:
        raise DataError(f"{what} {str(p)!r} is not valid {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None
    return frame.to_dict(orient="records")


def record_columns(records: list[dict[str, Any]]) -> list[str]:
    """The columns of ``records`` in file order (the keys of every record, first seen first)."""
    return list(dict.fromkeys(k for r in records for k in r))


def missing_column(path: str | Path, column: str, available: Iterable[str], hint: str = "",
                   what: str = "data file") -> DataError:
    """The error for a column that ``path`` lacks: ``data file 'x.csv' has no column 'label' (columns: ['text',
    'sentiment']); <hint>``."""
    return DataError(f"{what} {str(path)!r} has no column {column!r} (columns: {list(available)})"
                     + (f"; {hint}" if hint else ""))


def require_columns(records: list[dict[str, Any]], columns: Iterable[str], path: str | Path, hint: str = "",
                    what: str = "data file") -> None:
    """Raise :func:`missing_column` for the first of ``columns`` that no record of ``path`` has."""
    available = record_columns(records)
    for c in columns:
        if c not in available:
            raise missing_column(path, c, available, hint, what)


def model_source_problem(name_or_path: str) -> str:
    """Why ``from_pretrained(name_or_path)`` most likely failed, and what to do: a local path that is not a model
    folder, or a name that was looked up on the Hugging Face hub (offline here, or no such model)."""
    if Path(name_or_path).exists():
        return (f"{name_or_path!r} is a local path but could not be loaded as a transformers model folder "
                "(config.json, weights and tokenizer files are needed)")
    return (f"{name_or_path!r} is not a local folder (resolved: {Path(name_or_path).resolve()}), so it was looked "
            "up on the Hugging Face hub, which failed (offline, or the name does not exist). Download it where the "
            f"hub is reachable (`hf download {name_or_path} --local-dir DIR`) and pass DIR instead")


# ----------------------------------------------------------------------------------------------------
# atomic writes


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so that a rename or a new file in it survives a crash (no-op off POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``,
    fsync of the folder. A reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``torch.save``); on a clean exit it is
    fsynced and renamed onto ``path`` (then the folder is fsynced), on an exception deleted."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file and folder below ``folder`` (and ``folder`` itself)."""
    folder = Path(folder)
    for p in sorted(folder.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A temporary folder next to ``path`` to fill; on a clean exit its files are fsynced and it is renamed onto
    ``path`` (then the parent folder is fsynced), so a reader sees the old folder or the complete new one, never a
    half-written one. An existing ``path`` is first moved aside and deleted after the rename -- unless
    ``keep_existing(path)`` says it is already a complete result (another process finished the same work
    first): then the new folder is dropped. On an exception the temporary folder is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists() and keep_existing is not None and keep_existing(path):
            return
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)  # moved aside, not deleted in place: readers see the old or the new folder
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)  # put the old folder back
            raise
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# manifests: sha256 and size of the files a run wrote


class IntegrityError(ValueError):
    """A file that repgeo reuses is missing, truncated, or differs from the checksum recorded when it was written;
    the message names the file."""


MANIFEST_FORMAT = "repgeo.files"


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"bytes", "mtime_ns", "sha256"}`` of one file."""
    st = Path(path).stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def build_manifest(folder: str | Path, names: Iterable[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A manifest of ``folder``: the record (:func:`file_record`) of each file in ``names`` (default: every file
    below ``folder`` except hidden ones), keyed by its path relative to ``folder``, plus ``extra`` keys."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return {"format": MANIFEST_FORMAT, **extra, "files": {n: file_record(folder / n) for n in names}}


def write_manifest(folder: str | Path, name: str, names: Iterable[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Write :func:`build_manifest` of ``folder`` (leaving out ``name`` itself) as ``folder/name``, atomically."""
    folder = Path(folder)
    if names is None:
        names = [n for n in build_manifest(folder)["files"] if n != name]
    manifest = build_manifest(folder, names, **extra)
    atomic_write_text(folder / name, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_manifest_file(path: str | Path) -> dict[str, Any]:
    """Parse a manifest written by :func:`write_manifest`; :class:`IntegrityError` naming it when it is missing or
    damaged."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{path} is missing (the folder was not written to the end)") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "files" not in manifest:
        raise IntegrityError(f"{path} is not a repgeo file manifest")
    return manifest


def verify_files(folder: str | Path, manifest: Mapping[str, Any], *, deep: bool = True, hash_below: int = 0) -> None:
    """Check every file of ``manifest`` in ``folder``: it exists with the recorded size (always) and sha256
    (``deep=True``, for files smaller than ``hash_below`` bytes, and whenever a file's modification time changed
    since it was recorded: an in-place edit). Raises :class:`IntegrityError` naming the first bad file."""
    folder = Path(folder)
    try:
        records = [(name, int(rec["bytes"]), rec.get("mtime_ns"), str(rec["sha256"]))
                   for name, rec in manifest["files"].items()]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"the file manifest of {folder} is damaged ({type(exc).__name__}: {exc})") from None
    for name, size, mtime_ns, digest in records:
        path = folder / name
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise IntegrityError(f"{path} is missing") from None
        if st.st_size != size:
            raise IntegrityError(f"{path} is {st.st_size} bytes, {size} were written (truncated or damaged)")
        rehash = deep or st.st_size < hash_below or st.st_mtime_ns != mtime_ns
        if rehash and sha256_file(path) != digest:
            raise IntegrityError(f"{path} fails its sha256 checksum (changed or damaged since it was written)")


def verify_folder(folder: str | Path, name: str, *, deep: bool = True) -> dict[str, Any]:
    """Read ``folder/name`` (a manifest) and :func:`verify_files` against it; returns the manifest."""
    manifest = read_manifest_file(Path(folder) / name)
    verify_files(folder, manifest, deep=deep)
    return manifest


def content_sha256(path: str | Path) -> str:
    """sha256 of a file's content, or of a folder's files (relative paths and contents, in sorted order)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# folder locks

LOCKFILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock."""


class FolderLock:
    """Exclusive, non-blocking lock on ``folder/.lock`` (``fcntl.flock`` on POSIX: released by the kernel when the
    holder dies, so a killed run leaves no stale lock; elsewhere an ``O_EXCL`` lock file holding the pid, taken over
    when that pid is gone). ``who`` names the kind of writer in the error ("collector", "distillation run", ...).
    The lock file is removed on release (a waiting process re-checks that it locked the file still in place)."""

    def __init__(self, folder: str | Path, who: str = "process") -> None:
        self.path = Path(folder) / LOCKFILE
        self.who = who
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _fail(self) -> None:
        raise FolderLockedError(
            f"{self.path.parent} is being written by another {self.who} (pid {self._holder()}); "
            "wait for it to finish or use another folder"
        )

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            self._acquire_excl()
            return
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._fail()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its holder removed between our open and our flock
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return
            os.close(fd)
        self._fail()

    def _acquire_excl(self) -> None:  # pragma: no cover - non-POSIX
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                try:
                    alive = holder.isdigit() and pid_alive(int(holder))
                except OSError:
                    alive = True
                if alive:
                    self._fail()
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                continue
            os.write(fd, str(os.getpid()).encode())
            self.fd = fd
            return
        self._fail()

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a folder to write into: refused (``NotADirectoryError`` naming it) when it is an existing file
    or lies under one."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise NotADirectoryError(f"{what} {str(p)!r}: {str(q)!r} is an existing file, not a folder")
            break
    return p


@contextlib.contextmanager
def locked_output(path: str | Path, who: str, what: str = "output folder") -> Iterator[Path]:
    """Create ``path`` if needed and hold its :class:`FolderLock` for the block. A folder created here that is still
    empty when the block ends (a refused run wrote nothing) is removed again, with the parents created for it."""
    p = check_output_folder(path, what)
    created = [q for q in (p, *p.parents) if not q.exists()]
    p.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(p, who)
    try:
        lock.acquire()
        yield p
    finally:
        lock.release()
        for q in created:  # deepest first; stops at the first folder that is not empty
            try:
                q.rmdir()
            except OSError:
                break
