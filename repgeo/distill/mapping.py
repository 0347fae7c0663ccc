"""Layer mapping: which student layer is aligned with which teacher layer.

Layers are numbered as in Hugging Face ``hidden_states`` (``output_hidden_states=True``): index 0 is the
embedding output and ``1..L`` are the outputs of the L transformer blocks. A mapping is a dict
``{student_layer: teacher_layer}``. Strategies (``Ls`` student blocks, ``Lt`` teacher blocks):

* ``"uniform"``: every student block i = 1..Ls is mapped to teacher block ``round(i * Lt / Ls)`` (evenly spaced,
  last to last);
* ``"last"``: only the last blocks, ``{Ls: Lt}``;
* ``"skip"``: Patient-KD "skip": student blocks 1..Ls-1 map to teacher blocks ``i * (Lt // Ls)``, the last
  block being left to the logit KD;
* an explicit dict; keys and values may be integers, negative integers (counted from the end, -1 = last
  block), or the names ``"embeddings"`` (0) and ``"last"`` (L). YAML keys such as ``"3"`` are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

STRATEGIES = ("uniform", "last", "skip")
LayerMap = dict[int, int]


def _resolve_index(value: object, n_layers: int, side: str, key: str) -> int:
    if isinstance(value, str):
        name = value.strip().lower()
        if name in ("embeddings", "embedding", "emb"):
            return 0
        if name == "last":
            return n_layers
        try:
            value = int(name)
        except ValueError:
            raise ValueError(
                f"layer map entry {key!r}: {side} layer {value!r} is not an integer, 'embeddings' or 'last'"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"layer map entry {key!r}: {side} layer {value!r} is not an integer")
    idx = n_layers + 1 + value if value < 0 else value
    if not 0 <= idx <= n_layers:
        raise ValueError(
            f"layer map entry {key!r}: {side} layer {value} is out of range; the {side} has hidden states "
            f"0..{n_layers} (0 = embeddings, {n_layers} = last block; negative values count from the end)"
        )
    return idx


def resolve_layer_map(spec: str | Mapping[object, object], n_student: int, n_teacher: int) -> LayerMap:
    """Resolve a strategy name or an explicit mapping into ``{student_layer: teacher_layer}``.

    ``n_student`` and ``n_teacher`` are the numbers of transformer blocks (``len(hidden_states) - 1``).
    Raises ``ValueError`` naming the offending entry for out-of-range or malformed layers.
    """
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"both models need at least one block; got student {n_student}, teacher {n_teacher}")
    if isinstance(spec, str):
        if spec == "uniform":
            return {i: max(1, round(i * n_teacher / n_student)) for i in range(1, n_student + 1)}
        if spec == "last":
            return {n_student: n_teacher}
        if spec == "skip":
            if n_student < 2:
                raise ValueError("layer map 'skip' needs a student with at least 2 blocks (its last is left to KD)")
            k = max(1, n_teacher // n_student)
            return {i: min(i * k, n_teacher) for i in range(1, n_student)}
        raise ValueError(f"unknown layer map strategy {spec!r}; choose one of {STRATEGIES} or give a dict")
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"layer map must be one of {STRATEGIES} or a non-empty dict; got {spec!r}")
    out: LayerMap = {}
    for key, value in spec.items():
        s = _resolve_index(key, n_student, "student", str(key))
        t = _resolve_index(value, n_teacher, "teacher", str(key))
        if s in out:
            raise ValueError(f"layer map entry {key!r}: student layer {s} is mapped twice")
        out[s] = t
    return dict(sorted(out.items()))


def format_layer_map(mapping: LayerMap) -> str:
    """A one-line human-readable form, e.g. ``student 1 -> teacher 2, student 2 -> teacher 4``."""
    return ", ".join(f"student {s} -> teacher {t}" for s, t in mapping.items())


def save_layer_map(mapping: LayerMap, path: str | Path) -> None:
    """Write the resolved mapping as JSON (keys are student layers)."""
    Path(path).write_text(json.dumps({str(s): t for s, t in mapping.items()}, indent=2) + "\n")


def load_layer_map(path: str | Path) -> LayerMap:
    """Read a mapping written by :func:`save_layer_map`."""
    return {int(s): int(t) for s, t in json.loads(Path(path).read_text()).items()}
