"""Shared fixtures: a seeded generator and a tiny raw stack."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def stack(rng) -> np.ndarray:
    return rng.integers(100, 4000, size=(12, 40, 48), dtype=np.uint16)
