"""`bench` end to end as a user runs it: outputs, resume, bad input, config files, plugins."""

from __future__ import annotations

import csv
import os
import subprocess
import textwrap

import pandas as pd
import pytest
import torch

from benchmarks.cli import main

RUN = ["run", "--arch", "lenet300", "--dataset", "mnist", "--epochs", "1", "--no-progress"]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_ok(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


def test_bench_run_writes_tidy_outputs_and_resumes(tmp_path, mnist_data_root, capsys):
    out = tmp_path / "res"
    args = RUN + ["--methods", "crbg,edgepopup", "--sparsity", "0.5,0.9", "--data-root", str(mnist_data_root),
                  "--out", str(out), "--set", "crbg.lr=0.02"]
    printed = run_ok(args, capsys).out
    assert "edgepopup" in printed and "crbg" in printed  # summary table
    runs = read(out / "runs.csv")
    assert len(runs) == 4 and {r["status"] for r in runs} == {"ok"}
    required = {"cell", "method", "granularity", "regime", "arch", "dataset", "target_sparsity", "sparsity", "seed",
                "epochs", "test_acc", "val_acc", "wall_s", "device", "torch", "status"}
    assert required <= set(runs[0])
    for r in runs:
        assert abs(float(r["sparsity"]) - float(r["target_sparsity"])) < 0.01
        assert float(r["test_acc"]) > 50.0  # one epoch on MNIST is far above chance (10 %)
        masks = torch.load(out / "masks" / f"{r['cell']}.pt")
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept == int(r["kept_weights"])
        assert abs(1 - kept / sum(m.numel() for m in masks.values()) - float(r["sparsity"])) < 1e-9
    crbg = [r for r in runs if r["method"] == "crbg"]
    assert {r["hp_lr"] for r in crbg} == {"0.02"} and {r["hp_target_mode"] for r in crbg} == {"dual+project"}
    curves = read(out / "curves.csv")
    assert len(curves) == 4 and all("lambda" in c for c in curves)
    layers = read(out / "layers.csv")
    assert len(layers) == 4 * 3
    # Re-running the same command skips every finished cell.
    printed = run_ok(args, capsys).err
    assert "4 already done, 0 to run" in printed
    assert len(read(out / "runs.csv")) == 4


def test_structured_rows_report_units_and_weights(tmp_path, mnist_data_root, capsys):
    out = tmp_path / "s"
    run_ok(RUN + ["--methods", "crbg", "--granularity", "structured", "--sparsity", "0.77",
                  "--data-root", str(mnist_data_root), "--out", str(out)], capsys)
    (row,) = read(out / "runs.csv")
    assert row["granularity"] == "structured"
    assert abs(float(row["unit_sparsity"]) - 0.77) < 0.01
    l1, l2, l3 = read(out / "layers.csv")
    u1, u2 = int(l1["units_kept"]), int(l2["units_kept"])
    assert (int(l1["kept"]), int(l2["kept"]), int(l3["kept"])) == (u1 * 784, u2 * u1, 10 * u2)
    assert (u1 + u2) == round(400 * (1 - 0.77))
    assert float(row["sparsity"]) == pytest.approx(1 - (u1 * 784 + u2 * u1 + 10 * u2) / 266200)


def test_config_file_and_flags_override(tmp_path, mnist_data_root, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(textwrap.dedent(f"""
        methods: [edgepopup]
        arch: lenet300
        dataset: mnist
        sparsity: [0.5, 0.7]
        epochs: 1
        data_root: {mnist_data_root}
        out: {tmp_path / "cfg"}
        hparams:
          edgepopup: {{lr: 0.05}}
    """))
    run_ok(["run", "--config", str(cfg), "--sparsity", "0.6", "--no-progress"], capsys)
    (row,) = read(tmp_path / "cfg" / "runs.csv")
    assert row["target_sparsity"] == "0.6" and row["hp_lr"] == "0.05"


@pytest.mark.parametrize("args,message", [
    (["run", "--methods", "nope"], "unknown method 'nope'"),
    (["run", "--arch", "nope"], "unknown arch 'nope'"),
    (["run", "--dataset", "nope", "--arch", "lenet300"], "unknown dataset 'nope'"),
    (["run", "--sparsity", "0.5,1.0"], "sparsity 1.0 is outside (0, 1)"),
    (["run", "--sparsity", "0"], "sparsity 0.0 is outside (0, 1)"),
    (["run", "--sparsity", "abc"], "comma-separated list of float"),
    (["run", "--set", "crbg.nope=1"], "unknown hyperparameter crbg.nope"),
    (["run", "--set", "crbg.target_mode=magic"], "crbg.target_mode must be one of"),
    (["run", "--methods", "edgepopup", "--granularity", "structured"], "no cell to run"),
    (["run", "--config", "/nonexistent.yaml"], "config file not found"),
    (["list", "things"], "invalid choice"),
    (["run", "--regime", "medium"], "invalid choice"),
    (["run", "--train-epochs", "0"], "train_epochs must be at least 1"),
    (["run", "--set", "cts.objective=forward"], "cts.objective must be one of"),
    (["run", "--set", "snip.scope=local"], "scope must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    code = main(args + ["--out", str(tmp_path / "o")] if args[0] == "run" else args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_data_and_malformed_yaml_and_unwritable_out(tmp_path, capsys):
    assert main(RUN + ["--methods", "crbg", "--data-root", str(tmp_path), "--no-download",
                       "--out", str(tmp_path / "o")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [crbg\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "malformed YAML" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(RUN + ["--dataset", "synthetic", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_console_script_installed_and_help():
    out = subprocess.run(["bench", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--sparsity" in out.stdout and "TICKETBENCH_DATA" in out.stdout
    out = subprocess.run(["bench", "run", "--methods", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == "bench: error: unknown method 'nope'; available: crbg, cs, cts, dense, edgepopup, grasp, imp, magnitude, random, snip, synflow"


def test_user_registered_model_and_dataset(tmp_path):
    plugin = tmp_path / "myplugin.py"
    plugin.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from benchmarks import Splits, register_dataset, register_model

        @register_model("mynet")
        def mynet(num_classes, input_shape):
            return nn.Sequential(nn.Flatten(), nn.Linear(8, 16, bias=False), nn.ReLU(),
                                 nn.Linear(16, num_classes, bias=False))

        @register_dataset("mine")
        def mine(root, download, val_size):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(200, 8, generator=g)
            y = (x[:, 0] > 0).long()
            return Splits(TensorDataset(x[:100], y[:100]), TensorDataset(x[100:150], y[100:150]),
                          TensorDataset(x[150:], y[150:]), 2, (8,))
    """))
    env = {**os.environ, "TICKETBENCH_PLUGINS": "myplugin", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(["bench", "run", "--methods", "edgepopup", "--arch", "mynet", "--dataset", "mine",
                          "--sparsity", "0.5", "--epochs", "2", "--batch-size", "16", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    (row,) = read(tmp_path / "r" / "runs.csv")
    assert row["arch"] == "mynet" and row["dataset"] == "mine" and row["status"] == "ok"


def test_same_seed_same_masks_and_accuracy(tmp_path, capsys):
    """Determinism on the CPU: the same cell twice gives identical masks and accuracy."""
    rows = []
    for name in ("a", "b"):
        out = tmp_path / name
        run_ok(["run", "--methods", "crbg,edgepopup", "--arch", "conv2", "--dataset", "synthetic",
                "--sparsity", "0.8", "--epochs", "2", "--batch-size", "64", "--no-progress", "--out", str(out)], capsys)
        rows.append(read(out / "runs.csv"))
    for ra, rb in zip(*rows):
        assert ra["cell"] == rb["cell"] and ra["test_acc"] == rb["test_acc"] and ra["val_acc"] == rb["val_acc"]
        ma = torch.load(tmp_path / "a" / "masks" / f"{ra['cell']}.pt")
        mb = torch.load(tmp_path / "b" / "masks" / f"{rb['cell']}.pt")
        assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    # a different seed gives a different mask
    out = tmp_path / "c"
    run_ok(["run", "--methods", "crbg", "--arch", "conv2", "--dataset", "synthetic", "--sparsity", "0.8",
            "--epochs", "2", "--batch-size", "64", "--seeds", "1", "--no-progress", "--out", str(out)], capsys)
    (rc,) = read(out / "runs.csv")
    mc = torch.load(out / "masks" / f"{rc['cell']}.pt")
    ma = torch.load(tmp_path / "a" / "masks" / f"{rows[0][0]['cell']}.pt")
    assert any(not torch.equal(ma[k], mc[k]) for k in ma)


def test_weak_regime_sanity_and_amp_rows(tmp_path, capsys):
    """Weak regime with sanity cells and bf16 autocast on synthetic data: one row per cell, the dense
    reference once per seed at target 0, sanity variants labelled, search and training cost recorded."""
    out = tmp_path / "weak"
    args = ["run", "--methods", "snip,dense", "--arch", "lenet300", "--dataset", "synthetic", "--sparsity",
            "0.5,0.9", "--epochs", "1", "--batch-size", "64", "--regime", "weak", "--sanity", "--amp",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 2 * 4 + 1 and df.cell.is_unique and (df.status == "ok").all()
    assert set(df[df.method == "snip"].sanity) == {"none", "random", "shuffle", "reinit"}
    dense = df[df.method == "dense"]
    assert len(dense) == 1 and dense.target_sparsity.iloc[0] == 0 and dense.sparsity.iloc[0] == 0
    assert (df.regime == "weak").all() and df.amp.all() and (df.train_epochs == 1).all()
    assert (df[df.method == "snip"].search_epochs == 0).all() and (df.train_s > 0).all()
    assert {"layer_collapse", "search_s", "train_lr", "weight_init"} <= set(df.columns)
    assert set(pd.read_csv(out / "curves.csv").phase) == {"train"}


def test_compile_runs_a_search_cell_end_to_end(tmp_path, capsys, monkeypatch):
    """`--compile` (torch.compile of the training forward) runs a search cell to a finished row, and the
    forward really is compiled (a spy on torch.compile)."""
    compiled = []
    real = torch.compile

    def spy(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    out = tmp_path / "compiled"
    run_ok(["run", "--methods", "crbg", "--arch", "conv2", "--dataset", "synthetic", "--sparsity", "0.8",
            "--epochs", "1", "--batch-size", "64", "--compile", "--no-progress", "--out", str(out)], capsys)
    (row,) = read(out / "runs.csv")
    assert row["status"] == "ok" and row["compile"] == "True" and abs(float(row["sparsity"]) - 0.8) < 1e-3
    assert compiled == ["Sequential"]
