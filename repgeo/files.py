"""File helpers for scripts and studies built on repgeo: the public face of :mod:`repgeo._files`.

* atomic writes -- :func:`atomic_write_bytes` / :func:`atomic_write_text` (a file), :func:`atomic_path` (a file
  written by a library that wants a name, e.g. ``torch.save``), :func:`atomic_folder` (a whole folder, e.g.
  ``save_pretrained``); each fsyncs the data and the folder, so a reader sees the old or the new content;
* :class:`FolderLock` -- one writer per folder (:class:`FolderLockedError` names the other one);
* :func:`sha256_file`;
* :func:`read_records` -- the one tabular reader (CSV / TSV / JSON lines / JSON; :class:`DataError` names the
  file, the line and the byte).
"""

from ._files import (
    DataError,
    FolderLock,
    FolderLockedError,
    atomic_folder,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_records,
    sha256_file,
)

__all__ = [
    "DataError",
    "FolderLock",
    "FolderLockedError",
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_records",
    "sha256_file",
]
