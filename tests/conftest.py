"""Shared fixtures: the MNIST root (``$TICKETBENCH_DATA``, else ../shared/data beside the repo) and tiny data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from benchmarks.data import Splits

REPO = Path(__file__).resolve().parents[1]


def mnist_root() -> Path | None:
    for candidate in (os.environ.get("TICKETBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def mnist_data_root() -> Path:
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST not found: set TICKETBENCH_DATA to a folder with MNIST/raw")
    return root


def tiny_splits(shape=(1, 28, 28), n: int = 64, classes: int = 10, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(x, y)
    return Splits(ds, ds, ds, classes, shape)
