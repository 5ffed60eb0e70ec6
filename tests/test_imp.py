"""Iterative magnitude pruning with rewinding (`methods/imp.py`): the round schedule, the pruning of surviving
weights only, the rewind, and the method run end to end as a user runs it (resume: tests/test_checkpoint.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from methods import get_method
from tests.test_methods import lenet


@pytest.mark.parametrize("target,rounds", [(0.2, 1), (0.5, 4), (0.9, 11), (0.968, 16), (0.99, 21)])
def test_rounds_follow_from_the_target_and_the_last_lands_on_it(target, rounds):
    imp = get_method("imp")(lenet(), target, regime="weak")
    assert imp.rounds == rounds == math.ceil(math.log(1 - target) / math.log(0.8) - 1e-9)
    densities = [imp.density_after(r) for r in range(1, rounds + 1)]
    assert densities[-1] == pytest.approx(1 - target) and all(a > b for a, b in zip(densities, densities[1:]))
    assert densities[0] == pytest.approx(max(0.8, 1 - target))


def test_pruning_removes_the_smallest_surviving_magnitudes_globally():
    imp = get_method("imp")(lenet(), 0.9, regime="weak")
    n = sum(m.keep.numel() for m in imp.gated())
    imp.prune_to(0.8)
    first = [m.keep.clone() for m in imp.gated()]
    weights = [mod.parametrizations.weight.original.detach() for _, mod in imp.layers]
    kept = torch.cat([w[k] for w, k in zip(weights, first)]).abs()
    dropped = torch.cat([w[~k] for w, k in zip(weights, first)]).abs()
    assert sum(int(k.sum()) for k in first) == round(0.8 * n) and kept.min() >= dropped.max()
    with torch.no_grad():  # a pruned weight that grew large is not let back in
        for w, k in zip(weights, first):
            w[~k] = 100.0
    imp.prune_to(0.64)
    assert all(not (m.keep & ~k).any() for m, k in zip(imp.gated(), first))
    assert sum(int(m.keep.sum()) for m in imp.gated()) == round(0.64 * n)


def test_imp_runs_in_the_weak_regime_only(tmp_path, capsys):
    for regime in ("strong", "joint"):
        with pytest.raises(ValueError, match="weak regime only"):
            get_method("imp")(lenet(), 0.9, regime=regime)
    assert main(["run", "--methods", "imp,cts", "--sparsity", "0.9", "--dataset", "synthetic", "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "imp runs in the weak regime only, not --regime strong" in err and len(err.strip().splitlines()) == 1


def test_imp_end_to_end_prunes_each_round_and_trains_the_rewound_ticket(mnist_data_root, tmp_path):
    """`bench run --methods imp --regime weak`: k rounds of one epoch, each pruning 20 % of what survives (the
    curves' sparsity per round), every round counted as search cost, the ticket at exactly the target and
    trained from the rewind point, far above chance."""
    out = tmp_path / "r"
    assert main(["run", "--methods", "imp", "--regime", "weak", "--sparsity", "0.9", "--epochs", "1",
                 "--train-size", "1000", "--no-progress", "--data-root", str(mnist_data_root), "--out", str(out)]) == 0
    (row,) = pd.read_csv(out / "runs.csv").itertuples()
    assert row.sparsity == pytest.approx(0.9, abs=1e-4) and row.search_epochs == 11 and row.train_epochs == 1
    assert row.hp_rounds == 11 and row.hp_rewind_epoch_used == 0  # a round of 1 epoch rewinds to init
    assert row.test_acc > 70.0
    curves = pd.read_csv(out / "curves.csv")
    search = curves[curves.phase == "search"]
    assert list(search["round"]) == list(range(1, 12))
    assert list(search.sparsity.round(3)) == [round(1 - 0.8 ** r, 3) for r in range(11)]


@pytest.mark.parametrize("arch,shape", [("conv2", (3, 32, 32)), ("resnet20", (3, 32, 32))])
def test_imp_on_conv_nets_trains_prunes_and_lands_on_the_target(arch, shape, monkeypatch):
    """Two rounds on a conv net with BatchNorm (resnet20): the weights train in each round, the ticket is at
    exactly the target, and the surviving weights are rewound to the rewind point before the last training."""
    from benchmarks.spec import Cell
    from benchmarks.cell import build_pruner
    from benchmarks.phases import train
    from tests.conftest import tiny_splits

    splits = tiny_splits(shape, n=32)
    cell = Cell(method="imp", arch=arch, dataset="tiny", target_sparsity=0.36, seed=0, regime="weak", epochs=2,
                batch_size=16)
    imp = build_pruner(cell, splits)
    init = {k: v.clone() for k, v in imp.weight_state().items()}
    import benchmarks.trainer as trainer

    entering = {}  # the weights as the final training starts
    real = trainer.CellRun.train_weights

    def spy(self, epochs, phase="train"):
        if phase == "train":
            entering.update({k: v.clone() for k, v in self.pruner.weight_state().items()})
        return real(self, epochs, phase)
    monkeypatch.setattr(trainer.CellRun, "train_weights", spy)
    result = train(imp, splits, epochs=2, batch_size=16, device=torch.device("cpu"), seed=0, progress=False,
                   train_epochs=1)
    assert imp.rounds == 2 and result.search_epochs == 4 and imp.report().sparsity == pytest.approx(0.36, abs=1e-3)
    rewind = imp.rewind_state()
    moved = [k for k in rewind if k.endswith("original") and not torch.equal(rewind[k], init[k])]
    assert moved  # the rewind point is after epoch 1 of training, not the initialisation
    assert entering and set(rewind) <= set(entering)
    assert all(torch.equal(entering[k], rewind[k]) for k in rewind)  # the last training starts from it
    trained = imp.weight_state()
    assert any(not torch.equal(trained[k], rewind[k]) for k in rewind if k.endswith("original"))
