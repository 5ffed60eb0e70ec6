"""Parallel executors give the same rows as the sequential run: local worker processes and a real local
Ray cluster (on loopback)."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.cli import main

SWEEP = ["run", "--methods", "crbg,edgepopup", "--arch", "lenet300", "--dataset", "synthetic",
         "--sparsity", "0.5,0.9", "--epochs", "2", "--batch-size", "64", "--no-progress"]


def rows(out) -> pd.DataFrame:
    df = pd.read_csv(out / "runs.csv").set_index("cell").sort_index()
    assert (df.status == "ok").all()
    return df[["method", "target_sparsity", "sparsity", "val_acc", "test_acc"]]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    assert main(SWEEP + ["--out", str(out)]) == 0
    return rows(out)


def test_workers_give_the_same_rows(tmp_path, sequential):
    out = tmp_path / "pool"
    assert main(SWEEP + ["--workers", "2", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(rows(out), sequential)


def test_ray_local_cluster_gives_the_same_rows(tmp_path, sequential):
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    try:
        assert main(SWEEP + ["--executor", "ray", "--out", str(out)]) == 0
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(rows(out), sequential)
