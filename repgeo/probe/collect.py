"""The driver: run a model over batches and pool the requested layers.

Batches are

* a dict of tensors (``input_ids``, ``attention_mask``, ...) passed as keyword arguments. The
  ``attention_mask`` (1 = token, 0 = padding) is used for pooling. The reserved key ``token_mask``
  (bool, batch × seq; e.g. response-only tokens of a causal LM) is *not* passed to the model: it is
  AND-ed with the attention mask for pooling (see :mod:`repgeo.probe.pooling`);
* a tensor, passed positionally (plain ``nn.Module``\\ s: MLPs, CNNs);
* a tuple/list of tensors, passed as positional arguments.

Tensors are moved to the model's device (the device of its first parameter, or ``device=``).
The model runs in eval mode under ``torch.no_grad()``; every submodule's train/eval flag is restored
afterwards. Features are float32 tensors on the model's device, one dict ``{layer name: rows × dim}``
per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from repgeo._validation import POOLINGS, check_choice, check_int

from .hooks import capture, run_forward
from .model import call_model, eval_mode, model_device, move_to, unwrap_model
from .pooling import pool
from .select import Layer, LayerSpec, resolve_layers
from .sinks import MemorySink, PairStreamSink, Sink

TOKEN_MASK_KEY = "token_mask"


def batch_fingerprint(batch: Any) -> str:
    """sha256 over the batch's tensors (keys, dtypes, shapes, bytes): identifies an input batch."""
    h = hashlib.sha256()

    def feed(x: Any, key: str) -> None:
        h.update(key.encode())
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, Mapping):
            for k in sorted(x):
                feed(x[k], f"{key}/{k}")
        elif isinstance(x, (tuple, list)):
            for i, v in enumerate(x):
                feed(v, f"{key}/{i}")
        else:
            h.update(repr(x).encode())

    feed(batch, "")
    return h.hexdigest()


def model_identity(model: nn.Module, *, hash_weights: bool = True) -> dict[str, Any]:
    """``model`` (config ``_name_or_path`` or class name), ``model_class``, ``revision`` (the hub
    commit hash when loaded from the hub, else ``None``) and ``weights_sha256`` (sha256 over the
    state dict's names, dtypes, shapes and bytes; omitted when ``hash_weights`` is false)."""
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    name = getattr(config, "_name_or_path", "") or getattr(inner, "name_or_path", "") or ""
    out: dict[str, Any] = {
        "model": str(name) or type(inner).__qualname__,
        "model_class": f"{type(inner).__module__}.{type(inner).__qualname__}",
        "revision": getattr(config, "_commit_hash", None),
    }
    if hash_weights:
        h = hashlib.sha256()
        for key, t in sorted(inner.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        out["weights_sha256"] = h.hexdigest()
    return out


class Probe:
    """Reusable feature extractor: ``with Probe(model, layers, pooling) as probe: feats = probe(batch)``.

    Inside the block the hooks are registered and the model is in eval mode (both undone on exit);
    each call runs one forward pass under ``torch.no_grad()`` and returns ``{layer name: float32
    rows}``. ``stop_early`` (default) aborts the forward pass after the last requested module has
    run; it is disabled automatically when ``hidden_states`` indices are requested.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Iterable[LayerSpec],
        pooling: str = "mean",
        *,
        stop_early: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        check_choice("pooling", pooling, POOLINGS)
        self.model = unwrap_model(model)
        self.layers: list[Layer] = resolve_layers(self.model, layers)
        self.pooling = pooling
        self.module_layers = [ly.name for ly in self.layers if not ly.is_hidden_state]
        self.hs_layers = [ly for ly in self.layers if ly.is_hidden_state]
        self.stop_early = stop_early and not self.hs_layers
        self.device = torch.device(device) if device is not None else model_device(self.model)
        self._stack: Any = None
        self._cap: Any = None

    @property
    def names(self) -> list[str]:
        return [ly.name for ly in self.layers]

    def __enter__(self) -> Probe:
        from contextlib import ExitStack

        stack = ExitStack()
        try:
            stack.enter_context(eval_mode(self.model))
            self._cap = stack.enter_context(capture(self.model, self.module_layers, stop_early=self.stop_early))
        except BaseException:
            stack.close()
            raise
        # no_grad is entered per forward pass in __call__, not here, so that a generator built on
        # Probe does not leak grad mode into its consumer between batches.
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack, self._cap = self._stack, None, None
        if stack is not None:
            stack.close()

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        if self._cap is None:
            raise RuntimeError("use Probe inside a `with` block")
        token_mask = None
        attention_mask = None
        if isinstance(batch, Mapping):
            batch = dict(batch)
            token_mask = batch.pop(TOKEN_MASK_KEY, None)
            attention_mask = batch.get("attention_mask")
        batch = move_to(batch, self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if token_mask is not None:
            token_mask = token_mask.to(self.device)

        def transform(name: str, t: torch.Tensor) -> torch.Tensor:
            try:
                return pool(t, attention_mask, self.pooling, token_mask)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from None

        self._cap.reset(transform)
        with torch.no_grad():
            out, _stopped = run_forward(
                lambda: call_model(self.model, batch, output_hidden_states=bool(self.hs_layers))
            )
        missing = self._cap.missing()
        if missing:
            raise RuntimeError(f"layers {missing} were not called during the forward pass")
        feats: dict[str, torch.Tensor] = {}
        if self.hs_layers:
            hs = getattr(out, "hidden_states", None)
            if hs is None and isinstance(out, Mapping):
                hs = out.get("hidden_states")
            if not isinstance(hs, (tuple, list)):
                raise TypeError(
                    f"{type(self.model).__name__} returned no hidden_states; select modules by name instead"
                )
            for ly in self.hs_layers:
                assert ly.index is not None
                if ly.index >= len(hs):
                    raise ValueError(
                        f"hidden_states index {ly.index} out of range: the model returned {len(hs)} "
                        f"hidden states (valid 0..{len(hs) - 1})"
                    )
                feats[ly.name] = transform(ly.name, hs[ly.index].detach())
        values = self._cap.values
        return {name: (values[name] if name in values else feats[name]) for name in self.names}


def _progress(batches: Any, progress: bool, desc: str) -> Any:
    if not progress:
        return batches
    from tqdm.auto import tqdm

    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(batches, total=total, desc=desc, unit="batch")


def iter_features(
    model: nn.Module,
    batches: Iterable[Any],
    layers: LayerSpec | Iterable[LayerSpec],
    pooling: str = "mean",
    *,
    stop_early: bool = True,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{layer name: float32 rows × dim}`` per batch (on the model's device).

    Hooks and eval mode stay in place until the generator is exhausted or closed (use
    ``contextlib.closing`` when you may stop early).
    """
    with Probe(model, layers, pooling, stop_early=stop_early, device=device) as probe:
        for batch in _progress(batches, progress, "probe"):
            yield probe(batch)


def collect(
    model: nn.Module,
    batches: Iterable[Any],
    layers: LayerSpec | Iterable[LayerSpec],
    pooling: str = "mean",
    sink: Sink | None = None,
    *,
    progress: bool = True,
    stop_early: bool = True,
    device: torch.device | str | None = None,
) -> Any:
    """Run ``model`` over ``batches`` and send each batch's pooled features to ``sink``.

    Returns ``sink.finish()``: ``{layer: np.ndarray}`` for the default :class:`MemorySink`, a
    :class:`ShardReader` for a :class:`ShardSink`. With a resumed ``ShardSink`` the batches already
    stored are skipped (not run), so ``batches`` must come in the same order as before.
    Layer conventions: :mod:`repgeo.probe.select`; pooling: :mod:`repgeo.probe.pooling`.
    """
    sink = MemorySink() if sink is None else sink
    probe = Probe(model, layers, pooling, stop_early=stop_early, device=device)
    meta: dict[str, Any] = {"layers": probe.names, "pooling": pooling}
    if sink.wants_identity:
        meta = {**model_identity(model, hash_weights=getattr(sink, "weights_hash", True)), **meta}
    n_done = sink.start(meta)
    try:
        with probe:
            for i, batch in enumerate(_progress(batches, progress, "collect")):
                fp = batch_fingerprint(batch) if sink.wants_fingerprint else None
                if i < n_done:
                    sink.skip(i, fp)
                    continue
                sink.write(i, probe(batch), fp)
    except BaseException:
        sink.abort()
        raise
    return sink.finish()


def stream_pairs(
    teacher: nn.Module,
    student: nn.Module,
    batches: Iterable[Any],
    pairs: Sequence[tuple[LayerSpec, LayerSpec]],
    accumulator_factory: Any,
    *,
    pooling: str = "mean",
    student_batches: Iterable[Any] | None = None,
    progress: bool = True,
    stop_early: bool = True,
) -> dict[tuple[str, str], Any]:
    """Feed (teacher layer, student layer) feature chunks of each batch into one accumulator per
    pair (``accumulator_factory()``, anything with ``.update(X, Y)``, e.g. ``repgeo.metrics.Moments``).

    ``student_batches``: the same stimuli tokenised for the student, when its tokenizer differs
    (then use a per-stimulus pooling, not ``"tokens"``); defaults to ``batches``, which must then be
    re-iterable (a list). Each spec of a pair must resolve to exactly one layer. Returns
    ``{(teacher_name, student_name): accumulator}`` with resolved names (``"hidden_states.<i>"``).
    """

    def one(model: nn.Module, spec: LayerSpec, who: str) -> str:
        found = resolve_layers(model, spec)
        if len(found) != 1:
            raise ValueError(f"{who} layer {spec!r} matches {len(found)} layers; give one layer per pair")
        return found[0].name

    resolved = [(one(teacher, t, "teacher"), one(student, s, "student")) for t, s in pairs]
    sink = PairStreamSink(resolved, accumulator_factory)
    t_layers = list(dict.fromkeys(t for t, _ in resolved))
    s_layers = list(dict.fromkeys(s for _, s in resolved))
    s_batches = batches if student_batches is None else student_batches
    with (
        Probe(teacher, t_layers, pooling, stop_early=stop_early) as tp,
        Probe(student, s_layers, pooling, stop_early=stop_early) as sp,
    ):
        for tb, sb in zip(_progress(batches, progress, "teacher/student"), s_batches, strict=True):
            sink.update(tp(tb), sp(sb))
    return sink.result()


# ----------------------------------------------------------------------------------------------------
# tokenisation


@dataclass
class TokenizedTexts:
    """Batches of tokenised texts. Iterate it (or use ``.batches``) to feed :func:`collect`.

    ``truncated``: indices of the texts longer than ``max_length`` tokens (special tokens included)
    that were cut to ``max_length``.
    """

    batches: list[dict[str, torch.Tensor]]
    n_texts: int
    max_length: int
    truncated: list[int] = field(default_factory=list)

    @property
    def n_truncated(self) -> int:
        return len(self.truncated)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def tokenize_texts(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    padding_side: str | None = None,
    warn: bool = True,
) -> TokenizedTexts:
    """Tokenise ``texts`` into batches of ``batch_size`` dicts (``input_ids``, ``attention_mask``,
    ...) padded to the longest text of each batch.

    Texts longer than ``max_length`` tokens (special tokens included) are truncated to
    ``max_length`` on the tokenizer's ``truncation_side`` (default: the end is cut); their indices
    are in ``.truncated`` and a warning gives the count. ``padding_side`` (``"left"``/``"right"``)
    overrides the tokenizer's for this call. Empty or whitespace-only texts raise ``ValueError``
    naming their indices; a tokenizer without a pad token raises ``ValueError``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts at indices {bad[:10]} are not strings")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"{len(empty)} empty text(s) at indices {empty[:10]}; remove them before probing")
    check_int("batch_size", batch_size, 1)
    check_int("max_length", max_length, 1)
    if getattr(tokenizer, "pad_token", None) is None:
        raise ValueError(
            "the tokenizer has no pad token; set one first (e.g. tokenizer.pad_token = tokenizer.eos_token)"
        )
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    old_side = getattr(tokenizer, "padding_side", None)
    batches: list[dict[str, torch.Tensor]] = []
    truncated: list[int] = []
    try:
        if padding_side is not None:
            tokenizer.padding_side = padding_side
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            lengths = [len(ids) for ids in tokenizer(chunk, truncation=False)["input_ids"]]
            truncated += [start + j for j, n in enumerate(lengths) if n > max_length]
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            batches.append(dict(enc))
    finally:
        if padding_side is not None:
            tokenizer.padding_side = old_side
    if truncated and warn:
        import warnings

        warnings.warn(
            f"{len(truncated)} of {len(texts)} texts were truncated to max_length={max_length} tokens",
            stacklevel=2,
        )
    return TokenizedTexts(batches=batches, n_texts=len(texts), max_length=max_length, truncated=truncated)
