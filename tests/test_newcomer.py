"""What a new user trips on in their first hour (issue 28, points 18 and 20): ids to export, --slim that
removes nothing, help texts, aligned listings, plurals, and SIGTERM that says how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.cli import main

RUN = ["run", "--arch", "lenet300", "--dataset", "mnist", "--epochs", "1", "--no-progress", "--sparsity", "0.5"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.conftest import mnist_root

    root = mnist_root()
    if root is None:
        pytest.skip("MNIST not found: set TICKETBENCH_DATA to a folder with MNIST/raw")
    out = tmp_path_factory.mktemp("newcomer") / "o"
    assert main(RUN + ["--methods", "random,magnitude", "--train-size", "500", "--data-root", str(root),
                       "--out", str(out)]) == 0
    return out


def test_status_lists_the_ids_export_asks_for(folder, capsys):
    import pandas as pd

    capsys.readouterr()
    assert main(["export", str(folder), "--cell", "zzz"]) == 2
    assert f"bench status {folder} --cells lists them" in capsys.readouterr().err
    assert main(["status", str(folder)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1  # counts only, as before
    assert main(["status", str(folder), "--cells"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    cells = set(pd.read_csv(folder / "runs.csv").cell)
    assert len(lines) == 2 and {line.split()[1] for line in lines} == cells
    assert all(line.split()[0] == "done" for line in lines) and any(" magnitude " in line for line in lines)


def test_slim_on_an_unstructured_ticket_says_nothing_was_removed(folder, tmp_path, capsys):
    from benchmarks import load_ticket

    capsys.readouterr()
    out = tmp_path / "t.pt"
    import pandas as pd

    cell = pd.read_csv(folder / "runs.csv").cell.iloc[0]
    assert main(["export", str(folder), "--cell", cell, "--slim", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--slim: nothing to remove" in printed and "slimmed:" not in printed
    meta = load_ticket(out).ticket_metadata
    assert meta["slimmed"] is False and meta["parameters_slim"] == meta["parameters"]


@pytest.mark.parametrize("command", ["status", "list"])
def test_every_command_has_a_description(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "-h"])
    usage, _, rest = capsys.readouterr().out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert len(description.split()) >= 10 and not description.lstrip().startswith(("positional", "options")), rest


@pytest.mark.parametrize("what", ["archs", "methods", "datasets"])
def test_listings_are_aligned(what, capsys):
    assert main(["list", what]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("timm:")]
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in lines}
    assert len(starts) == 1, lines  # every description starts in one column


def test_counts_are_plural_only_above_one():
    from benchmarks.console import count

    assert [count(1, "epoch"), count(2, "epoch"), count(1, "study"), count(3, "study"), count(0, "trial")] == \
        ["1 epoch", "2 epochs", "1 study", "3 studies", "0 trials"]


def test_sigterm_says_how_to_resume(tmp_path, mnist_data_root):
    """SIGTERM (a cluster scheduler's stop) ends a run as Ctrl-C does: the resume line, exit 143, and the same
    command resumes (before: exit 143 and nothing said)."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "benchmarks.cli", *RUN, "--methods", "edgepopup", "--epochs", "30",
           "--data-root", str(mnist_data_root), "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 120
        while not list((out / "checkpoints").glob("*.pt")) and time.time() < deadline:  # a cell is under way
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "bench: terminated; finished cells are saved, run the same command to resume" in err
    assert "Traceback" not in err
