"""Hostile input and reliability (issue 18): one-line errors with exit code 2 where a traceback or a silently
wrong number used to be, the results-folder lock, duplicate rows, resume messages and honest wall times."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from benchmarks.spec import SweepSpec
from methods import METHODS
from methods.random_mask import Random

RUN = ["run", "--arch", "lenet300", "--dataset", "mnist", "--epochs", "1", "--no-progress", "--methods", "random",
       "--sparsity", "0.5"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("bench: error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in last, last


@pytest.fixture
def finished(tmp_path, mnist_data_root, capsys):
    """A folder with one finished random cell (fast: no search)."""
    out = tmp_path / "res"
    assert main(RUN + ["--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


# 1. concurrent writers
def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, mnist_data_root, capsys):
    out = tmp_path / "res"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from benchmarks.results import FolderLock\n"
        f"with FolderLock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(RUN + ["--data-root", str(mnist_data_root), "--out", str(out)])
        one_line_error(code, capsys.readouterr().err, "in use by another bench run", f"pid {holder.pid}")
        assert not (out / "runs.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the folder is usable again
    assert main(RUN + ["--data-root", str(mnist_data_root), "--out", str(out)]) == 0


def test_duplicate_rows_are_named_and_removed(finished, mnist_data_root, capsys, tmp_path):
    first = rows(finished / "runs.csv")
    later = [{**first[0], "test_acc": "12.34"}]  # what a second, unlocked writer appended for the same cell
    with open(finished / "runs.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(first[0])).writerows(later)
    cell = first[0]["cell"]
    assert main(["report", str(finished), "--out", str(tmp_path / "rep")]) == 0
    assert f"have several rows ({cell})" in capsys.readouterr().err
    assert main(RUN + ["--data-root", str(mnist_data_root), "--out", str(finished)]) == 0
    err = capsys.readouterr().err
    assert "several rows for 1 cell(s)" in err and cell in err and "1 already done, 0 to run" in err
    assert len(rows(finished / "runs.csv")) == 1 and len(rows(finished / "layers.csv")) == 3
    assert rows(finished / "runs.csv")[0]["test_acc"] == "12.34"  # the last row is the one kept


# 2. tracebacks
@pytest.mark.parametrize("damage", ["truncated", "random", "garbage-gzip"])
def test_corrupt_mnist_is_one_line(tmp_path, mnist_data_root, capsys, damage):
    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(mnist_data_root / "MNIST" / "raw", raw)
    for p in raw.glob("t10k-labels*"):
        p.unlink()
    victim = raw / "t10k-labels-idx1-ubyte.gz"
    good = gzip.compress(bytes(8) + bytes(10))
    victim.write_bytes({"truncated": good[:-9], "random": os.urandom(300),
                        "garbage-gzip": gzip.compress(os.urandom(300))}[damage])
    code = main(RUN + ["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "o"), "--no-download"])
    one_line_error(code, capsys.readouterr().err, str(victim))
    assert not (tmp_path / "o").exists()  # bad input leaves no folder (and no plan.json) behind


def test_config_folder_and_bad_numbers_in_runs_csv(finished, mnist_data_root, tmp_path, capsys):
    one_line_error(main(["run", "--config", str(tmp_path)]), capsys.readouterr().err, "is a folder")
    text = (finished / "runs.csv").read_text().splitlines()
    header = text[0].split(",")
    values = text[1].split(",")
    values[header.index("test_acc")] = "oops"
    (finished / "runs.csv").write_text("\n".join([text[0], ",".join(values)]) + "\n")
    code = main(RUN + ["--data-root", str(mnist_data_root), "--out", str(finished)])
    one_line_error(code, capsys.readouterr().err, "runs.csv: line 2", "test_acc", "oops")


# 3. silently wrong numbers
@pytest.mark.parametrize("setting,message", [("edgepopup.lr=nan", "not a finite number"),
                                             ("crbg.lr=-1", "a learning rate must be > 0"),
                                             ("cs.momentum=1.5", "outside [0, 1)")])
def test_bad_hyperparameters_fail_before_any_cell(tmp_path, capsys, setting, message):
    code = main(["run", "--methods", "crbg", "--set", setting, "--out", str(tmp_path / "o")])
    one_line_error(code, capsys.readouterr().err, message)
    assert not (tmp_path / "o").exists()


class Leaky(Random):
    """A broken method: its final mask keeps `miss` more of the weights than the target allows."""

    name = "leaky"
    miss = 0.5

    def finalize(self) -> None:
        self.project_global(1.0 - self.target + self.miss)


@pytest.mark.parametrize("miss,achieved", [(0.5, "0.0000"), (0.015, "0.4850"), (0.005, None)])
def test_a_cell_that_misses_its_target_is_failed_not_ok(tmp_path, mnist_data_root, capsys, monkeypatch, miss,
                                                        achieved):
    """More than 0.01 off the target is a failed row (0.485 for 0.5), within it an ok one (0.495)."""
    monkeypatch.setitem(METHODS, "leaky", Leaky)
    monkeypatch.setattr(Leaky, "miss", miss)
    out = tmp_path / "o"
    code = main(RUN[:-4] + ["--methods", "leaky", "--sparsity", "0.5", "--data-root", str(mnist_data_root),
                            "--out", str(out)])
    (row,) = rows(out / "runs.csv")
    if achieved is None:
        assert code == 0 and row["status"] == "ok" and float(row["sparsity"]) == pytest.approx(0.495, abs=1e-4)
        return
    assert code == 1
    assert row["status"] == "failed" and f"achieved sparsity {achieved} misses the target 0.5" in row["error"]
    assert "failed:" in capsys.readouterr().out


# 4. report input
def test_report_rejects_out_of_range_values_and_unknown_layer_target(finished, tmp_path, capsys):
    one_line_error(main(["report", str(finished), "--out", str(tmp_path / "r0"), "--layer-target", "0.7"]),
                   capsys.readouterr().err, "--layer-target 0.7", "targets: 0.5")
    for column, value, span in (("sparsity", "7.5", "[0.0, 1.0]"), ("test_acc", "-40", "[0.0, 100.0]")):
        runs = rows(finished / "runs.csv")
        backup = dict(runs[0])
        runs[0][column] = value
        with open(finished / "runs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(runs[0]))
            w.writeheader()
            w.writerows(runs)
        one_line_error(main(["report", str(finished), "--out", str(tmp_path / "r")]), capsys.readouterr().err,
                       "runs.csv: line 2", column, span)
        with open(finished / "runs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(backup))
            w.writeheader()
            w.writerow(backup)


# 5. no folders left behind
def test_missing_data_root_is_not_created_and_names_the_fix(tmp_path, capsys, monkeypatch):
    root = tmp_path / "nonexistent" / "dir"
    monkeypatch.setenv("TICKETBENCH_DATA", str(root))
    code = main(["run", "--methods", "random", "--sparsity", "0.5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    one_line_error(code, err, "--data-root", "$TICKETBENCH_DATA")
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "o").exists()


# 6. checkpoints
def test_corrupt_checkpoint_is_reported_and_the_cell_restarts(tmp_path, mnist_data_root, capsys):
    out = tmp_path / "o"
    cell = SweepSpec(methods=["crbg"], sparsity=[0.5], epochs=1).cells()[0]
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / f"{cell.id}.pt").write_bytes(os.urandom(100))
    assert main(RUN[:-4] + ["--methods", "crbg", "--sparsity", "0.5", "--data-root", str(mnist_data_root),
                            "--out", str(out)]) == 0
    assert f"checkpoint {out / 'checkpoints' / cell.id}.pt is unreadable" in capsys.readouterr().err
    assert rows(out / "runs.csv")[0]["status"] == "ok"


def test_a_resumed_cell_says_so_and_counts_its_earlier_wall_time(tmp_path, capsys):
    """A cell killed in search epoch 2 resumes after epoch 1, says so on stderr, and its row's wall_s counts
    the killed run's time (here at least the 1 s its first epoch was held) besides its own."""
    from benchmarks.cell import run_cell
    from benchmarks.spec import Cell
    from tests.conftest import tiny_splits
    from tests.test_checkpoint import Killed

    cell = Cell(method="crbg", arch="lenet300", dataset="tiny", target_sparsity=0.8, seed=0, epochs=3, batch_size=32)
    splits, cpu = tiny_splits(n=128), torch.device("cpu")

    def slow_then_killed(row):
        if (row["phase"], row["epoch"]) == ("search", 1):
            time.sleep(1.0)
        if (row["phase"], row["epoch"]) == ("search", 2):
            raise Killed

    with pytest.raises(Killed):
        run_cell(cell, splits, cpu, progress=False, checkpoints=tmp_path, on_epoch=slow_then_killed,
                 passthrough=(Killed,))
    capsys.readouterr()
    (ckpt,) = tmp_path.glob("*.pt")
    earlier = torch.load(ckpt, weights_only=False)["wall"]
    row = run_cell(cell, splits, cpu, progress=False, checkpoints=tmp_path).run
    assert "resumes from its checkpoint after search epoch 1" in capsys.readouterr().err
    assert earlier >= 1.0 and row["status"] == "ok" and row["wall_s"] >= row["search_s"]
    assert row["wall_s"] >= earlier  # the killed run's time, held 1 s, and this run's (epochs 2-3: far less)


# 7. paths
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ""])
def test_name_must_be_a_plain_folder_name(name, capsys):
    one_line_error(main(["run", "--name", name]), capsys.readouterr().err, "--name")


# 8, 11. newcomer messages
def test_defaults_are_announced_and_summary_covers_this_command(finished, mnist_data_root, capsys):
    other = RUN[:-2] + ["--sparsity", "0.8", "--data-root", str(mnist_data_root), "--out", str(finished)]
    other = [a for a in other if a not in ("--dataset", "mnist")]
    assert main(other) == 0
    out = capsys.readouterr()
    assert "no --dataset given: using mnist" in out.err
    table = out.out
    assert "0.8" in table and "0.5 " not in table.split("files:")[0]  # only this command's cells
    assert f"bench report {finished}" in table and "runs.csv" in table
    header, first = table.splitlines()[:2]
    assert "std" in header and "nan" not in first.lower()


def test_long_cpu_cells_get_a_warning(finished, mnist_data_root, capsys, monkeypatch):
    import benchmarks.estimate as estimate

    args = RUN + ["--data-root", str(mnist_data_root), "--out", str(finished), "--device", "cpu"]
    assert main(args + ["--seeds", "2"]) == 0  # one epoch of lenet300: far below the default threshold
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setattr(estimate, "LONG_CPU_CELL_S", 0.0)
    assert main(args + ["--seeds", "1"]) == 0  # a one-shot cell without training: nothing to wait for
    assert "warning" not in capsys.readouterr().err
    assert main(args + ["--seeds", "1", "--methods", "edgepopup", "--train-size", "1000"]) == 0
    err = capsys.readouterr().err
    assert "warning: on the CPU one edgepopup cell of lenet300 on mnist (8 steps of batch 128) takes about" in err
    assert "--device cuda" in err and "--train-size" in err


def test_the_cpu_estimate_counts_the_steps_a_cell_really_runs(mnist_data_root, tmp_path, capsys, monkeypatch):
    """Issue 28, point 13: a batch larger than the data is one step per epoch, not batch/8 timed steps (it warned
    19.9 h for a 1-s cell); IMP's rounds count (a 0.9 IMP cell runs 11 rounds of its epochs)."""
    import benchmarks.estimate as estimate

    monkeypatch.setattr(estimate, "LONG_CPU_CELL_S", 60.0)
    assert main(RUN + ["--data-root", str(mnist_data_root), "--out", str(tmp_path / "r"), "--device", "cpu",
                       "--train-size", "461", "--batch-size", "10000000"]) == 0
    assert "warning" not in capsys.readouterr().err
    from benchmarks.spec import Cell

    imp = Cell("imp", "lenet300", "mnist", 0.9, 0, regime="weak", epochs=2, train_epochs=3)
    assert estimate.cell_epochs(imp, 10, (1, 28, 28)) == 11 * 2 + 3
    assert estimate.cell_epochs(imp.replace(method="random"), 10, (1, 28, 28)) == 3  # one-shot, then training
    per_example = estimate.seconds_per_example("lenet300", 10, (1, 28, 28), 128)
    assert 0 < per_example < 0.01  # a LeNet step: microseconds per example


# 12. listings
def test_list_shows_whole_first_paragraphs(capsys):
    assert main(["list", "archs"]) == 0
    conv2 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("conv2"))
    assert "no biases, no BatchNorm (layers conv1..convN, fc1, fc2, fc3)." in conv2  # not cut at the first line


# 10. layer names
def test_layers_are_named_and_exclude_patterns_must_match(finished, mnist_data_root, tmp_path, capsys):
    assert [r["layer"] for r in rows(finished / "layers.csv")] == ["fc1", "fc2", "fc3"]
    masks = torch.load(finished / "masks" / f"{rows(finished / 'runs.csv')[0]['cell']}.pt")
    assert list(masks) == ["fc1", "fc2", "fc3"]
    code = main(RUN + ["--data-root", str(mnist_data_root), "--out", str(tmp_path / "o"), "--exclude", "1"])
    one_line_error(code, capsys.readouterr().err, "--exclude '1' matches no prunable module of lenet300", "fc1")
    assert main(RUN + ["--data-root", str(mnist_data_root), "--out", str(tmp_path / "o"), "--exclude", "fc3"]) == 0
    assert [r["layer"] for r in rows(tmp_path / "o" / "layers.csv")] == ["fc1", "fc2"]


# 16. promised exit codes
def test_promised_one_line_errors(tmp_path, capsys):
    if not torch.cuda.is_available():
        one_line_error(main(["run", "--methods", "random", "--device", "cuda", "--out", str(tmp_path / "o")]),
                       capsys.readouterr().err, "no CUDA device")
    one_line_error(main(["status", str(tmp_path)]), capsys.readouterr().err, "not a folder written by bench run")
    one_line_error(main(["tune", "--methods", "nope", "--out", str(tmp_path / "t")]), capsys.readouterr().err, "nope")
    one_line_error(main(["tune", "--methods", "crbg", "--dataset", "synthetic", "--storage", "bogus://x",
                         "--out", str(tmp_path / "t2")]),
                   capsys.readouterr().err, "storage")


# 9. units and the column schema
def test_every_written_column_is_in_the_schema(tmp_path, capsys):
    from benchmarks.columns import describe

    out = tmp_path / "o"
    monkey_args = ["run", "--methods", "crbg,dense", "--regime", "weak", "--arch", "lenet300", "--dataset",
                   "synthetic", "--epochs", "1", "--sparsity", "0.5", "--granularity", "unstructured,structured",
                   "--out", str(out), "--no-progress"]
    assert main(monkey_args) == 0
    for file in ("runs.csv", "curves.csv", "layers.csv"):
        header = (out / file).read_text().splitlines()[0].split(",")
        missing = [c for c in header if describe(file, c) is None]
        assert not missing, f"{file}: columns without a schema entry: {missing}"
    assert describe("runs.csv", "test_acc") == ("%", "top-1 test accuracy of the final binary mask")
    assert main(["list", "columns"]) == 0
    listing = capsys.readouterr().out
    assert "runs.csv" in listing and "sparsity_before_projection" in listing and "fraction" in listing


def test_summary_keeps_tuned_and_default_cells_apart(tmp_path):
    from benchmarks.results import append_rows
    from benchmarks.summary import summary_table

    base = {"arch": "lenet300", "dataset": "mnist", "method": "cs", "granularity": "unstructured",
            "regime": "strong", "sanity": "none", "target_sparsity": 0.9, "sparsity": 0.9, "status": "ok"}
    append_rows(tmp_path / "runs.csv", [{**base, "cell": "a", "seed": 0, "test_acc": 97.0, "tuned": "default"},
                                        {**base, "cell": "b", "seed": 0, "test_acc": 90.0, "tuned": "s:3"}])
    table = summary_table(tmp_path).splitlines()
    assert len([line for line in table if " cs" in line]) == 2
    assert any("97.00" in line and "cs (tuned)" not in line for line in table)
    assert any("90.00" in line and "cs (tuned)" in line for line in table)


# issue 28, 3: a YAML value of the wrong type or a key given twice is refused, never rounded or overwritten
@pytest.mark.parametrize("text,message", [
    ("epochs: 1.5\n", "epochs: expected int, got 1.5"),
    ("epochs: true\n", "epochs: expected int, got True"),
    ("seeds: [0, 1.5]\n", "seeds: expected int, got 1.5"),
    ("amp: 1\n", "amp: expected bool, got 1"),
    ("methods: [crbg]\nmethods: [cs]\n", "duplicate key 'methods'"),
    ("hparams:\n  crbg:\n    lr: 0.1\n    lr: 0.2\n", "duplicate key 'lr'"),
    ("train:\n  lr: true\n", "train.lr: expected float, got True"),
])
def test_yaml_values_of_the_wrong_type_and_duplicate_keys_are_refused(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    one_line_error(main(["run", "--config", str(cfg), "--dataset", "synthetic", "--out", str(tmp_path / "o")]),
                   capsys.readouterr().err, message)
    assert not (tmp_path / "o").exists()


# issue 28, 2 and 9: a plugin may not take a registered name (two networks would share cell ids), and a plugin
# that fails to import is one line
@pytest.mark.parametrize("source,message", [
    ("from benchmarks import register_model\n@register_model('lenet300')\ndef net(c, s): pass\n",
     "arch 'lenet300' is already registered"),
    ("from benchmarks import register_dataset\n@register_dataset('mnist')\ndef d(root, download, val_size): pass\n",
     "dataset 'mnist' is already registered"),
    ("def broken(:\n", "SyntaxError"),
    ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
])
def test_a_plugin_taking_a_name_or_failing_to_import_is_one_line(tmp_path, source, message):
    (tmp_path / "badplugin.py").write_text(source)
    env = {**os.environ, "TICKETBENCH_PLUGINS": "badplugin", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.cli", "list", "archs"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 2 and message in out.stderr and "badplugin" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


# issue 28, 1: a results file the suite cannot read is never rewritten, by bench run, status or report
def _drop_column(path, column):
    pd.read_csv(path).drop(columns=column).to_csv(path, index=False)


CORRUPTIONS = {
    "runs.csv without its cell column": ("runs.csv", lambda p: _drop_column(p, "cell"), "no column cell"),
    "runs.csv of binary bytes": ("runs.csv", lambda p: p.write_bytes(bytes(range(256)) * 16), "not a text CSV"),
    "curves.csv of binary bytes": ("curves.csv", lambda p: p.write_bytes(b"\xff\xfe" * 999 + b"\n"), "not a text CSV"),
    "layers.csv without its layer column": ("layers.csv", lambda p: _drop_column(p, "layer"), "no column layer"),
    "plan.json of binary bytes": ("plan.json", lambda p: p.write_bytes(b"\x80\x81" * 500), "not JSON"),
}


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "r"
    assert main(["run", "--methods", "edgepopup,random", "--arch", "lenet300", "--dataset", "synthetic",
                 "--sparsity", "0.5", "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_an_unreadable_results_file_is_named_and_left_byte_for_byte(small_folder, tmp_path, capsys, corruption):
    out = tmp_path / "r"
    shutil.copytree(small_folder, out)
    name, corrupt, message = CORRUPTIONS[corruption]
    corrupt(out / name)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    commands = [["run", "--methods", "edgepopup,random,magnitude", "--arch", "lenet300", "--dataset", "synthetic",
                 "--sparsity", "0.5", "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)],
                ["status", str(out)], ["report", str(out), "--out", str(tmp_path / "rep")]]
    for command in commands:
        one_line_error(main(command), capsys.readouterr().err, str(out / name), message)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, command[0]


# issue 28, 11: what would fail inside every cell is refused before any cell runs, with the right message
@pytest.mark.parametrize("extra,message", [
    (["--exclude", "*"], "excludes every prunable module of lenet300"),
    (["--val-size", "0.99999"], "leaves 0 training"),
    (["--seeds", "99999999999999999999"], "outside 0..2**32-1"),
    (["--methods", ""], "--methods is empty"),
    (["--arch", ""], "--arch is empty"),
    (["--sparsity", ""], "--sparsity is empty"),
    (["--sparsity", ",".join(f"{i / 1000:.3f}" for i in range(1, 1000)), "--seeds", ",".join(map(str, range(1000)))],
     "the sweep has up to 999,000 cells, more than the 100,000 one bench run plans"),  # point 5: was 90 s, 1.3 GB
])
def test_late_failures_are_caught_before_any_cell(tmp_path, capsys, extra, message):
    args = ["run", "--methods", "edgepopup", "--dataset", "synthetic", "--epochs", "1", "--no-progress",
            "--out", str(tmp_path / "o")]
    one_line_error(main(args + extra), capsys.readouterr().err, message)
    assert not (tmp_path / "o" / "runs.csv").exists()


def test_a_set_for_a_method_not_run_is_warned_about(tmp_path, capsys):
    assert main(["run", "--methods", "random", "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1",
                 "--no-progress", "--set", "edgepopup.lr=0.2", "--out", str(tmp_path / "o")]) == 0
    assert "--set for edgepopup, which this sweep does not run" in capsys.readouterr().err


def test_a_folder_of_failed_cells_is_reported_and_exported_as_such(tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["run", "--methods", "edgepopup", "--dataset", "synthetic", "--sparsity", "0.5", "--epochs", "1",
                 "--no-progress", "--set", "edgepopup.lr=1e300", "--out", str(out)]) == 1  # the cell fails
    capsys.readouterr()
    one_line_error(main(["report", str(out), "--out", str(tmp_path / "rep")]), capsys.readouterr().err,
                   "no finished (status ok) cell", "1 failed cell(s)")
    cell = pd.read_csv(out / "runs.csv").cell.item()
    one_line_error(main(["export", str(out), "--cell", cell]), capsys.readouterr().err, f"cell {cell} failed",
                   "--rerun-failed")


def test_tune_with_a_storage_it_cannot_open_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "t"
    one_line_error(main(["tune", "--methods", "crbg", "--dataset", "synthetic", "--trials", "1", "--out", str(out),
                         "--storage", "postgresql://nobody@127.0.0.1:1/none"]), capsys.readouterr().err,
                   "cannot open Optuna storage")
    assert not out.exists()


def test_output_into_a_closed_pipe_ends_quietly():
    """issue 28, 10: `bench list columns | head -2` ends without a BrokenPipeError traceback. Here the reader
    closes its end before bench writes anything, so every write meets the closed pipe."""
    proc = subprocess.Popen(["bench", "list", "columns"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


# issue 28, 7: a config that is a pipe, a device or far too large is refused at once, never read on
def test_a_config_that_is_no_regular_file_or_too_large_is_refused(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("a" * (2 << 20))
    for path, message in ((fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                          (big, "more than a settings file's")):
        one_line_error(main(["run", "--config", str(path)]), capsys.readouterr().err, message)


# issue 28, 4: export --out: a folder path writes into the folder, a missing parent is an error
def test_export_out_is_a_file_or_a_folder_and_never_creates_missing_parents(small_folder, tmp_path, capsys):
    cell = pd.read_csv(small_folder / "runs.csv").query("method == 'edgepopup'").cell.item()
    into = tmp_path / "exports"
    assert main(["export", str(small_folder), "--cell", cell, "--out", f"{into}/"]) == 0
    assert (into / f"{cell}.pt").is_file()
    assert main(["export", str(small_folder), "--cell", cell, "--out", str(into)]) == 0  # an existing folder
    assert main(["export", str(small_folder), "--cell", cell, "--out", str(tmp_path / "t.pt")]) == 0
    assert (tmp_path / "t.pt").is_file()
    capsys.readouterr()
    for out in (tmp_path / "no" / "dir" / "x.pt", f"{tmp_path / 'no' / 'dir'}/"):
        one_line_error(main(["export", str(small_folder), "--cell", cell, "--out", str(out)]),
                       capsys.readouterr().err, "does not exist")
    assert not (tmp_path / "no").exists()
