"""Building a student: from a model folder, or derived from the teacher.

``derive_student(teacher, keep_every=k)`` keeps teacher blocks ``0, k, 2k, ...`` (DistilBERT-style
initialisation: embeddings, the kept blocks, final norm and heads are copied from the teacher).
``hidden_size=h`` (narrower than the teacher) builds the same architecture at width h with a fresh random
initialisation (weights of another width cannot be copied); the head count is reduced to divide h when needed.
Both may be combined: fewer blocks at a narrower width, freshly initialised.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import transformers

# Prefixes of the block list in BERT (encoder.layer.N), OPT (decoder.layers.N), Llama / Mistral (layers.N), GPT-2 (h.N)
_BLOCK = re.compile(r"^(.*?(?:encoder\.layer|decoder\.layers|model\.layers|transformer\.h)\.)(\d+)\.(.*)$")


def num_blocks(config: transformers.PretrainedConfig) -> int:
    """Number of transformer blocks of a config."""
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None) is not None:
            return int(getattr(config, key))
    raise ValueError(f"cannot find the number of layers in config {type(config).__name__}")


def kept_blocks(n_layers: int, keep_every: int) -> list[int]:
    """Teacher block indices kept by ``keep_every`` (``0, k, 2k, ...``)."""
    if keep_every < 1:
        raise ValueError(f"keep_every must be >= 1; got {keep_every}")
    return list(range(0, n_layers, keep_every))


def _narrow(config: Any, hidden_size: int) -> None:
    old = config.hidden_size
    ratio = hidden_size / old
    heads = config.num_attention_heads
    while hidden_size % heads:
        heads -= 1
    config.hidden_size = hidden_size
    config.num_attention_heads = heads
    if getattr(config, "num_key_value_heads", None) is not None:
        kv = min(config.num_key_value_heads, heads)
        while heads % kv:
            kv -= 1
        config.num_key_value_heads = kv
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = hidden_size // heads
    for key in ("intermediate_size", "ffn_dim"):
        if getattr(config, key, None):
            setattr(config, key, max(1, round(getattr(config, key) * ratio)))
    if getattr(config, "word_embed_proj_dim", None) == old:
        config.word_embed_proj_dim = hidden_size


def derive_student(
    teacher: transformers.PreTrainedModel,
    *,
    keep_every: int | None = None,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    seed: int = 0,
) -> transformers.PreTrainedModel:
    """A student of the teacher's class with fewer blocks and/or a narrower width (see the module docstring).

    ``keep_every``: keep blocks 0, k, 2k, ...; ``num_layers``: alternatively, the number of blocks (evenly
    spread kept blocks when copying). Weights are copied when the width is unchanged; otherwise fresh.
    """
    config = copy.deepcopy(teacher.config)
    n = num_blocks(config)
    if keep_every is not None and num_layers is not None:
        raise ValueError("give keep_every or num_layers, not both")
    if num_layers is not None:
        if not 1 <= num_layers <= n:
            raise ValueError(f"num_layers must be in 1..{n} (the teacher's blocks); got {num_layers}")
        step = (n - 1) / max(1, num_layers - 1)
        kept = sorted({round(i * step) for i in range(num_layers)}) if num_layers > 1 else [0]
    else:
        kept = kept_blocks(n, keep_every or 1)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in kept]
    fresh = hidden_size is not None and hidden_size != teacher.config.hidden_size
    if fresh:
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive; got {hidden_size}")
        _narrow(config, hidden_size)
    transformers.set_seed(seed)
    student = type(teacher)(config)
    if fresh:
        return student
    index = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _BLOCK.match(key)
        if m is None:
            state[key] = value
        elif int(m.group(2)) in index:
            state[f"{m.group(1)}{index[int(m.group(2))]}.{m.group(3)}"] = value
    _, unexpected = student.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"deriving the student left unexpected teacher weights: {unexpected[:5]}")
    student.tie_weights()
    return student
