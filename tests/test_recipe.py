"""The weight-training recipe as a settings group: flags and YAML keys from its fields, validated, part of
the cell id only when it differs from the default, recorded in rows, and what the optimiser really gets."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from benchmarks.recipe import Recipe
from benchmarks.spec import SweepSpec

LTH = ["--train-optimizer", "adam", "--train-lr", "1.2e-3", "--train-weight-decay", "0",
       "--train-schedule", "constant", "--batch-size", "60"]


def test_lottery_ticket_recipe_runs_as_a_sweep_setting(tmp_path, mnist_data_root, monkeypatch, capsys):
    seen = []
    adam = torch.optim.Adam

    def spy(params, **kw):
        seen.append(kw)
        return adam(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    out = tmp_path / "o"
    assert main(["run", "--methods", "dense", "--regime", "weak", "--arch", "lenet300", "--dataset", "mnist",
                 "--epochs", "1", "--train-size", "600", "--data-root", str(mnist_data_root), "--out", str(out),
                 "--no-progress", *LTH]) == 0, capsys.readouterr().err
    assert seen == [{"lr": 1.2e-3, "betas": (0.9, 0.999), "weight_decay": 0.0}]
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert (row.train_optimizer, row.train_lr, row.train_schedule, row.batch_size) == ("adam", 1.2e-3, "constant", 60)
    assert row.test_acc > 70  # 10 steps of Adam on 600 images learn something


def test_recipe_enters_the_cell_id_only_when_changed():
    default = SweepSpec(methods=["dense"], regime="weak").cells()[0]
    explicit = SweepSpec(methods=["dense"], regime="weak", train={"optimizer": "sgd", "lr": 0.0}).cells()[0]
    adam = SweepSpec(methods=["dense"], regime="weak", train={"optimizer": "adam"}).cells()[0]
    assert default.id == explicit.id != adam.id
    assert default.recipe.lr == 0.1 and adam.recipe.optimizer == "adam"


def test_schedules_warm_up_then_step_or_decay():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    step = Recipe(schedule="step", milestones="0.5,0.75", gamma=0.1, warmup_epochs=1).make_schedule(opt, 100, 10)
    factors = []
    for _ in range(100):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        step.step()
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # warm-up over 10 steps
    assert factors[49] == 1.0 and factors[50] == pytest.approx(0.1) and factors[75] == pytest.approx(0.01)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = Recipe().make_schedule(opt, 100, 10)
    for _ in range(50):
        opt.step()
        cosine.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("args,message", [
    (["--train-lr", "-1"], "lr must be >= 0"),
    (["--train-optimizer", "rmsprop"], "invalid choice"),
    (["--train-milestones", "0.5,2"], "milestones must be"),
    (["--val-size", "1.5"], "val_size 1.5 is outside [0, 1)"),
])
def test_bad_recipe_values_are_one_line(args, message, capsys, tmp_path):
    assert main(["run", "--methods", "dense", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_yaml_train_mapping_and_flags_merge(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("methods: [dense]\nregime: weak\ntrain: {optimizer: adam, lr: 0.001}\n")
    spec = SweepSpec.from_sources(config, {"train": {"lr": 0.002}})
    assert spec.cells()[0].recipe == Recipe(optimizer="adam", lr=0.002)


def test_val_size_is_a_flag_recorded_in_rows(tmp_path, mnist_data_root):
    out = tmp_path / "o"
    assert main(["run", "--methods", "random", "--sparsity", "0.5", "--arch", "lenet300", "--dataset", "mnist",
                 "--epochs", "1", "--val-size", "0.2", "--data-root", str(mnist_data_root), "--out", str(out),
                 "--no-progress"]) == 0
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row.val_size == 0.2 and row.train_size == 48000  # 60,000 MNIST training images, 20 % held out


def test_val_size_zero_trains_on_everything_and_leaves_validation_empty(tmp_path, mnist_data_root, capsys):
    """Issue 28, point 16: the papers' protocols train on all 60,000 images. The validation columns are gaps
    (not zeros), the search's own sparsity before the projection is still measured, the folder resumes,
    reports and lists; bench tune refuses (trials are scored on validation data only)."""
    out = tmp_path / "o"
    args = ["run", "--methods", "crbg", "--sparsity", "0.9", "--arch", "lenet300", "--dataset", "mnist",
            "--epochs", "2", "--train-size", "6000", "--val-size", "0", "--data-root", str(mnist_data_root),
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "--val-size 0: every training example trains and none validates" in capsys.readouterr().err
    raw = (out / "runs.csv").read_text().splitlines()
    header, line = raw[0].split(","), raw[1].split(",")
    assert line[header.index("val_acc")] == "" and line[header.index("val_acc_before_projection")] == ""
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row.val_size == 0 and row.status == "ok" and row.test_acc > 50
    assert abs(row.sparsity_before_projection - 0.9) < 0.05
    assert pd.read_csv(out / "curves.csv").val_acc.isna().all()
    from benchmarks.data import load_dataset

    assert len(load_dataset("mnist", mnist_data_root, val_size=0.0).train) == 60000
    assert main(args) == 0 and "1 already done" in capsys.readouterr().err  # the empty columns read back
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    code = main(["tune", "--methods", "crbg", "--sparsity", "0.9", "--arch", "lenet300", "--dataset", "mnist",
                 "--val-size", "0", "--data-root", str(mnist_data_root), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and "--val-size 0 leaves none" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()
