"""Layer probes: capture, pool and store activations of any ``torch.nn.Module``.

Knows models, not metrics. Typical use::

    from repgeo.probe import collect, tokenize_texts, ShardSink

    batches = tokenize_texts(tokenizer, texts, batch_size=32, max_length=128)
    feats = collect(model, batches, layers=["encoder.layer.*.output", -1], pooling="mean")
    # feats: {"encoder.layer.0.output": (n_texts, hidden), ..., "hidden_states.2": ...}

    reader = collect(model, batches, layers=[3], pooling="tokens", sink=ShardSink("acts/", dtype="float16"))

Conventions: layer specs and ``hidden_states`` indexing in :mod:`repgeo.probe.select`; pooling in
:mod:`repgeo.probe.pooling`; calling, unwrapping and devices in :mod:`repgeo.probe.model` (the bottom of the
package); batches in :mod:`repgeo.probe.collect`; hooks and :func:`list_layers` in :mod:`repgeo.probe.hooks`; sinks,
shard format, resume and locking in :mod:`repgeo.probe.sinks`.
"""

from .collect import (
    TOKEN_MASK_KEY,
    Probe,
    TokenizedTexts,
    batch_fingerprint,
    collect,
    iter_features,
    model_identity,
    stream_pairs,
    tokenize_texts,
)
from .hooks import capture, list_layers
from .model import call_model, eval_no_grad, first_tensor, model_device, unwrap_model
from .pooling import POOLINGS, pool
from .select import Layer, LayerSpec, glob_match, resolve_layers
from .sinks import (
    CallbackSink,
    FolderLockedError,
    MemorySink,
    PairStreamSink,
    ShardCorruptionError,
    ShardReader,
    ShardSink,
    Sink,
    StaleCollectionError,
    load_shards,
    read_manifest,
)

__all__ = [
    "POOLINGS",
    "TOKEN_MASK_KEY",
    "CallbackSink",
    "FolderLockedError",
    "Layer",
    "LayerSpec",
    "MemorySink",
    "PairStreamSink",
    "Probe",
    "ShardCorruptionError",
    "ShardReader",
    "ShardSink",
    "Sink",
    "StaleCollectionError",
    "TokenizedTexts",
    "batch_fingerprint",
    "call_model",
    "capture",
    "collect",
    "eval_no_grad",
    "first_tensor",
    "glob_match",
    "iter_features",
    "list_layers",
    "load_shards",
    "model_device",
    "model_identity",
    "pool",
    "read_manifest",
    "resolve_layers",
    "stream_pairs",
    "tokenize_texts",
    "unwrap_model",
]
