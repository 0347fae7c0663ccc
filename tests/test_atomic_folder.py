"""_files.atomic_folder (public as repgeo.files.atomic_folder): a folder appears complete or not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repgeo.files import atomic_folder


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_folder_appears_complete_and_replaces_an_old_one_without_leftovers(tmp_path):
    out = tmp_path / "deep" / "model"
    with atomic_folder(out) as tmp:
        assert tmp.parent == out.parent and not out.exists()  # nothing visible while it is written
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("one")
    assert _tree(out) == {"sub/a.txt": "one"}
    with atomic_folder(out) as tmp:
        (tmp / "b.txt").write_text("two")
    assert _tree(out) == {"b.txt": "two"}  # the old folder's files are gone, not merged
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no temporary or moved-aside folder left


def test_an_error_inside_leaves_the_old_folder_untouched(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="check failed"), atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("check failed")
    assert _tree(out) == {"a.txt": "old"} and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_keep_existing_drops_the_new_folder_when_another_writer_finished_first(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out, keep_existing=lambda p: (p / "done").is_file()) as tmp:
        (tmp / "done").write_text("mine")
        out.mkdir()  # another process finishes the same work meanwhile
        (out / "done").write_text("theirs")
    assert _tree(out) == {"done": "theirs"} and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_folder(out, keep_existing=lambda p: False) as tmp:  # an incomplete or stale one is replaced
        (tmp / "done").write_text("mine")
    assert _tree(out) == {"done": "mine"}


def test_a_process_killed_while_writing_leaves_the_old_folder(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "a.txt").write_text("old")
    code = ("import os, sys\nfrom repgeo.files import atomic_folder\n"
            "with atomic_folder(sys.argv[1]) as tmp:\n"
            "    (tmp / 'a.txt').write_text('half')\n"
            "    os._exit(9)  # dies as under SIGKILL: no cleanup runs\n")
    assert subprocess.run([sys.executable, "-c", code, str(out)]).returncode == 9
    assert _tree(out) == {"a.txt": "old"}
