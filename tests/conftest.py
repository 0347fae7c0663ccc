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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models: they gain nothing from intra-op threads, and on a shared
    2-core machine thread oversubscription makes them very slow. Restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def related_pair(rng: np.random.Generator, n: int, p: int, q: int, noise: float = 0.3):
    """A teacher X (n x p) and a noisy linear image of it Y (n x q)."""
    X = rng.normal(size=(n, p)) @ np.diag(np.linspace(1.0, 3.0, p)) + rng.normal(size=p)
    Y = X @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q)) + 5.0
    return X, Y


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run slow studies and the long fuzz budgets")


def pytest_configure(config: pytest.Config) -> None:
    """Property tests draw the same examples on every run by default, so CI cannot fail on a draw that a
    previous run never saw; ``--slow`` draws fresh random examples with 20x budgets (the exploring run)."""
    from hypothesis import settings

    settings.register_profile("repeatable", derandomize=True, print_blob=True)
    settings.register_profile("exploring", derandomize=False, print_blob=True)
    if config.getoption("--slow"):
        os.environ["REPGEO_SLOW"] = "1"
        settings.load_profile("exploring")
    else:
        settings.load_profile("repeatable")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def slow_mode() -> bool:
    """True under ``pytest --slow``: fuzzers use their long budgets."""
    return os.environ.get("REPGEO_SLOW") == "1"
