"""`bench tune`: validation-only objective, outputs `bench run` accepts, Pareto studies, a killed
worker's trial marked failed, and two workers sharing one study on a real PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

import benchmarks.phases as phases
import benchmarks.trainer as trainer
from benchmarks.cli import main

TUNE = ["tune", "--method", "crbg", "--arch", "lenet300", "--dataset", "synthetic", "--sparsity", "0.8",
        "--batch-size", "64"]


def test_tune_uses_validation_only_and_writes_a_config_bench_run_accepts(tmp_path, monkeypatch, capsys):
    seen = []
    real = trainer.evaluate
    spy = lambda model, splits, which, *a: seen.append(which) or real(model, splits, which, *a)  # noqa: E731
    for module in (trainer, phases):  # every epoch's validation, and the cell's final evaluation
        monkeypatch.setattr(module, "evaluate", spy)
    out = tmp_path / "t"
    assert main(TUNE + ["--trials", "3", "--budget-epochs", "2", "--out", str(out)]) == 0
    assert set(seen) == {"val"} and len(seen) >= 3 * (2 + 1)  # the test set is never seen while tuning
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and set(trials.state) <= {"COMPLETE", "PRUNED"}
    assert {"hp_lam", "hp_sigma", "hp_lr", "hp_mu_init", "hp_threshold"} <= set(trials.columns)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["methods"] == ["crbg"] and set(best["hparams"]["crbg"]) >= {"lam", "sigma", "lr"}
    printed = capsys.readouterr().out
    assert "best parameters" in printed
    run_out = tmp_path / "run"
    assert main(["run", "--config", str(out / "best.yaml"), "--epochs", "1", "--no-progress", "--out", str(run_out)]) == 0
    row = pd.read_csv(run_out / "runs.csv").iloc[0]
    assert row.hp_lam == pytest.approx(best["hparams"]["crbg"]["lam"])
    # the same command again continues the study (load_if_exists)
    assert main(TUNE + ["--trials", "1", "--budget-epochs", "2", "--out", str(out)]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4
    # trial 0 is the method's default setting, enqueued once however often the command is run
    defaults = {"hp_lam": 1.0, "hp_sigma": 0.5, "hp_lr": 0.01, "hp_mu_init": 0.5, "hp_threshold": 0.5}
    is_default = (trials[list(defaults)] == pd.Series(defaults)).all(axis=1)
    assert is_default.tolist() == [True, False, False, False]


def test_pareto_objective(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(TUNE + ["--trials", "3", "--budget-epochs", "1", "--objective", "pareto", "--out", str(out)]) == 0
    study = optuna.load_study(study_name="crbg_lenet300_synthetic_0.8_pareto_batch_size=64", storage=f"sqlite:///{out / 'tune.db'}")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] * 2 and len(study.best_trials) >= 1
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    import re

    printed = {int(n): (float(v), float(sp)) for n, v, sp in
               re.findall(r"^trial (\d+): val ([\d.]+)% sparsity ([\d.]+)", capsys.readouterr().out, re.M)}
    for t in done:  # each trial's objective values are its cell's (validation accuracy, achieved sparsity)
        assert (round(t.values[0], 2), round(t.values[1], 4)) == printed[t.number]
        assert t.values[1] == t.user_attrs["sparsity"] and 0 <= t.values[1] <= 1
    assert yaml.safe_load((out / "best.yaml").read_text())["hparams"]["crbg"]["target_mode"] == "none"
    assert main(["tune", "--method", "edgepopup", "--dataset", "synthetic", "--objective", "pareto",
                 "--out", str(tmp_path / "e")]) == 2
    assert "fixed sparsity" in capsys.readouterr().err


def _wait_for(predicate, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_killed_worker_trial_is_marked_failed_and_study_stays_usable(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "benchmarks.cli", *TUNE, "--budget-epochs", "200", "--heartbeat", "1",
           "--out", str(out), "--study", "k"]
    storage = f"sqlite:///{out / 'tune.db'}"

    def running() -> bool:
        try:
            study = optuna.load_study(study_name="k", storage=storage)
        except Exception:
            return False
        return any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)

    proc = subprocess.Popen(cmd + ["--trials", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(running, 60), "no trial started"
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(2.5)  # past the grace period (2 heartbeats)
    done = subprocess.run([sys.executable, "-m", "benchmarks.cli", *TUNE, "--budget-epochs", "1", "--heartbeat", "1",
                           "--out", str(out), "--study", "k", "--trials", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="k", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    return found


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1 (run as the postgres user when we are root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("TICKETBENCH_REQUIRE_POSTGRES") == "1":  # set by .ci/run: CI must not skip this
            pytest.fail("PostgreSQL server binaries not installed, and TICKETBENCH_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs Debian's postgresql)")
    home = Path(tempfile.mkdtemp(prefix="ticketbench-pg-"))  # outside pytest's root-only tmp tree
    data = home / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_user + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-w", "-l", str(home / "log"), "-o",
                              f"-p {port} -h 127.0.0.1 -k {home}", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres):
    cmd = [sys.executable, "-m", "benchmarks.cli", *TUNE, "--budget-epochs", "2", "--trials", "3",
           "--storage", postgres, "--study", "shared"]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=postgres).trials
    assert sorted(t.number for t in trials) == list(range(6))  # none lost, none duplicated
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers contributed


def test_equal_budget_tuning_of_several_methods_then_bench_run_tuned(tmp_path, capsys):
    """One command tunes every method at every target with the same budget; `bench run --tuned` runs each
    cell with its own study's best configuration, rows say which, and reports keep tuned and default apart."""
    out = tmp_path / "t"
    assert main(["tune", "--methods", "crbg,edgepopup", "--arch", "lenet300", "--dataset", "synthetic",
                 "--sparsity", "0.5,0.8", "--trials", "2", "--budget-epochs", "1", "--batch-size", "64",
                 "--out", str(out)]) == 0
    manifest = yaml.safe_load((out / "tuned.yaml").read_text())["configs"]
    assert {(e["method"], e["target_sparsity"]) for e in manifest} == {
        ("crbg", 0.5), ("crbg", 0.8), ("edgepopup", 0.5), ("edgepopup", 0.8)}
    assert {(e["trials"], e["budget_epochs"]) for e in manifest} == {(2, 1)}  # the same budget for every study
    for e in manifest:
        trials = pd.read_csv(out / e["study"] / "trials.csv")
        assert len(trials) == 2 and (trials.method == e["method"]).all()
    run_out = tmp_path / "run"
    args = ["run", "--methods", "crbg,edgepopup,random", "--arch", "lenet300", "--dataset", "synthetic",
            "--sparsity", "0.5,0.8", "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(run_out)]
    assert main(args + ["--tuned", str(out)]) == 0
    assert "defaults for random" in capsys.readouterr().err
    assert main(args) == 0  # the same grid with defaults: separate cells, the same folder
    runs = pd.read_csv(run_out / "runs.csv")
    assert len(runs) == 10 and runs.cell.is_unique  # random (no study) is the same cell in both runs
    tuned = runs[runs.tuned != "default"]
    assert sorted(tuned.method) == ["crbg", "crbg", "edgepopup", "edgepopup"]
    for e in manifest:
        row = tuned[(tuned.method == e["method"]) & (tuned.target_sparsity == e["target_sparsity"])].iloc[0]
        assert row.tuned == f"{e['study']}:{e['trial']}"
        for k, v in e["hparams"].items():
            assert row[f"hp_{k}"] == pytest.approx(v)
    rep = tmp_path / "rep"
    assert main(["report", str(run_out), "--out", str(rep)]) == 0
    index = (rep / "index.md").read_text()  # the accuracy table: tuned and default rows side by side
    assert "| crbg (tuned)" in index and "| crbg |" in index and "| edgepopup (tuned)" in index
    assert main(["run", "--tuned", str(tmp_path / "nowhere"), "--dataset", "synthetic"]) == 2
    assert "no tuned.yaml" in capsys.readouterr().err


def test_a_weak_regime_study_is_keyed_by_its_regime_and_used_by_weak_cells_only(tmp_path, capsys):
    """`bench tune --regime weak` trains every trial's ticket and names and keys its study by the regime, so
    `bench run --tuned` applies it to weak-regime cells and not to strong ones (and an old manifest without
    the key still reads as the default regime)."""
    out = tmp_path / "t"
    assert main(TUNE + ["--method", "cs", "--regime", "weak", "--trials", "1", "--budget-epochs", "1",
                        "--out", str(out)]) == 0
    (entry,) = yaml.safe_load((out / "tuned.yaml").read_text())["configs"]
    assert entry["regime"] == "weak" and entry["study"] == "cs_lenet300_synthetic_0.8_constrained_weak_batch_size=64"
    assert yaml.safe_load((out / "best.yaml").read_text())["regime"] == "weak"
    args = ["run", "--methods", "cs", "--arch", "lenet300", "--dataset", "synthetic", "--sparsity", "0.8",
            "--epochs", "1", "--batch-size", "64", "--no-progress", "--tuned", str(out)]
    assert main(args + ["--regime", "weak", "--out", str(tmp_path / "weak")]) == 0
    assert main(args + ["--out", str(tmp_path / "strong")]) == 0
    assert pd.read_csv(tmp_path / "weak" / "runs.csv").tuned.item() == f"{entry['study']}:{entry['trial']}"
    assert pd.read_csv(tmp_path / "strong" / "runs.csv").tuned.item() == "default"
    from benchmarks.spec import manifest_key
    old = {k: v for k, v in entry.items() if k not in ("regime", "weight_init", "activation")}
    assert manifest_key(old) == manifest_key({**old, "regime": "strong", "weight_init": "auto", "activation": "relu"})
    assert manifest_key(old) != manifest_key(entry)


def test_tune_rejects_bad_budgets_in_one_line(tmp_path, capsys):
    for extra, needle in ((["--trials", "0"], "--trials and --budget-epochs"),
                          (["--heartbeat", "0"], "--heartbeat must be at least 1"),
                          (["--methods", "random"], "declares no search space"),
                          (["--sparsity", "0.5,0.8", "--study", "x"], "--study names one study")):
        assert main(TUNE + extra + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
