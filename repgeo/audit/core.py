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
  bias-corrected percentile bootstrap intervals over stimuli and a permutation p-value (student rows shuffled)
  per cell (use a few dozen stimuli or more: with ~10 the intervals mean little); ``stream`` mode keeps only
  :class:`~repgeo.metrics.Moments` (K blocks per cell) and gives block-jackknife intervals, no
  p-value. Under ``torch.distributed`` (``torchrun``) each rank runs its share of the batches and the Moments
  are all-reduced, so the numbers equal a single-process streaming audit.

* Estimators: by default the bias-aware estimators of :mod:`repgeo.metrics.estimators` (``estimator``), each
  value with its null ``floor`` (the same estimator with the student's rows permuted); sample-size diagnostics
  and the reliability ``flag``: :mod:`repgeo.audit.diagnostics`; how to read them: ``docs/reading-an-audit.md``.

The result is a long :class:`pandas.DataFrame` with columns ``teacher_layer, student_layer, metric, value, floor,
ci_low, ci_high, p_value, n, p, q, eff_rank_t, eff_rank_s, estimator, flag`` (one row per cell and metric);
``df.attrs`` holds the run's details (layers in order, number of stimuli, truncation, estimator, timings of
each stage in seconds).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from repgeo.metrics import Moments, compare, get
from repgeo.metrics.estimators import CORRECTED_BOUNDS, corrected, effective_rank, heldout_terms
from repgeo.probe import (
    TOKEN_MASK_KEY,
    MemorySink,
    Probe,
    ShardSink,
    TokenizedTexts,
    collect,
    resolve_layers,
    tokenize_texts,
)

from .data import load_model, read_texts
from .diagnostics import flag
from .uncertainty import (
    bootstrap_weights,
    floor_values,
    jackknife_interval,
    jackknife_se,
    jackknife_weights,
    normal_interval,
    percentile_interval,
    permutation_indices,
    permutation_pvalue,
    replicate_values,
)

__all__ = ["DEFAULT_METRICS", "audit", "audit_features"]

DEFAULT_METRICS: tuple[str, ...] = ("procrustes", "cka", "fg")
COLUMNS = ["teacher_layer", "student_layer", "metric", "value", "floor", "ci_low", "ci_high", "p_value", "n", "p", "q",
           "eff_rank_t", "eff_rank_s", "estimator", "flag"]
ESTIMATORS = ("corrected", "plugin")
N_FLOOR = 5
SENTENCE_POOLINGS = ("mean", "cls", "last")


# ----------------------------------------------------------------------------------------------------
# features -> table


def audit_features(
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    cells: Sequence[tuple[str, str]] | None = None,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    n_perm: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    center: bool = True,
    normalize: Any = "frobenius",
    ci_method: str = "jackknife",
    n_folds: int = 100,
    estimator: str = "corrected",
    n_floor: int = N_FLOOR,
) -> pd.DataFrame:
    """Audit table from pooled features already in memory: ``{layer: rows × dim}`` for each model (e.g. what
    :func:`repgeo.probe.collect` returns). ``cells`` defaults to every (teacher layer, student layer) pair.
    ``groups`` (rows → stimulus id) makes the resampling act on stimuli rather than rows (token pooling).

    Intervals (``ci_method``): ``"jackknife"`` (default) — a delete-one-fold jackknife over ``n_folds`` random
    folds of stimuli (leave-one-stimulus-out when there are fewer stimuli), normal interval ``value ± z·se``
    clipped to the metric's range; ``"bootstrap"`` — ``n_boot`` replicates, bias-corrected percentile
    intervals. The bootstrap duplicates stimuli, which makes every replicate look more aligned than the data
    when there are fewer stimuli than features (n < p, the usual case for sentence-level audits), so its
    intervals are then one-sided; the jackknife never duplicates a stimulus. ``n_boot`` (bootstrap) or
    ``n_folds`` (jackknife) = 0 and ``n_perm`` = 0 turn the intervals / p-values off (NaN).

    ``estimator="corrected"`` (default) reports the bias-aware estimators of
    :mod:`repgeo.metrics.estimators` (cross-fitted nuclear norm for Procrustes / NBS, U-statistic FG, debiased
    CKA, held-out projection-MSE; rows of a stimulus stay in one fold); ``"plugin"`` the plug-in formulas. The
    permutation p-value always tests the plug-in statistic (a valid test whatever the statistic). Intervals of a
    corrected value are its value ± z·SE with the jackknife (or bootstrap) SE of the plug-in estimator -- except
    held-out projection-MSE, whose SE is the jackknife over stimuli of its per-stimulus residual ratio -- so
    they omit the correction's own variance. ``floor``: the same estimator's mean over the first ``n_floor``
    of the permutations (``min(n_floor, n_perm)``; NaN when ``n_perm = 0``): the value a student with the
    stimulus pairing broken gets. Diagnostics (``n``, ``p``, ``q``, effective ranks, ``flag``):
    :mod:`repgeo.audit.diagnostics`.
    """
    _check_metrics(metrics)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    if estimator == "corrected" and (center is not True or normalize not in ("frobenius", "rows")):
        raise ValueError(
            "estimator='corrected' needs center=True and normalize='frobenius' or 'rows' (it estimates "
            f"population covariances); got center={center!r}, normalize={normalize!r}: use estimator='plugin'"
        )
    if not isinstance(n_floor, int) or n_floor < 0:
        raise ValueError(f"n_floor must be a non-negative integer; got {n_floor!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    t_feats = {k: _as_2d(v, f"teacher layer {k!r}") for k, v in teacher.items()}
    s_feats = {k: _as_2d(v, f"student layer {k!r}") for k, v in student.items()}
    if not t_feats or not s_feats:
        raise ValueError("no features: give at least one teacher layer and one student layer")
    if cells is None:
        cells = [(t, s) for t in t_feats for s in s_feats]
    n_rows = {a.shape[0] for a in [*t_feats.values(), *s_feats.values()]}
    if len(n_rows) != 1:
        t_n = {k: v.shape[0] for k, v in t_feats.items()}
        s_n = {k: v.shape[0] for k, v in s_feats.items()}
        raise ValueError(
            f"teacher and student have different numbers of rows (stimuli): teacher {t_n}, student {s_n}. "
            "Both models must see the same stimuli in the same order (token pooling with different "
            "tokenizers cannot be paired)"
        )
    n = n_rows.pop()
    if n < 3:
        raise ValueError(f"an audit needs at least 3 stimuli; got {n}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one entry per row ({n}); got shape {groups.shape}")
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    fns = {m: corrected(m) if estimator == "corrected" else None for m in metrics}
    # plug-in values: reported (plugin), or needed for the p-value and the interval's shift (corrected)
    resampled = n_perm > 0 or (n_folds if ci_method == "jackknife" else n_boot) > 0
    need = [m for m in metrics if not fns[m] or resampled]
    plug = {
        cell: {m: float(v) for m, v in compare(t_feats[cell[0]], s_feats[cell[1]], need, center=center,
                                                normalize=normalize).items()} if need else {}
        for cell in cells
    }
    opts = {"groups": groups, "seed": seed, "center": center, "normalize": normalize}

    def value(m: str, X: np.ndarray, Y: np.ndarray) -> float:
        return float(fns[m](X, Y, **opts))  # type: ignore[misc]

    points = {
        cell: {m: (value(m, t_feats[cell[0]], s_feats[cell[1]]) if fns[m] else plug[cell][m]) for m in metrics}
        for cell in cells
    }
    timings["point"] = time.perf_counter() - t0

    if ci_method not in ("jackknife", "bootstrap"):
        raise ValueError(f"ci_method must be 'jackknife' or 'bootstrap'; got {ci_method!r}")
    t0 = time.perf_counter()
    boots, weights = None, None
    replicates = n_folds if ci_method == "jackknife" else n_boot
    if replicates > 0:
        if ci_method == "jackknife":
            weights = jackknife_weights(groups, n_folds, rng)
        else:
            weights = bootstrap_weights(groups, n_boot, rng)
        boots = replicate_values(t_feats, s_feats, cells, metrics, weights=weights, center=center,
                                 normalize=normalize)
        if estimator == "corrected" and "proj_mse" in metrics:
            for cell in cells:
                r, t = heldout_terms(t_feats[cell[0]], s_feats[cell[1]], **opts)
                boots[cell]["proj_mse"] = (weights @ r) / (weights @ t)
    timings[ci_method] = time.perf_counter() - t0
    t0 = time.perf_counter()
    perms, floors = None, {cell: dict.fromkeys(metrics, math.nan) for cell in cells}
    if n_perm > 0:
        idx = permutation_indices(n, n_perm, rng)
        perms = replicate_values(t_feats, s_feats, cells, metrics, perms=idx, center=center, normalize=normalize)
        floors = floor_values(t_feats, s_feats, cells, metrics, idx[: min(n_floor, n_perm)], perms, fns, opts)
    timings["permutation+floor"] = time.perf_counter() - t0

    ranks = {("t", k): effective_rank(v) for k, v in t_feats.items() if k in {c[0] for c in cells}}
    ranks.update({("s", k): effective_rank(v) for k, v in s_feats.items() if k in {c[1] for c in cells}})
    rows = []
    for cell in cells:
        p, q = t_feats[cell[0]].shape[1], s_feats[cell[1]].shape[1]
        for m in metrics:
            value_m = points[cell][m]
            used = "corrected" if fns[m] else ("corrected" if m == "cka_debiased" else "plugin")
            shift = value_m - plug[cell][m] if fns[m] and m != "proj_mse" and boots is not None else 0.0
            bounds = CORRECTED_BOUNDS.get(m, get(m).bounds) if fns[m] else get(m).bounds
            if boots is None:
                lo, hi = math.nan, math.nan
            elif ci_method == "jackknife":
                lo, hi = normal_interval(value_m, jackknife_se(boots[cell][m]), ci, bounds)
            else:
                lo, hi = percentile_interval(boots[cell][m] + shift, ci, value_m)
            pv = permutation_pvalue(plug[cell][m], perms[cell][m], get(m).kind) if perms is not None else math.nan
            rows.append((cell[0], cell[1], m, value_m, floors[cell][m], lo, hi, pv, n, p, q, ranks[("t", cell[0])],
                         ranks[("s", cell[1])], used, flag(n, p, q, m, used)))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update(
        teacher_layers=list(dict.fromkeys(c[0] for c in cells)),
        student_layers=list(dict.fromkeys(c[1] for c in cells)),
        metrics=list(metrics),
        n_rows=n,
        n_stimuli=int(groups.max()) + 1,
        uncertainty=(
            "delete-one-fold jackknife over stimuli (normal interval)" if ci_method == "jackknife"
            else "bootstrap (bias-corrected percentile, stimuli resampled)"
        ) + " + permutation null (student rows shuffled)",
        estimator=estimator,
        n_floor=min(n_floor, n_perm),
        ci=ci,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
        center=center,
        normalize=normalize,
        timings=timings,
    )
    return df


def _as_2d(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows × features), got shape {a.shape}")
    return a


def _check_metrics(metrics: Sequence[str]) -> None:
    if isinstance(metrics, str):
        raise TypeError("metrics must be a list of names, e.g. ['procrustes', 'cka']")
    if not metrics:
        raise ValueError("no metrics requested")
    for m in metrics:
        get(m)  # raises with the available names


# ----------------------------------------------------------------------------------------------------
# models + data -> features


def _is_texts(data: Any) -> bool:
    return isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) > 0 and all(
        isinstance(t, str) for t in data
    )


def _tensor_batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("the data tensor holds no stimuli")
    return [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)]


def _batches_of(data: Any, batch_size: int) -> list[Any]:
    """Non-text data as a list of batches."""
    if isinstance(data, TokenizedTexts):
        return list(data.batches)
    if isinstance(data, torch.Tensor):
        return _tensor_batches(data, batch_size)
    if isinstance(data, np.ndarray):
        return _tensor_batches(torch.from_numpy(data), batch_size)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        out = list(data)
        if not out:
            raise ValueError("data holds no batches")
        return out
    if isinstance(data, Mapping):
        return [data]
    raise TypeError(
        f"data must be texts, a path to a .txt/.csv/.jsonl file, a tensor, or a list of batches; got {type(data)}"
    )


def _batch_rows(batch: Any, pooling: str) -> np.ndarray:
    """Rows per stimulus of one batch (1 each, or the number of pooled tokens with ``pooling='tokens'``)."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        ids = batch.get("input_ids")
        ref = mask if mask is not None else ids
        if ref is None:
            ref = next(v for v in batch.values() if isinstance(v, torch.Tensor))
        b = ref.shape[0]
        if pooling != "tokens":
            return np.ones(b, dtype=np.int64)
        eff = (mask != 0) if mask is not None else torch.ones(ref.shape[:2], dtype=torch.bool)
        if batch.get(TOKEN_MASK_KEY) is not None:
            eff = eff & batch[TOKEN_MASK_KEY].bool()
        return eff.sum(dim=1).cpu().numpy().astype(np.int64)
    first = batch if isinstance(batch, torch.Tensor) else batch[0]
    if pooling == "tokens":
        return np.full(first.shape[0], first.shape[1] if first.ndim > 1 else 1, dtype=np.int64)
    return np.ones(first.shape[0], dtype=np.int64)


def _default_layers(model: nn.Module, who: str) -> list[int]:
    from repgeo.probe.select import num_hidden_states, unwrap_model

    n = num_hidden_states(unwrap_model(model))
    if n is None:
        raise ValueError(
            f"{who}_layers is required for a model without config.num_hidden_layers "
            f"({type(model).__name__}); give module names or globs (see `repgeo layers` / list_layers)"
        )
    return list(range(n))


def _same_tokenization(a: Sequence[Mapping[str, torch.Tensor]], b: Sequence[Mapping[str, torch.Tensor]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for key in ("input_ids", "attention_mask"):
            if key in x or key in y:
                if key not in x or key not in y or x[key].shape != y[key].shape or not torch.equal(x[key], y[key]):
                    return False
    return True


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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
    _check_metrics(metrics)
    if mode not in ("memory", "stream"):
        raise ValueError(f"mode must be 'memory' or 'stream', got {mode!r}")
    rank, world = _dist_info()
    if world > 1 and mode == "memory":
        mode = "stream"  # each rank sees only its shard: only Moments can be combined exactly
    if mode == "stream" and normalize == "rows" and center:
        raise ValueError(
            "normalize='rows' with center=True cannot be streamed (each row is centred with the column means of all "
            "stimuli before it is put on the sphere, which one pass over the data does not know); use "
            "mode='memory' on one process, center=False, or normalize='frobenius'"
        )
    timings: dict[str, float] = {}
    info: dict[str, Any] = {"dropped_empty": [], "truncated": []}

    t_tok, s_tok = tokenizer, student_tokenizer
    if isinstance(teacher, (str, os.PathLike)):
        teacher, loaded = load_model(str(teacher))
        t_tok = t_tok or loaded
    if isinstance(student, (str, os.PathLike)):
        student, loaded = load_model(str(student))
        s_tok = s_tok or loaded
    s_tok = s_tok or t_tok

    if isinstance(data, (str, os.PathLike)):
        data = read_texts(data, text_column)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) == 0:
        raise ValueError("data holds no stimuli (empty list)")

    if _is_texts(data):
        texts = list(data)
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            warnings.warn(f"dropped {len(empty)} empty text(s) at indices {empty[:10]}", stacklevel=2)
            texts = [t for t in texts if t.strip()]
            info["dropped_empty"] = empty
        if not texts:
            raise ValueError("data holds no non-empty texts")
        if t_tok is None:
            raise ValueError("texts need a tokenizer: pass tokenizer=... (or give the teacher by folder / hub name)")
        kw = {"batch_size": batch_size, "max_length": max_length, "padding_side": "right", "warn": False}
        t_tt = tokenize_texts(t_tok, texts, **kw)
        t_batches = list(t_tt.batches)
        truncated = set(t_tt.truncated)
        if s_tok is t_tok:
            s_batches = t_batches
        else:
            s_tt = tokenize_texts(s_tok, texts, **kw)
            truncated |= set(s_tt.truncated)
            s_batches = t_batches if _same_tokenization(t_batches, s_tt.batches) else list(s_tt.batches)
        info["truncated"] = sorted(truncated)
        info["n_texts"] = len(texts)
        if truncated:
            warnings.warn(
                f"{len(truncated)} of {len(texts)} texts were cut to max_length={max_length} tokens", stacklevel=2
            )
        if s_batches is not t_batches and pooling not in SENTENCE_POOLINGS:
            raise ValueError(
                f"teacher and student tokenise the texts differently, so pooling={pooling!r} cannot pair their "
                f"rows: token-level pairing needs identical tokenization. Use a per-text pooling "
                f"({', '.join(SENTENCE_POOLINGS)})"
            )
    else:
        if student_data is None and s_tok is not t_tok and student_tokenizer is not None:
            raise ValueError("a separate student tokenizer needs texts as data (or pass student_data)")
        t_batches = _batches_of(data, batch_size)
        s_batches = t_batches if student_data is None else _batches_of(student_data, batch_size)

    t_specs = _default_layers(teacher, "teacher") if teacher_layers is None else teacher_layers
    s_specs = _default_layers(student, "student") if student_layers is None else student_layers
    t_names = [ly.name for ly in resolve_layers(teacher, t_specs)]
    s_names = [ly.name for ly in resolve_layers(student, s_specs)]
    cells = [(t, s) for t in t_names for s in s_names]

    n_t = sum(int(_batch_rows(b, "mean").shape[0]) for b in t_batches)
    n_s = sum(int(_batch_rows(b, "mean").shape[0]) for b in s_batches)
    if n_t != n_s:
        raise ValueError(
            f"different stimulus counts: the teacher's data holds {n_t} stimuli, the student's {n_s}; "
            "both must be the same stimuli in the same order"
        )
    if n_t < 3:
        raise ValueError(f"an audit needs at least 3 stimuli; got {n_t}")

    t0 = time.perf_counter()
    if mode == "memory":
        if cache_dir is not None:
            t_sink: Any = ShardSink(Path(cache_dir) / "teacher")
            s_sink: Any = ShardSink(Path(cache_dir) / "student")
        else:
            t_sink, s_sink = MemorySink(), MemorySink()
        t_out = collect(teacher, t_batches, t_names, pooling, t_sink, progress=progress)
        s_out = collect(student, s_batches, s_names, pooling, s_sink, progress=progress)
        t_feats = t_out.load() if cache_dir is not None else t_out
        s_feats = s_out.load() if cache_dir is not None else s_out
        timings["forward"] = time.perf_counter() - t0
        groups = None
        if pooling == "tokens":
            counts = np.concatenate([_batch_rows(b, pooling) for b in t_batches])
            groups = np.repeat(np.arange(counts.size), counts)
        df = audit_features(t_feats, s_feats, metrics, cells=cells, groups=groups, n_boot=n_boot, n_perm=n_perm,
                            ci_method=ci_method, n_folds=n_folds, estimator=estimator, n_floor=n_floor,
                            ci=ci, seed=seed, center=center, normalize=normalize)
    else:
        df = _stream_audit(teacher, student, t_batches, s_batches, t_names, s_names, cells, list(metrics),
                           pooling=pooling, n_blocks=n_blocks, ci=ci, center=center, normalize=normalize,
                           rank=rank, world=world, progress=progress, timings=timings)
        timings["forward"] = timings.get("forward", time.perf_counter() - t0)
    df.attrs["timings"] = {**timings, **df.attrs.get("timings", {})}
    df.attrs.update(
        pooling=pooling,
        mode=mode,
        max_length=max_length,
        n_stimuli=n_t,
        teacher_model=_model_name(teacher),
        student_model=_model_name(student),
        **info,
    )
    return df


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", "") if config is not None else ""
    return str(name) or type(model).__name__


def _stream_audit(
    teacher: nn.Module,
    student: nn.Module,
    t_batches: Sequence[Any],
    s_batches: Sequence[Any],
    t_names: list[str],
    s_names: list[str],
    cells: list[tuple[str, str]],
    metrics: list[str],
    *,
    pooling: str,
    n_blocks: int,
    ci: float,
    center: bool,
    normalize: Any,
    rank: int,
    world: int,
    progress: bool,
    timings: dict[str, float],
) -> pd.DataFrame:
    rowwise = [m for m in metrics if not get(m).streamable]
    if rowwise:
        raise ValueError(f"metrics {rowwise} need the rows and cannot be computed in stream mode; use mode='memory'")
    if n_blocks < 1:
        raise ValueError("n_blocks must be >= 1")
    rows = normalize == "rows"
    blocks = {cell: [Moments(rows=rows) for _ in range(n_blocks)] for cell in cells}
    mine = range(rank, len(t_batches), world)  # this rank's share of the batches (global indices)
    t0 = time.perf_counter()
    with Probe(teacher, t_names, pooling) as tp, Probe(student, s_names, pooling) as sp:
        for gi in mine:
            ft, fs = tp(t_batches[gi]), sp(s_batches[gi])
            for t, s in cells:
                X, Y = ft[t], fs[s]
                if X.shape[0] != Y.shape[0]:
                    raise ValueError(
                        f"batch {gi}: teacher layer {t!r} gives {X.shape[0]} rows, student layer {s!r} "
                        f"{Y.shape[0]}; rows must be the same stimuli"
                    )
                # numpy statistics: all_reduce of a block this rank never filled comes back as numpy
                Xn, Yn = X.detach().cpu().double().numpy(), Y.detach().cpu().double().numpy()
                blocks[(t, s)][gi % n_blocks].update(Xn, Yn)
    timings["forward"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if world > 1:
        for cell in cells:
            for b in blocks[cell]:
                b.all_reduce()
    timings["all_reduce"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = []
    n = 0
    for cell in cells:
        n = sum(b.n for b in blocks[cell])
        p, q = next(b.shape for b in blocks[cell] if b.n)
        full = Moments(rows=rows)
        for b in blocks[cell]:
            full.merge(b)
        st = full.stats(center=center, normalize=None)
        ranks = [float(np.trace(c)) ** 2 / float(np.sum(c * c)) if np.sum(c * c) > 0 else 0.0
                 for c in (np.asarray(st.xx), np.asarray(st.yy))]
        for m in metrics:
            value, lo, hi = jackknife_interval(blocks[cell], m, ci, center=center, normalize=normalize)
            out.append((cell[0], cell[1], m, value, math.nan, lo, hi, math.nan, n, p, q, *ranks, "plugin",
                        flag(n, p, q, m, "plugin")))
    timings["point+jackknife"] = time.perf_counter() - t0
    df = pd.DataFrame(out, columns=COLUMNS)
    df.attrs.update(
        teacher_layers=t_names,
        student_layers=s_names,
        metrics=metrics,
        n_rows=n,
        uncertainty=f"block jackknife over {n_blocks} blocks of batches (normal interval); no permutation null",
        estimator="plugin",
        n_floor=0,
        ci=ci,
        n_blocks=n_blocks,
        world_size=world,
        center=center,
        normalize=normalize,
    )
    return df
