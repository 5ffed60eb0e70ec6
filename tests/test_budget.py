"""Target control that does not depend on the step budget (issue: a fair comparison at any budget), and the
fixed training subset that step-budget studies use."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from benchmarks.cli import main


@pytest.mark.parametrize("batch,epochs", [(64, 10), (16, 20)], ids=["240-steps", "1880-steps"])
def test_penalty_methods_reach_their_target_before_the_projection(mnist_data_root, tmp_path, batch, epochs):
    """CRBG and CS end within 0.01 of the target before the exact projection, on a few hundred and on a few
    thousand steps of the same 1,500 MNIST images, so the projection changes almost nothing."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "crbg,cs", "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.9",
                 "--train-size", "1500", "--batch-size", str(batch), "--epochs", str(epochs), "--no-progress",
                 "--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 and (runs.train_size == 1500).all()
    for _, row in runs.iterrows():
        assert abs(row.sparsity_before_projection - 0.9) <= 0.01, row.method
        assert abs(row.val_acc_before_projection - row.val_acc_after_projection) <= 1.0, row.method
        assert row.sparsity == pytest.approx(0.9, abs=1e-3)


def test_train_size_is_a_fixed_subset_recorded_and_part_of_the_cell(mnist_data_root, tmp_path, capsys, monkeypatch):
    import benchmarks.trainer as trainer
    from benchmarks.data import load_dataset

    seen = []  # what the runner trains on: the examples it was given and the steps of an epoch
    real_init = trainer.CellRun.__init__

    def spy(self, pruner, splits, *args, **kwargs):
        real_init(self, pruner, splits, *args, **kwargs)
        seen.append((len(splits.train), self.steps_per_epoch))
    monkeypatch.setattr(trainer.CellRun, "__init__", spy)

    splits = load_dataset("mnist", mnist_data_root)
    a, b = splits.with_train_size(100), splits.with_train_size(100)
    assert len(a.train) == 100 and (a.train.tensors[1] == b.train.tensors[1]).all()  # the same examples
    assert a.val is splits.val and a.test is splits.test  # validation and test untouched
    out = tmp_path / "r"
    base = ["run", "--methods", "edgepopup", "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.5",
            "--epochs", "1", "--no-progress", "--data-root", str(mnist_data_root), "--out", str(out), "--seeds", "0,1"]
    assert main(base + ["--train-size", "256"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert (runs.train_size == 256).all() and len(runs) == 2
    assert seen == [(256, 2), (256, 2)]  # 256 examples at batch 128, both seeds
    assert main(base + ["--train-size", "512"]) == 0  # another size: other cells beside them
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs.train_size) == [256, 256, 512, 512] and runs.cell.is_unique
    capsys.readouterr()
    assert main(base + ["--train-size", "99999999"]) == 2
    err = capsys.readouterr().err
    assert "--train-size 99999999 is outside 1..54000" in err and len(err.strip().splitlines()) == 1


def test_cs_at_low_sparsity_keeps_the_mask_it_searched(mnist_data_root, tmp_path):
    """CS in the strong regime at sparsity 0.5, where the loss alone closes more entries than the target
    allows: the density floor holds the search at its target, so the projection changes almost nothing and
    the ticket is good (before the floor: 0.534 before the projection, validation 96.7 -> 90.7 %)."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "cs", "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.5",
                 "--epochs", "3", "--no-progress", "--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    (row,) = pd.read_csv(out / "runs.csv").itertuples()
    assert abs(row.sparsity_before_projection - 0.5) <= 0.01
    assert abs(row.val_acc_before_projection - row.val_acc_after_projection) <= 0.5
    assert row.test_acc >= 95.0 and row.hp_floor


def test_cts_fill_holds_its_median_mask_at_the_target(mnist_data_root, tmp_path):
    """CTS at 0.8 on 1,500 images and 240 steps: without the fill the task loss closes the median mask (s > 0)
    far below the target density (0.99 sparsity) and the final top-k reopens entries the search never trained
    with (test 9 %); with it (the default) the search ends within 0.01 of the target and the ticket works."""
    out = tmp_path / "r"
    base = ["run", "--methods", "cts", "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.8",
            "--train-size", "1500", "--batch-size", "64", "--epochs", "10", "--no-progress",
            "--data-root", str(mnist_data_root), "--out", str(out)]
    assert main(base) == 0 and main(base + ["--set", "cts.fill=false"]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index("hp_fill")
    filled, plain = runs.loc[True], runs.loc[False]
    assert abs(filled.sparsity_before_projection - 0.8) <= 0.01 and filled.hp_fill_used
    assert plain.sparsity_before_projection > 0.81 and not plain.hp_fill_used
    assert filled.test_acc > plain.test_acc + 20


def test_relaxed_methods_match_edgepopup_at_low_sparsity_on_small_data(mnist_data_root, tmp_path):
    """Acceptance of the fair-comparison issue at its hardest point: sparsity 0.5 on 1,500 images (about 700
    search steps), where CS with SGD on its logits ended 2.3-2.7 points below Edge-Popup. CRBG, CS and CTS each
    end within 2 points of Edge-Popup and within 0.01 of the target before the projection."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "edgepopup,crbg,cs,cts", "--arch", "lenet300", "--dataset", "mnist",
                 "--sparsity", "0.5", "--train-size", "1500", "--batch-size", "64", "--epochs", "30", "--no-progress",
                 "--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index("method")
    for method in ("crbg", "cs", "cts"):
        assert runs.test_acc[method] >= runs.test_acc["edgepopup"] - 2.0, (method, runs.test_acc.to_dict())
        assert abs(runs.sparsity_before_projection[method] - 0.5) <= 0.01, method


def test_per_search_rates_stop_growing_below_the_shortest_search():
    """A per-search rate is spread over at least MIN_SEARCH_STEPS: a 15-step search steps at the rate of a
    422-step one (10x the reference rate, not 281x), and searches at least that long are unchanged."""
    from methods.schedules import MIN_SEARCH_STEPS, REFERENCE_STEPS, per_search_lr

    assert MIN_SEARCH_STEPS == 422
    assert per_search_lr(0.01, REFERENCE_STEPS, 15) == per_search_lr(0.01, REFERENCE_STEPS, 422) == pytest.approx(0.1)
    assert per_search_lr(0.01, REFERENCE_STEPS, 8440) == pytest.approx(0.005)
    assert per_search_lr(0.01, 0, 15) == 0.01  # a per-step rate is left alone


def test_a_tiny_search_is_sane_says_so_and_logs_its_penalty_apart(mnist_data_root, tmp_path, capsys):
    """Issue 28, point 12: 80 steps (2,000 images, 5 epochs at batch 128). Before the floor CRBG reached 28 % at
    0.9 and CTS 11 % (their rates at 53x the reference); now both are within a few points of Edge-Popup. The
    cell warns that its search is short; curves.csv keeps the task loss (nats) apart from the penalty, and
    the final lambda is a result column, not a hyperparameter."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "crbg,cts,edgepopup", "--arch", "lenet300", "--dataset", "mnist",
                 "--sparsity", "0.9", "--train-size", "2000", "--epochs", "5", "--no-progress",
                 "--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("searches 80 steps, fewer than the 422") == 2  # crbg and cts; edgepopup's rate is per step
    runs = pd.read_csv(out / "runs.csv").set_index("method")
    assert runs.loc["crbg", "test_acc"] > 70 and runs.loc["cts", "test_acc"] > 70
    assert runs.loc["edgepopup", "test_acc"] - runs.loc["crbg", "test_acc"] < 10
    assert "hp_lambda_final" not in runs and runs.loc["crbg", "lambda_final"] != runs.loc["crbg", "hp_lam"]
    curves = pd.read_csv(out / "curves.csv")
    crbg, ep = curves[curves.method == "crbg"], curves[curves.method == "edgepopup"]
    assert crbg.penalty.notna().all() and (crbg.penalty > 0).any() and ep.penalty.isna().all()
    assert (curves.train_loss < 3.0).all()  # nats of a 10-class cross-entropy, not the penalty's scale


def test_search_step_returns_the_task_loss_and_the_penalty_apart():
    """`search_step` gives (task loss, penalty): the criterion on the same draw, and the penalty's own value."""
    from torch import nn

    from benchmarks.trainer import search_step
    from benchmarks.zoo import build_model
    from methods import get_method

    torch.manual_seed(0)
    pruner = get_method("cs")(build_model("lenet300", 10, (1, 28, 28)), 0.8)  # deterministic soft mask
    opt, sched = pruner.optimizer(10)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.no_grad():
        task = nn.functional.cross_entropy(pruner.model(x), y)
    penalty = pruner.penalty()
    for m in pruner.gated():
        m.penalty_scale = None  # disarm: no backward follows this call
    pair = search_step(pruner.model, pruner, opt, sched, nn.CrossEntropyLoss(), x, y, 0)
    assert pair.shape == (2,)
    assert pair[0] == pytest.approx(float(task), rel=1e-6) and pair[1] == pytest.approx(float(penalty), rel=1e-6)
    assert float(penalty) > 0
