"""Scale-out: an audit under torch.distributed (2 CPU processes, gloo) equals the single-process numbers.

Kept apart from test_audit.py (and free of transformers imports) so the spawned workers start quickly.
"""

from __future__ import annotations

import socket

import numpy as np
import torch
from torch import nn

from repgeo.audit import audit


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh())
    student = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5))
    return teacher, student


def _data() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(90, 6)).astype(np.float32))


KW = {"teacher_layers": ["1", "3"], "student_layers": ["1", "2"], "pooling": "none", "batch_size": 8,
      "n_blocks": 4, "metrics": ["procrustes", "cka", "fg"]}


def _worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        teacher, student = _models()
        df = audit(teacher, student, _data(), **KW)  # memory mode requested: switched to stream under dist
        out[rank] = (df.value.tolist(), df.ci_low.tolist(), df.ci_high.tolist(), df.attrs["mode"],
                     int(df.n.iloc[0]))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    teacher, student = _models()
    single = audit(teacher, student, _data(), mode="stream", **KW)
    for rank in (0, 1):
        values, lo, hi, mode, n = out[rank]
        assert mode == "stream" and n == 90
        np.testing.assert_allclose(values, single.value.to_numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(lo, single.ci_low.to_numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(hi, single.ci_high.to_numpy(), rtol=0, atol=1e-10)
    memory = audit(teacher, student, _data(), n_boot=0, n_perm=0, estimator="plugin", **KW)
    np.testing.assert_allclose(single.value.to_numpy(), memory.value.to_numpy(), atol=1e-9)
