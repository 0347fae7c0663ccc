"""The one tabular reader (repgeo._files.read_records) and the three readers built on it: the audit's texts, the
distillation tasks' records and the demo's table follow the same rules."""

from __future__ import annotations

import json
import math

import pytest

from repgeo._files import DataError, read_records, require_columns
from repgeo.audit.data import read_texts
from repgeo.demo.data import read_table
from repgeo.distill.tasks.base import load_records

ROWS = [{"text": "good film", "label": 1}, {"text": "NA", "label": 0}, {"text": "a, \"quoted\"\nline", "label": 1}]


def _write_all(folder):
    import csv

    paths = {}
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        paths[suffix] = folder / f"d{suffix}"
        with open(paths[suffix], "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["text", "label"], delimiter=sep)
            w.writeheader()
            w.writerows(ROWS)
    paths[".jsonl"] = folder / "d.jsonl"
    paths[".jsonl"].write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    paths[".json"] = folder / "d.json"
    paths[".json"].write_text(json.dumps(ROWS), encoding="utf-8")
    paths[".ndjson"] = folder / "D.NDJSON"  # the suffix is read in any case
    paths[".ndjson"].write_text(paths[".jsonl"].read_text(encoding="utf-8"), encoding="utf-8")
    return paths


def test_every_format_gives_the_same_records_and_na_stays_text(tmp_path):
    for suffix, path in _write_all(tmp_path).items():
        assert read_records(path) == ROWS, suffix
        assert load_records(path) == ROWS, suffix
        assert read_table(path).to_dict("records") == ROWS, suffix
        assert read_texts(path) == [r["text"] for r in ROWS], suffix


def test_only_an_empty_cell_is_missing_and_strings_keep_leading_zeros(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n,01\nnull,02\n", encoding="utf-8")
    rows = read_records(path)
    assert math.isnan(rows[0]["text"]) and rows[1]["text"] == "null" and rows[0]["label"] == 1
    assert read_records(path, strings=True)[0]["label"] == "01"
    assert read_texts(path) == ["", "null"]  # the audit drops and reports the empty one itself


def test_errors_name_the_file_the_byte_the_line_and_the_columns(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_bytes("text,label\ngood,1\ncaf\u00e9,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^data file '{bad}' is not UTF-8 text: byte 0xe9 at offset 21 \(line 3\)"):
        read_records(bad)
    lines = tmp_path / "x.jsonl"
    lines.write_text('{"text": "a"}\n\n{"text": "b" "label": 0}\n')
    with pytest.raises(DataError, match=rf"^data file '{lines}', line 3: not valid JSON"):
        read_records(lines)
    lines.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        read_records(lines)
    for name, content, message in (("e.csv", b"  \n", "is empty"), ("x.xlsx", b"a", r"expected \.csv, \.tsv")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message):
            read_records(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_records(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"unsupported data file 'x\.xlsx': use \.txt \(one text per line\) or a table"):
        read_texts(tmp_path / "x.xlsx")
    ok = tmp_path / "ok.csv"
    ok.write_text("text,sentiment\na,1\n")
    with pytest.raises(DataError, match=r"^data file '.*ok\.csv' has no column 'label' \(columns: \['text', "
                                        r"'sentiment'\]\); set the label column$"):
        require_columns(read_records(ok), ["text", "label"], ok, "set the label column")
    with pytest.raises(DataError, match=r"has no column 'label' \(columns: \['text', 'sentiment'\]\); pass --label"):
        from repgeo.demo.data import load_frame

        load_frame(str(ok))


def test_bare_json_strings_need_a_key(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('"first text"\n{"text": "second"}\n')
    assert read_records(path, bare_key="text") == [{"text": "first text"}, {"text": "second"}]
    assert read_texts(path) == ["first text", "second"]
    with pytest.raises(DataError, match="line 1: expected a JSON object"):
        read_records(path)
