"""Streaming moments: any chunking, merging and all-reducing equals the in-memory computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repgeo
from repgeo import Moments
from repgeo.metrics import available, get

STREAMABLE = available(streamable=True)
PREPS = [dict(), dict(center=False), dict(normalize=None), dict(center=False, normalize="rows")]
SPHERE = dict(center=False, normalize="rows")  # centred "rows" needs the stream's means first: not streamable


def data(seed: int, n: int = 120, p: int = 9, q: int = 6, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + offset
    Y = X @ rng.normal(size=(p, q)) + 0.3 * rng.normal(size=(n, q)) - offset
    return X, Y


def stream(X, Y, cuts, rows=True) -> Moments:
    m = Moments(rows=rows)
    edges = [0, *sorted(set(cuts)), len(X)]
    for a, b in itertools.pairwise(edges):
        if b > a:
            m.update(X[a:b], Y[a:b])
    return m


@pytest.mark.parametrize("opts", PREPS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 119), max_size=8))
def test_any_chunking_equals_in_memory(opts, seed, cuts):
    X, Y = data(seed)
    m = stream(X, Y, cuts)
    got = m.compute(**opts)
    assert set(got) == set(STREAMABLE)
    for name, value in got.items():
        want = get(name)(X, Y, **opts)
        assert value == pytest.approx(float(want), rel=1e-10, abs=1e-12), name


def test_large_means_keep_precision():
    """Chan's centred merge: a 1e6 offset in every feature does not destroy the centred statistics."""
    X, Y = data(0, n=400, offset=1e6)
    m = stream(X, Y, list(range(7, 400, 13)), rows=False)
    for name in ("procrustes", "cka", "fg", "proj_mse"):
        assert m.compute([name])[name] == pytest.approx(float(get(name)(X, Y)), rel=1e-9)


def test_merge_equals_a_single_stream():
    X, Y = data(1, n=200)
    a, b, c = stream(X[:50], Y[:50], [20]), stream(X[50:130], Y[50:130], [3]), stream(X[130:], Y[130:], [])
    merged = Moments(rows=True).merge(a).merge(b).merge(c)
    whole = stream(X, Y, [])
    assert merged.n == 200
    for name, value in whole.compute(**SPHERE).items():
        assert merged.compute([name], **SPHERE)[name] == pytest.approx(value, rel=1e-11)
    assert a.n == 50  # merging leaves the other object unchanged


def test_metric_functions_accept_moments_directly():
    X, Y = data(2)
    m = stream(X, Y, [40, 80])
    assert repgeo.procrustes(m, kind="angular") == pytest.approx(repgeo.procrustes(X, Y, kind="angular"), rel=1e-10)
    assert repgeo.fg(m, squared=True) == pytest.approx(repgeo.fg(X, Y, squared=True), rel=1e-9)
    assert repgeo.proj_mse(m, ridge=0.5) == pytest.approx(repgeo.proj_mse(X, Y, ridge=0.5), rel=1e-10)


def test_torch_chunks_accumulate_in_float64_on_their_device():
    X, Y = data(3)
    m = Moments()
    for i in range(0, 120, 25):
        m.update(torch.tensor(X[i : i + 25], dtype=torch.float32), torch.tensor(Y[i : i + 25], dtype=torch.float32))
    value = repgeo.cka(m)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float64
    ref = repgeo.cka(X.astype(np.float32), Y.astype(np.float32))  # same float32-rounded inputs, in float64
    assert float(value) == pytest.approx(float(ref), rel=1e-10)


def test_row_wise_metrics_are_refused_by_moments():
    X, Y = data(4)
    m = stream(X, Y, [10])
    for name in ("cka_debiased", "cka_rbf"):
        with pytest.raises(ValueError, match="need the rows"):
            m.compute([name])
    with pytest.raises(ValueError, match="needs the rows"):
        repgeo.cka(m, debiased=True)
    with pytest.raises(ValueError, match=r"rows=True"):
        stream(X, Y, [], rows=False).compute(**SPHERE)
    with pytest.raises(ValueError, match="center=True centres every row before"):
        stream(X, Y, []).compute(normalize="rows")


def test_chunk_shape_and_backend_changes_are_refused():
    X, Y = data(5)
    m = Moments().update(X[:10], Y[:10])
    with pytest.raises(ValueError, match="chunk widths"):
        m.update(X[10:20, :5], Y[10:20])
    with pytest.raises(TypeError, match="same backend"):
        m.update(torch.tensor(X[10:20]), torch.tensor(Y[10:20]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        Moments().update(X[:1], Y[:1]).compute()


def _all_reduce_worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    X, Y = data(6, n=150)
    shard = slice(0, 70) if rank == 0 else slice(70, 150)
    m = Moments(rows=True)
    for i in range(shard.start, shard.stop, 16):
        m.update(X[i : min(i + 16, shard.stop)], Y[i : min(i + 16, shard.stop)])
    m.all_reduce()
    out[rank] = (m.n, m.compute(), m.compute(**SPHERE))
    dist.destroy_process_group()


def _empty_rank_worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    X, Y = data(7, n=40)
    m = Moments()
    if rank == 0:  # rank 1 sees no rows at all
        m.update(torch.tensor(X), torch.tensor(Y))
    m.all_reduce()
    more = Moments().update(torch.tensor(X[:5]), torch.tensor(Y[:5]))
    m.merge(more)  # the empty rank must hold torch statistics now, or this mixes numpy and torch
    out[rank] = (m.n, float(repgeo.cka(m)), type(repgeo.cka(m)).__name__)
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduce_with_an_empty_rank_keeps_the_torch_backend():
    import torch.multiprocessing as mp

    out = mp.Manager().dict()
    mp.spawn(_empty_rank_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    X, Y = data(7, n=40)
    ref = float(repgeo.cka(np.vstack([X, X[:5]]), np.vstack([Y, Y[:5]])))
    for rank in (0, 1):
        n, value, kind = out[rank]
        assert n == 45 and kind == "Tensor"
        assert value == pytest.approx(ref, rel=1e-10)


def test_all_reduce_over_two_gloo_processes_equals_one_process():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_all_reduce_worker, args=(2, port, out), nprocs=2, join=True)
    X, Y = data(6, n=150)
    for rank in (0, 1):
        n, plain, rows = out[rank]
        assert n == 150
        for name in STREAMABLE:
            assert plain[name] == pytest.approx(float(get(name)(X, Y)), rel=1e-10)
            assert rows[name] == pytest.approx(float(get(name)(X, Y, **SPHERE)), rel=1e-10)


@pytest.mark.parametrize("options", [
    {"center": True, "normalize": "frobenius"},
    {"center": False, "normalize": None},
    {"center": False, "normalize": "rows"},
])
def test_procrustes_only_moments_skip_the_auto_products_and_agree(options):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(700, 12)) + 2.0
    Y = X[:, :8] @ rng.normal(size=(8, 9)) + 0.5 * rng.normal(size=(700, 9)) - 1.0
    lean = repgeo.Moments(metrics=["procrustes", "nbs"], rows=True)
    for i in range(0, 700, 96):
        lean.update(X[i : i + 96], Y[i : i + 96])
    assert lean._plain.cxx.shape == () and lean._plain.cyy.shape == ()  # traces only
    for name in ("procrustes", "procrustes_angular", "nbs", "bures"):
        want = repgeo.get(name)(X, Y, **options)
        assert float(repgeo.get(name)(lean, **options)) == pytest.approx(float(want), abs=1e-12)
    assert set(lean.compute()) == {"procrustes", "nbs"}
    with pytest.raises(ValueError, match=r"X\^T X was not accumulated"):
        repgeo.cka(lean)


def test_lean_moments_refuse_bad_metric_lists_and_mixed_merges():
    with pytest.raises(ValueError, match="needs the rows"):
        repgeo.Moments(metrics=["cka_debiased"])
    with pytest.raises(TypeError, match="metrics must be a non-empty list"):
        repgeo.Moments(metrics="procrustes")
    with pytest.raises(ValueError, match="unknown metric"):
        repgeo.Moments(metrics=["procrustez"])
    X, Y = np.random.default_rng(0).normal(size=(2, 50, 4))
    lean, full = repgeo.Moments(metrics=["procrustes"]).update(X, Y), repgeo.Moments().update(X, Y)
    with pytest.raises(ValueError, match="accumulate different statistics"):
        full.merge(lean)
    assert repgeo.Moments(metrics=["procrustes", "cka"]).update(X, Y)._plain.cxx.shape == (4, 4)


def test_lean_moments_survive_the_all_reduce_packing():
    """all_reduce ships statistics as one flat float64 vector; the diagonal-only layout round-trips."""
    X, Y = data(3, n=60)
    lean = Moments(metrics=["procrustes"], rows=True).update(X, Y)
    parts = ("_plain", "_sphere")
    back = Moments._unflatten(lean._flatten(parts), parts, X.shape[1], Y.shape[1], True, None, full=False)
    assert back.full is False and back.n == 60
    for name in ("procrustes", "nbs"):
        assert float(get(name)(back)) == pytest.approx(float(get(name)(X, Y)), abs=1e-12)
        assert float(get(name)(back, **SPHERE)) == pytest.approx(float(get(name)(X, Y, **SPHERE)), abs=1e-12)


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("metrics", [None, ["procrustes"]])
def test_state_dict_round_trip_and_reset(rows, metrics, tmp_path):
    import torch

    from repgeo.metrics import Moments, compare

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(90, 7)) + 2.0, rng.normal(size=(90, 5))
    names = metrics or ["procrustes", "cka", "fg"]
    m = Moments(rows=rows, metrics=metrics).update(X[:40], Y[:40])
    path = tmp_path / "m.pt"
    torch.save(m.state_dict(), path)
    restored = Moments().load_state_dict(torch.load(path, weights_only=False))
    assert (restored.rows, restored.metrics, restored.n, restored.shape) == (rows, metrics, 40, (7, 5))
    for mom in (m, restored):  # both continue the stream to the same in-memory answer
        mom.update(X[40:], Y[40:])
    norm, center = ("rows", False) if rows else ("frobenius", True)
    ref = compare(X, Y, names, normalize=norm, center=center)
    for mom in (m, restored):
        got = mom.compute(names, normalize=norm, center=center)
        for k in names:
            assert float(got[k]) == pytest.approx(float(ref[k]), abs=1e-12)
    state = m.state_dict()
    state["plain"]["cxy"][0, 0] += 1.0  # a copy: editing it leaves the source alone
    first = float(m.compute(names[:1], normalize=norm, center=center)[names[0]])
    assert first == pytest.approx(float(ref[names[0]]), abs=1e-12)
    assert m.reset().n == 0 and m.shape is None and m.rows == rows
    with pytest.raises(ValueError, match="missing"):
        Moments().load_state_dict({"rows": False})
    broken = restored.state_dict()
    del broken["plain"]["cxy"]
    with pytest.raises(ValueError, match="lacks 'cxy'"):
        Moments().load_state_dict(broken)


def test_compare_returns_plain_floats_for_numpy_and_tensors_for_torch():
    from repgeo.metrics import compare

    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(30, 6)), rng.normal(size=(30, 4))
    out = compare(X, Y, ["procrustes", "cka", "cka_debiased", "proj_mse"])
    assert all(type(v) is float for v in out.values()), {k: type(v) for k, v in out.items()}
    assert repr(out["cka"]) == repr(float(out["cka"]))  # prints as 0.123..., not np.float64(0.123...)
    t = compare(torch.from_numpy(X), torch.from_numpy(Y), ["procrustes", "cka"])
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in t.values())
