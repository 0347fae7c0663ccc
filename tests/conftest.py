"""Shared test helpers."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # one BLAS/torch thread per worker: the workers share the cores
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    _BLAS_LIMIT = threadpool_limits(limits=1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def related_pair(rng: np.random.Generator, n: int, p: int, q: int, noise: float = 0.3):
    """A teacher X (n x p) and a noisy linear image of it Y (n x q)."""
    X = rng.normal(size=(n, p)) @ np.diag(np.linspace(1.0, 3.0, p)) + rng.normal(size=p)
    Y = X @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q)) + 5.0
    return X, Y
