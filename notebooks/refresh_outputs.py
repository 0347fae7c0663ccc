"""Refresh the saved outputs of the notebooks: execute each in place with nbclient, strip the noise that changes
on every run (progress bars, Trainer timings, temporary folder names), save it with its outputs.

    python notebooks/refresh_outputs.py notebooks/*.ipynb

Run it after a change that alters what a notebook prints; the tests check that every notebook is saved with its
outputs (``tests/notebook_checks.py``).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = str(Path(__file__).resolve().parents[1])

TQDM = re.compile(r"\r|\d+it/s\]|TqdmWarning")
TIMING_KEYS = re.compile(r"(,? ?'(?:eval|train)_(?:runtime|samples_per_second|steps_per_second)': '[^']*')"
                         r"|((?:eval|train)_(?:runtime|samples_per_second|steps_per_second)=[^,\n]*, ?)")
TMP = re.compile(r"/tmp/repgeo-distill-\w+")


def clean_text(text: str) -> str:
    text = TIMING_KEYS.sub("", text)
    text = TMP.sub("/tmp/repgeo-distill-XXXXXXXX", text)
    text = text.replace("{, ", "{")
    if ROOT in text:
        raise ValueError(f"an output names the checkout's path {ROOT}: {text[:300]}")
    return text


def clean(nb: nbformat.NotebookNode) -> None:
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        kept = []
        for o in c.outputs:
            if o.output_type == "stream" and o.name == "stderr" and (TQDM.search(o.text) or not o.text.strip()):
                continue
            if o.output_type == "stream":
                o.text = clean_text(o.text)
            elif "data" in o:
                for k in ("text/plain", "text/html"):
                    if k in o.data:
                        o.data[k] = clean_text(o.data[k])
            kept.append(o)
        # merge consecutive stream outputs of the same name (what a live kernel shows as one block)
        merged = []
        for o in kept:
            last = merged[-1] if merged else None
            if last is not None and o.output_type == last.output_type == "stream" and last.name == o.name:
                last.text += o.text
            else:
                merged.append(o)
        c.outputs = merged


def main(paths: list[str]) -> None:
    for p in map(Path, paths):
        refresh(p)


def refresh(p: Path) -> None:
    """Execute notebook ``p`` in its folder, clean its outputs and write it back."""
    nb = nbformat.read(p, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(p.parent)}})
    t0 = time.perf_counter()
    client.execute()
    print(f"{p}: executed in {time.perf_counter() - t0:.1f} s", flush=True)
    clean(nb)
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            if o.output_type == "stream" and o.name == "stderr":
                print(f"  cell {i} stderr kept: {o.text[:300]!r}")
            if o.output_type == "error":
                print(f"  cell {i} ERROR {o.ename}: {o.evalue}")
    nbformat.write(nb, p)
    print(f"  size {p.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main(sys.argv[1:])
