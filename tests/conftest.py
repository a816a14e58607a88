"""Shared test fixtures: small, deterministic, CPU only."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches and runs of a test never touch the repository's data/ or runs/."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TPCCMA_CACHE", str(base / "feature-cache"))
    monkeypatch.setenv("TPCCMA_RUNS", str(base / "runs"))
