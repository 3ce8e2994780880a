"""Shared fixtures: one torch thread, a seeded generator and a tiny raw stack."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread: on a shared 2-core machine two threads ran training steps 5× slower
    (0.55 → 2.8 s/step, OpenMP threads spinning against other processes)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def stack(rng) -> np.ndarray:
    return rng.integers(100, 4000, size=(12, 40, 48), dtype=np.uint16)
