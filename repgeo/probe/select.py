"""Layer selection: which activations of a model to probe.

A *layer spec* is one of

* an exact module name from ``model.named_modules()`` (``"encoder.layer.3.output"``);
* a glob over module names (``"encoder.layer.*.output"``). Matching is done per dotted component
  with :func:`fnmatch.fnmatchcase`: ``*`` / ``?`` / ``[...]`` never cross a ``.`` (so
  ``encoder.layer.*.output`` matches ``encoder.layer.0.output`` but *not*
  ``encoder.layer.0.attention.output``), and a component that is exactly ``**`` matches any number
  (zero or more) of components;
* an ``int`` (or the string ``"hidden_states.<int>"``): an entry of the Hugging Face
  ``hidden_states`` tuple returned with ``output_hidden_states=True``.

``hidden_states`` conventions (transformers 5, checked by the tests): a model with ``L`` blocks
returns ``L + 1`` entries. Index 0 is the embeddings output (for OPT: token + position embeddings;
for BERT: after the embedding LayerNorm). Index ``i`` (1 ≤ i < L) is the output of block ``i - 1``
(the i-th block, counting from 1). The last entry, index ``L`` (== -1), depends on where the final
norm sits:

* BERT (post-LN blocks, no final norm): the output of the last block, ``encoder.layer.{L-1}``;
* OPT (pre-LN, ``do_layer_norm_before=True``) and Llama: the output of the final norm
  (``model.decoder.final_layer_norm`` / ``model.norm``), *not* the raw output of the last decoder
  layer, which appears in no ``hidden_states`` entry (hook the module by name to get it);
* OPT with ``do_layer_norm_before=False`` (e.g. opt-350m) has no final norm: the last block output.

Negative indices count from the end, as in Python; resolved names are normalised to
``"hidden_states.<non-negative int>"``.

Wrappers: ``DistributedDataParallel`` / ``DataParallel`` (``.module``) and ``torch.compile``
(``._orig_mod``) are unwrapped before names are resolved; names may be given with or without the
wrapper prefix (``"module."`` / ``"_orig_mod."``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from .model import unwrap_model

LayerSpec = str | int

_GLOB_CHARS = re.compile(r"[*?\[]")
_HS_RE = re.compile(r"^hidden_states\.(-?\d+)$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Layer:
    """A resolved layer.

    ``name`` is the key used everywhere downstream (sinks, manifests): the module name, or
    ``"hidden_states.<i>"`` with ``i`` non-negative. ``index`` is ``None`` for module layers and the
    ``hidden_states`` index otherwise.
    """

    name: str
    index: int | None = None

    @property
    def is_hidden_state(self) -> bool:
        return self.index is not None


def glob_match(pattern: str, name: str) -> bool:
    """Dotted-component glob: ``*`` stays inside one component, ``**`` spans any number."""
    return _match_parts(pattern.split("."), name.split("."))


def _match_parts(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match_parts(pat[1:], parts[k:]) for k in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pat[0]) and _match_parts(pat[1:], parts[1:])


def _close(query: str, names: Sequence[str]) -> list[str]:
    plain = _GLOB_CHARS.sub("", query)
    close = difflib.get_close_matches(query, names, n=5, cutoff=0.5)
    for cand in difflib.get_close_matches(plain, names, n=5, cutoff=0.5):
        if cand not in close:
            close.append(cand)
    return close[:5]


def num_hidden_states(model: nn.Module) -> int | None:
    """How many hidden states a Hugging Face model returns with ``output_hidden_states=True`` (its text /
    decoder config's ``num_hidden_layers`` + 1, the embeddings included); None for a model without a config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            config = get_text(decoder=True)
        except TypeError:
            config = get_text()
    n = getattr(config, "num_hidden_layers", None)
    return int(n) + 1 if isinstance(n, int) else None


def _hidden_state_layer(index: int, n_states: int | None) -> Layer:
    if n_states is None:
        if index < 0:
            raise ValueError(
                f"hidden_states index {index}: negative indices need a model with "
                "config.num_hidden_layers; use a non-negative index"
            )
        return Layer(f"hidden_states.{index}", index)
    if not -n_states <= index < n_states:
        raise ValueError(
            f"hidden_states index {index} out of range: this model returns {n_states} hidden states "
            f"(valid indices {-n_states}..{n_states - 1}; 0 = embeddings, {n_states - 1} = last)"
        )
    index %= n_states
    return Layer(f"hidden_states.{index}", index)


def resolve_layers(model: nn.Module, layers: LayerSpec | Iterable[LayerSpec]) -> list[Layer]:
    """Resolve layer specs (see module docstring) to a de-duplicated list of :class:`Layer`.

    Order: as requested; a glob expands in ``named_modules()`` order. Raises ``ValueError`` when a
    name or glob matches nothing (listing the closest module names) or when a ``hidden_states``
    index is out of range (naming the valid range).
    """
    model = unwrap_model(model)
    if isinstance(layers, (str, int)):
        layers = [layers]
    names = [n for n, _ in model.named_modules() if n]
    name_set = set(names)
    n_states = num_hidden_states(model)
    out: list[Layer] = []
    for spec in layers:
        if isinstance(spec, bool) or not isinstance(spec, (str, int)):
            raise TypeError(f"layer spec must be a str or int, got {type(spec).__name__}: {spec!r}")
        if isinstance(spec, int):
            found = [_hidden_state_layer(spec, n_states)]
        elif spec in name_set:
            found = [Layer(spec)]
        elif (m := _HS_RE.match(spec)) is not None:
            found = [_hidden_state_layer(int(m.group(1)), n_states)]
        else:
            stripped = spec
            for prefix in _WRAPPER_PREFIXES:
                while stripped.startswith(prefix):
                    stripped = stripped[len(prefix) :]
            if stripped in name_set:
                found = [Layer(stripped)]
            elif _GLOB_CHARS.search(stripped):
                found = [Layer(n) for n in names if glob_match(stripped, n)]
            else:
                found = []
            if not found:
                kind = "glob" if _GLOB_CHARS.search(stripped) else "module name"
                close = _close(stripped, names)
                hint = f" Closest names: {close}." if close else ""
                raise ValueError(
                    f"{kind} {spec!r} matches no module of {type(model).__name__}.{hint} "
                    "(`*` does not cross dots; use `**` for any depth; list_layers() shows all names)"
                )
        for layer in found:
            if layer not in out:
                out.append(layer)
    if not out:
        raise ValueError("no layers requested")
    return out
