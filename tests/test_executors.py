"""Parallel executors give the same rows as the sequential run: local worker processes and a real local
Ray cluster (on loopback). Sanity checks wait for their parent and resume from its search there too."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main

# --threads 1: every executor gives its cells the same thread count, so the rows must agree on any machine
# (that they agree at different counts where the CPU's kernels allow it is tests/test_threads.py's)
SWEEP = ["run", "--methods", "crbg,edgepopup,cts", "--arch", "lenet300", "--dataset", "synthetic",
         "--sparsity", "0.5,0.9", "--epochs", "2", "--batch-size", "64", "--sanity", "--no-progress", "--threads", "1"]


def rows(out) -> pd.DataFrame:
    df = pd.read_csv(out / "runs.csv", keep_default_na=False).set_index("cell").sort_index()
    assert (df.status == "ok").all() and len(df) == 24 and (df.threads == 1).all()
    checks = df[df.sanity != "none"]
    parents = df[df.sanity == "none"].reset_index().set_index(["method", "target_sparsity"]).cell
    assert (checks.search_from == [parents[m, t] for m, t in zip(checks.method, checks.target_sparsity)]).all()
    return df[["method", "sanity", "target_sparsity", "sparsity", "val_acc", "test_acc", "search_from"]]


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


@pytest.mark.slow
def test_ray_retries_a_cell_whose_worker_died(tmp_path):
    """The first attempt of a cell kills its Ray worker process (os._exit); Ray reruns the task and the
    sweep completes with the cell's row, written once."""
    pytest.importorskip("ray")
    import os
    import subprocess
    import sys

    flag, out = tmp_path / "flag", tmp_path / "out"
    env = {**os.environ, "TICKETBENCH_PLUGINS": "tests.plugins.die_once", "DIE_ONCE_FLAG": str(flag),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "--methods", "dieonce", "--arch", "lenet300",
           "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1", "--batch-size", "64", "--no-progress",
           "--executor", "ray", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert flag.exists()  # the first attempt did die
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 1 and df.status.iloc[0] == "ok"


def test_ray_cells_ask_for_a_gpu_and_its_share_of_cpus():
    from benchmarks.executors import ray_task_resources

    assert ray_task_resources({"CPU": 64.0, "GPU": 8.0}, "auto") == (8, 1)
    assert ray_task_resources({"CPU": 64.0, "GPU": 8.0}, "cuda") == (8, 1)
    assert ray_task_resources({"CPU": 64.0, "GPU": 8.0}, "cpu") == (1, 0)
    assert ray_task_resources({"CPU": 2.0, "GPU": 4.0}, "auto") == (1, 1)
    assert ray_task_resources({"CPU": 16.0}, "auto") == (1, 0)
    # issue 30, point 5: a fraction of a GPU per cell, the CPUs shared among the cells that run at once
    assert ray_task_resources({"CPU": 64.0, "GPU": 8.0}, "auto", 0.25) == (2, 0.25)  # 32 cells at once
    assert ray_task_resources({"CPU": 16.0, "GPU": 1.0}, "cuda", 0.5) == (8, 0.5)
    assert ray_task_resources({"CPU": 16.0, "GPU": 1.0}, "cpu", 0.5) == (1, 0)


@pytest.mark.parametrize("extra,message", [
    (["--executor", "ray", "--gpus-per-cell", "0"], "--gpus-per-cell must be in (0, 1], got 0"),
    (["--executor", "ray", "--gpus-per-cell", "2"], "--gpus-per-cell must be in (0, 1], got 2"),
    (["--gpus-per-cell", "0.5"], "--gpus-per-cell is for --executor ray"),
])
def test_bad_gpus_per_cell_is_one_line(extra, message, tmp_path, capsys):
    code = main(["run", "--methods", "random", "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and not (tmp_path / "o").exists()


def test_a_ray_address_where_nothing_listens_is_one_line(tmp_path, capsys, monkeypatch):
    """Issue 28, point 6: `--address 127.0.0.1:1` retried "Failed to connect to GCS" for ever; now a line
    naming the address within the connect timeout, and no results folder."""
    import time

    import benchmarks.executors as executors

    pytest.importorskip("ray")
    monkeypatch.setattr(executors, "RAY_CONNECT_TIMEOUT", 2.0)
    t0 = time.time()
    code = main(["run", "--methods", "random", "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1",
                 "--no-progress", "--executor", "ray", "--address", "127.0.0.1:1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.time() - t0 < 30
    assert err[-1].startswith("bench: error: cannot reach Ray at 127.0.0.1:1 within 2 s"), err
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "o").exists()


def test_gpus_per_cell_reaches_the_ray_executor(tmp_path, monkeypatch, capsys):
    import benchmarks.executors as executors
    from benchmarks.errors import UserError

    seen = []

    def spy(cells, job, started, address, retries=3, gpus_per_cell=1.0):
        seen.append(gpus_per_cell)
        raise UserError("stopped by the test")
        yield  # a generator, as run_ray is
    monkeypatch.setattr(executors, "run_ray", spy)
    assert main(["run", "--methods", "random", "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1",
                 "--no-progress", "--executor", "ray", "--gpus-per-cell", "0.25", "--out", str(tmp_path / "o")]) == 2
    assert seen == [0.25] and "stopped by the test" in capsys.readouterr().err
