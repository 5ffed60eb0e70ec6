"""Sweep reliability: failures become rows, reruns, status, stable cell ids, and SIGKILL at any instant."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd

from benchmarks.cli import main
from benchmarks.results import append_rows, read_rows
from benchmarks.spec import Cell
from methods import METHODS
from methods.hparams import later

SYNTH = ["run", "--arch", "lenet300", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "64",
         "--no-progress"]


class NanPopup(METHODS["edgepopup"]):
    """A method whose loss turns NaN: a diverged search (bad hyperparameters are refused before any cell)."""

    name = "nanpopup"

    def task_loss(self, model, x, y, criterion):
        return super().task_loss(model, x, y, criterion) * float("nan")


def test_nan_cell_is_a_failed_row_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(METHODS, "nanpopup", NanPopup)
    out = tmp_path / "r"
    args = SYNTH + ["--methods", "nanpopup,edgepopup", "--sparsity", "0.5,0.9", "--out", str(out)]
    code = main(args)
    printed = capsys.readouterr().out
    assert code == 1  # some cell failed
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4
    failed = runs[runs.method == "nanpopup"]
    assert (failed.status == "failed").all() and failed.error.str.contains("Diverged: loss is nan").all()
    assert (runs[runs.method == "edgepopup"].status == "ok").all()
    assert printed.count("failed: ") == 2
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "4 cells: 2 done, 0 running, 2 failed, 0 remaining" in status and "Diverged" in status
    # failed cells are skipped unless asked; a rerun replaces their rows, never duplicates them
    assert main(args) == 0
    assert "2 failed before (--rerun-failed retries them), 0 to run" in capsys.readouterr().err
    assert main(args + ["--rerun-failed"]) == 1
    assert "2 to run" in capsys.readouterr().err
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and runs.cell.is_unique


def test_force_recomputes_and_keeps_one_row_per_cell(tmp_path, capsys):
    out = tmp_path / "r"
    args = SYNTH + ["--methods", "edgepopup", "--sparsity", "0.5", "--out", str(out)]
    assert main(args) == 0
    assert main(args + ["--force"]) == 0
    assert "1 to run" in capsys.readouterr().err
    assert len(pd.read_csv(out / "runs.csv")) == 1 and len(pd.read_csv(out / "layers.csv")) == 3
    assert len(pd.read_csv(out / "curves.csv")) == 1


def test_cell_ids_are_pinned():
    """Changing how ids are computed silently reruns every finished cell of every user: pin a few."""
    a = Cell(method="crbg", arch="lenet300", dataset="mnist", target_sparsity=0.9, seed=0,
             hparams=(("lr", 0.01), ("sigma", 0.5)))
    b = Cell(method="edgepopup", arch="conv4", dataset="cifar10", target_sparsity=0.5, seed=3, epochs=100)
    assert a.id == "30dad0caa7033ca3"
    assert b.id == "95763680ac29bffd"
    assert a.id != Cell(**{**a.__dict__, "seed": 1}).id
    # fields added later (weak-regime training, sanity checks) leave the ids of earlier cells alone
    assert dataclasses.replace(a, train_epochs=0, sanity="none").id == a.id
    assert dataclasses.replace(a, sanity="shuffle").id != a.id


def test_new_hyperparameter_default_keeps_old_ids(monkeypatch):
    """A method that gains a hyperparameter declared with `later` keeps the ids of its finished cells."""
    from methods.crbg import CRBGHparams

    old = Cell(method="crbg", arch="lenet300", dataset="mnist", target_sparsity=0.9, seed=0,
               hparams=tuple(sorted(dataclasses.asdict(CRBGHparams()).items())))

    @dataclasses.dataclass
    class Grown(CRBGHparams):
        new_knob: float = later(0.25)

    monkeypatch.setattr(METHODS["crbg"], "Hparams", Grown)
    grown = dataclasses.replace(old, hparams=tuple(sorted(dataclasses.asdict(Grown()).items())))
    assert grown.id == old.id
    assert dataclasses.replace(old, hparams=tuple(sorted(dataclasses.asdict(Grown(new_knob=1.0)).items()))).id != old.id


def test_partial_last_line_is_repaired_on_append(tmp_path):
    path = tmp_path / "x.csv"
    append_rows(path, [{"cell": "a", "v": 1}])
    with open(path, "a") as f:
        f.write("b,2")  # a writer killed before its newline
    append_rows(path, [{"cell": "c", "v": 3}])
    assert [r["cell"] for r in read_rows(path)] == ["a", "c"]


def test_sigkill_at_random_instants_then_resume(tmp_path):
    """Kill a running sweep with SIGKILL 5 times, resume each time: every CSV parses, every cell is
    there exactly once, no finished cell was recomputed (its mask file is never rewritten), a cell killed
    mid-search resumed from its checkpoint (said so) instead of restarting, and no checkpoint is left."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", "--methods", "crbg,edgepopup", "--arch", "lenet300",
           "--dataset", "synthetic", "--sparsity", "0.5,0.9", "--seeds", "0,1", "--epochs", "30",
           "--batch-size", "32", "--no-progress", "--out", str(out)]
    rng = random.Random(0)
    finished_mtimes: dict[str, int] = {}
    kills = 0
    logs = []
    for attempt in range(5):
        logs.append(tmp_path / f"attempt{attempt}.log")
        with open(logs[-1], "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(rng.uniform(5.0, 10.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        for cell, mtime in finished_mtimes.items():  # finished before this attempt: untouched
            assert (out / "masks" / f"{cell}.pt").stat().st_mtime_ns == mtime
        if (out / "runs.csv").exists():
            for row in read_rows(out / "runs.csv"):
                finished_mtimes.setdefault(row["cell"], (out / "masks" / f"{row['cell']}.pt").stat().st_mtime_ns)
    assert kills >= 3
    last = subprocess.run(cmd, capture_output=True, text=True)
    assert last.returncode == 0
    said = "".join(p.read_text() for p in logs) + last.stderr
    assert "resumes from its checkpoint after search epoch" in said  # resumed mid-cell, not restarted
    for cell, mtime in finished_mtimes.items():
        assert (out / "masks" / f"{cell}.pt").stat().st_mtime_ns == mtime
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and runs.cell.is_unique and (runs.status == "ok").all()
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 8 * 30 and not curves.duplicated(["cell", "epoch"]).any()
    layers = pd.read_csv(out / "layers.csv")
    assert len(layers) == 8 * 3 and set(layers.cell) == set(runs.cell)
    assert os.listdir(out / "running") == []  # every cell that ran to the end removed its marker
    assert os.listdir(out / "checkpoints") == []  # and its checkpoint


def test_running_cells_report_their_epoch(tmp_path, capsys, monkeypatch):
    """A worker writes its pid and `phase epoch/total` to the cell's marker every epoch; `bench status` and
    the per-cell progress bars read what the real worker wrote, while the cell runs."""
    import benchmarks.cell as cell_mod
    from benchmarks.paths import RUNNING
    from benchmarks.spec import SweepSpec
    from benchmarks.sweep import RunningBars

    out = tmp_path / "r"
    seen = []
    real = cell_mod.write_marker

    def spy(marker, where=""):
        real(marker, where)
        if where == "search 1/2" and not seen:  # mid-cell: what a second terminal would see now
            cells = SweepSpec(methods=["edgepopup"], dataset=["synthetic"], sparsity=[0.5], epochs=2,
                              batch_size=64).cells()
            bars = RunningBars(out / RUNNING, cells, enabled=True)
            bars.refresh()
            seen.append([(b.n, b.total) for b in bars.bars.values()])
            bars.close()
            capsys.readouterr()
            assert main(["status", str(out)]) == 0
            seen.append(capsys.readouterr().out)

    monkeypatch.setattr(cell_mod, "write_marker", spy)
    assert main(SYNTH + ["--methods", "edgepopup", "--sparsity", "0.5", "--epochs", "2", "--out", str(out)]) == 0
    bars, status = seen
    assert bars == [(1, 2)]
    assert "1 running" in status and "(search epoch 1/2)" in status
    assert not list((out / RUNNING).iterdir())  # the marker is gone once the cell finished


def test_sanity_cells_reuse_the_parents_search_and_the_snapshot_is_removed(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(SYNTH + ["--methods", "crbg,snip", "--sparsity", "0.8", "--sanity", "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False).set_index("cell")
    parent = runs[(runs.method == "crbg") & (runs.sanity == "none")]
    checks = runs[(runs.method == "crbg") & (runs.sanity != "none")]
    assert len(parent) == 1 and len(checks) == 3
    assert (parent.search_from == "").all() and (checks.search_from == parent.index[0]).all()
    assert (runs[runs.method == "snip"].search_from == "").all()  # no search loop: nothing to share
    assert not list((out / "checkpoints").glob("*.search.pt"))


def test_snapshot_is_kept_while_a_check_has_no_row(tmp_path):
    """A parent's end-of-search snapshot outlives a killed sweep while any of its checks lacks a row."""
    from benchmarks.paths import search_snapshot
    from benchmarks.sweep import SnapshotKeeper

    parent = Cell(method="crbg", arch="lenet300", dataset="synthetic", target_sparsity=0.9, seed=0)
    checks = [dataclasses.replace(parent, sanity=v) for v in ("random", "shuffle", "reinit")]
    snapshot = search_snapshot(tmp_path, parent.id)
    snapshot.write_bytes(b"state")
    keeper = SnapshotKeeper(tmp_path, [parent, *checks], {parent.id: "ok", checks[0].id: "ok"})
    keeper.finished(checks[1])
    assert snapshot.exists()  # the sweep is killed here: the last check resumes from it next time
    keeper = SnapshotKeeper(tmp_path, [parent, *checks], {parent.id: "ok", checks[0].id: "ok", checks[1].id: "ok"})
    assert snapshot.exists()
    keeper.finished(checks[2])
    assert not snapshot.exists()
    snapshot.write_bytes(b"state")  # every check already has a row: nothing will read it
    SnapshotKeeper(tmp_path, [parent, *checks], {c.id: "ok" for c in [parent, *checks]})
    assert not snapshot.exists()


def test_bench_status_reads_a_folder_without_importing_torch(tmp_path):
    """`bench status` only reads CSVs and markers (`benchmarks.paths` holds the layout), so it starts fast."""
    import subprocess
    import sys

    (tmp_path / "plan.json").write_text("{}")
    code = ("import sys; from benchmarks.cli import main; assert main(['status', sys.argv[1]]) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "0 cells" in done.stdout


def test_every_cell_setting_reaches_cells_ids_and_rows():
    """Each declared cell setting (`benchmarks.settings.CELL_SETTINGS`) is copied into every cell, changes its
    id away from its default and is a column of its rows, with no wiring code per setting."""
    import torch

    from benchmarks.cell import run_cell
    from benchmarks.settings import CELL_SETTINGS
    from benchmarks.spec import SweepSpec
    from tests.conftest import tiny_splits

    other = {"regime": "weak", "epochs": 3, "batch_size": 64, "amp": True, "activation": "prelu", "val_size": 0.2,
             "train_size": 100}
    assert set(CELL_SETTINGS) == set(other)  # a new cell setting: give it another value here
    base = SweepSpec(methods=["random"], sparsity=[0.5]).cells()[0]
    for name, value in other.items():
        cell = SweepSpec(methods=["random"], sparsity=[0.5], **{name: value}).cells()[0]
        assert getattr(cell, name) == value and cell.id != base.id, name
        assert cell.experiment != base.experiment and cell.replace(seed=5).experiment == cell.experiment
    row = run_cell(dataclasses.replace(base, epochs=1), tiny_splits(n=64), torch.device("cpu"), progress=False).run
    assert row["status"] == "ok" and all(name in row for name in other)
    assert row["activation"] == "relu" and row["val_size"] == 0.1 and row["train_size"] == 64
    assert row["experiment"] == dataclasses.replace(base, epochs=1).experiment


def test_run_cell_hands_every_epoch_to_its_hook_and_lets_passthrough_errors_out():
    """`bench tune` runs its trials through `run_cell`: the hook sees every epoch's curve row, `test=False` leaves
    the test set alone, an exception of a passthrough type (Optuna's TrialPruned) propagates, and any other
    exception from the hook is the cell's failed row."""
    import math

    import pytest
    import torch

    from benchmarks.cell import run_cell
    from benchmarks.spec import SweepSpec
    from tests.conftest import tiny_splits

    class Pruned(Exception):
        pass

    cell = SweepSpec(methods=["edgepopup"], sparsity=[0.5], epochs=2, batch_size=32).cells()[0]
    seen = []
    row = run_cell(cell, tiny_splits(n=64), torch.device("cpu"), progress=False, on_epoch=seen.append, test=False).run
    assert [(r["phase"], r["epoch"]) for r in seen] == [("search", 1), ("search", 2)]
    assert row["status"] == "ok" and math.isnan(row["test_acc"]) and row["val_acc"] == row["val_acc"]

    def prune(r):
        raise Pruned

    with pytest.raises(Pruned):
        run_cell(cell, tiny_splits(n=64), torch.device("cpu"), progress=False, on_epoch=prune, passthrough=(Pruned,))
    failed = run_cell(cell, tiny_splits(n=64), torch.device("cpu"), progress=False, on_epoch=prune).run
    assert failed["status"] == "failed" and failed["error"].startswith("Pruned")
