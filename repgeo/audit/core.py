"""The layer-by-layer audit of a teacher against a student.

Conventions (stated once for the audit)
---------------------------------------
* X is the teacher's pooled feature matrix of a layer (n × p), Y the student's (n × q); rows are the same n
  stimuli (texts, or their tokens with ``pooling="tokens"``), in the order of ``data``. Metric conventions and
  preprocessing (``center``, ``normalize``) are those of :mod:`repgeo.metrics` (``_prep``).
* A *cell* is one (teacher layer, student layer) pair; every requested metric is computed for every cell.
* Layers are probe specs (:mod:`repgeo.probe.select`): module names or globs (``"encoder.layer.*"``), or
  ``hidden_states`` indices (ints, ``0`` = embeddings, ``-1`` = last). Default: every hidden state of a
  transformers model (``0..num_hidden_layers``).
* Texts are tokenised with right padding (so positions are right for BERT, OPT and Llama alike) and cut to
  ``max_length`` tokens (the end is dropped); the indices of cut texts are reported in ``df.attrs["truncated"]``
  and in the Markdown report. Empty / whitespace-only texts are dropped with a warning and reported in
  ``df.attrs["dropped_empty"]`` (indices into the input).
* Teacher and student may use different tokenizers with a per-text pooling (``mean``, ``cls``, ``last``):
  each model gets its own tokenisation of the same texts. ``pooling="tokens"`` pairs token rows and therefore
  needs identical tokenisation; otherwise a ``ValueError`` says so.
* Uncertainty (:mod:`repgeo.audit.uncertainty`): ``memory`` mode keeps the pooled features and gives
  jackknife (or bootstrap) intervals over stimuli, a permutation p-value (student rows shuffled) and a null
  floor per cell (:mod:`repgeo.audit.table`; use a few dozen stimuli or more: with ~10 the intervals mean
  little); ``stream`` mode keeps only :class:`~repgeo.metrics.Moments` (K blocks per cell) and gives
  block-jackknife intervals, no p-value (:mod:`repgeo.audit.stream`). Under ``torch.distributed``
  (``torchrun``) each rank runs its share of the batches and the Moments
  are all-reduced, so the numbers equal a single-process streaming audit.

* Estimators: by default the bias-aware estimators of :mod:`repgeo.metrics.estimators` (``estimator``), each
  value with its null ``floor`` (the same estimator with the student's rows permuted); sample-size diagnostics
  and the reliability ``flag``: :mod:`repgeo.audit.diagnostics`; how to read them: ``docs/reading-an-audit.md``.

Layout: :mod:`repgeo.audit.stimuli` prepares the stimuli, :mod:`repgeo.audit.table` turns features into the
table, :mod:`repgeo.audit.stream` is the moments-only path; :func:`audit` here joins them to the models.

The result is a long :class:`pandas.DataFrame` with columns ``teacher_layer, student_layer, metric, value, floor,
ci_low, ci_high, p_value, n, p, q, eff_rank_t, eff_rank_s, estimator, flag`` (one row per cell and metric);
``df.attrs`` holds the run's details (layers in order, number of stimuli, truncation, estimator, timings of
each stage in seconds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from repgeo.probe import MemorySink, ShardSink, collect, resolve_layers

from .data import load_model
from .stimuli import default_layers, prepare_stimuli
from .stream import dist_info, stream_audit
from .table import DEFAULT_METRICS, N_FLOOR, audit_features, check_metrics

__all__ = ["DEFAULT_METRICS", "audit", "audit_features"]


def _check_mode(mode: str, center: bool, normalize: Any) -> str:
    """The mode to run: ``stream`` under ``torch.distributed`` (each rank sees only its shard: only Moments
    combine exactly); a clear error for a mode or an option the streaming path cannot honour."""
    if mode not in ("memory", "stream"):
        raise ValueError(f"mode must be 'memory' or 'stream', got {mode!r}")
    if dist_info()[1] > 1:
        mode = "stream"
    if mode == "stream" and normalize == "rows" and center:
        raise ValueError(
            "normalize='rows' with center=True cannot be streamed (each row is centred with the column means of all "
            "stimuli before it is put on the sphere, which one pass over the data does not know); use "
            "mode='memory' on one process, center=False, or normalize='frobenius'"
        )
    return mode


def _model_and_tokenizer(model: nn.Module | str | os.PathLike[str], tokenizer: Any) -> tuple[nn.Module, Any]:
    if isinstance(model, (str, os.PathLike)):
        model, loaded = load_model(str(model))
        return model, tokenizer or loaded
    return model, tokenizer


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", "") if config is not None else ""
    return str(name) or type(model).__name__


def _collected(model: nn.Module, batches: list[Any], names: list[str], pooling: str, cache: Path | None,
               progress: bool) -> Any:
    out = collect(model, batches, names, pooling, ShardSink(cache) if cache else MemorySink(), progress=progress)
    return out.load() if cache else out


def audit(
    teacher: nn.Module | str,
    student: nn.Module | str,
    data: Any,
    *,
    teacher_layers: Any = None,
    student_layers: Any = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    pooling: str = "mean",
    tokenizer: Any = None,
    student_tokenizer: Any = None,
    student_data: Any = None,
    text_column: str | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    mode: str = "memory",
    ci_method: str = "jackknife",
    n_folds: int = 100,
    n_boot: int = 200,
    n_perm: int = 200,
    n_blocks: int = 10,
    ci: float = 0.95,
    seed: int = 0,
    center: bool = True,
    normalize: Any = "frobenius",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    estimator: str = "corrected",
    n_floor: int = N_FLOOR,
) -> pd.DataFrame:
    """Compare ``teacher`` and ``student`` layer by layer on ``data``; see the module docstring for conventions.

    ``teacher`` / ``student``: ``nn.Module`` (any: transformers models, MLPs, CNNs) or a local folder / hub name
    (loaded with ``AutoModel`` and its tokenizer). ``data``: a list of texts, a path to a ``.txt`` / ``.csv`` /
    ``.jsonl`` file (``text_column`` picks the CSV column / JSON field), a :class:`~repgeo.probe.TokenizedTexts`,
    a tensor of inputs (split into ``batch_size`` batches), or a list of batches. ``student_data``: the same
    stimuli prepared for the student when its inputs differ (default: ``data``). ``tokenizer`` /
    ``student_tokenizer``: needed for texts unless the model was given by name; the student defaults to the
    teacher's tokenizer.

    ``mode="memory"`` (default) keeps pooled features and adds intervals (``ci_method``: a delete-one-fold
    jackknife over ``n_folds`` folds of stimuli, or ``n_boot`` bootstrap replicates; see :func:`audit_features`) and
    permutation p-values (``n_perm``); ``mode="stream"`` keeps only Moments (``n_blocks`` jackknife blocks per
    cell; needed for corpora whose features do not fit in memory, and used automatically under
    ``torch.distributed``). ``cache_dir`` (memory mode) stores the features as resumable probe shards in
    ``cache_dir/teacher`` and ``cache_dir/student``; a folder written by another model, layer set or pooling is
    refused, never mixed. ``estimator`` / ``n_floor``: corrected or plug-in values and their null floors (see
    :func:`audit_features`); stream mode keeps only moments, so it reports plug-in values without floors (and
    flags them). Returns the long table (module docstring).
    """
    check_metrics(metrics)
    mode = _check_mode(mode, center, normalize)
    teacher, t_tok = _model_and_tokenizer(teacher, tokenizer)
    student, s_tok = _model_and_tokenizer(student, student_tokenizer)
    stimuli = prepare_stimuli(data, tokenizer=t_tok, student_tokenizer=s_tok, student_data=student_data,
                              text_column=text_column, pooling=pooling, batch_size=batch_size, max_length=max_length)
    t_specs = default_layers(teacher, "teacher") if teacher_layers is None else teacher_layers
    s_specs = default_layers(student, "student") if student_layers is None else student_layers
    t_names = [ly.name for ly in resolve_layers(teacher, t_specs)]
    s_names = [ly.name for ly in resolve_layers(student, s_specs)]
    cells = [(t, s) for t in t_names for s in s_names]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if mode == "memory":
        cache = Path(cache_dir) if cache_dir is not None else None
        t_feats = _collected(teacher, stimuli.teacher, t_names, pooling, cache and cache / "teacher", progress)
        s_feats = _collected(student, stimuli.student, s_names, pooling, cache and cache / "student", progress)
        timings["forward"] = time.perf_counter() - t0
        df = audit_features(t_feats, s_feats, metrics, cells=cells, groups=stimuli.groups(pooling), n_boot=n_boot,
                            n_perm=n_perm, ci_method=ci_method, n_folds=n_folds, estimator=estimator,
                            n_floor=n_floor, ci=ci, seed=seed, center=center, normalize=normalize)
    else:
        df = stream_audit(teacher, student, stimuli.teacher, stimuli.student, cells, list(metrics), pooling=pooling,
                          n_blocks=n_blocks, ci=ci, center=center, normalize=normalize, progress=progress,
                          timings=timings)
    df.attrs["timings"] = {**timings, **df.attrs.get("timings", {})}
    df.attrs.update(pooling=pooling, mode=mode, max_length=max_length, n_stimuli=stimuli.n,
                    teacher_model=_model_name(teacher), student_model=_model_name(student), **stimuli.info)
    return df
