"""A cell killed mid-run resumes from its last per-epoch checkpoint and ends exactly as an uninterrupted
run (same masks, same accuracy, same curves): in the search phase and in weak-regime training."""

from __future__ import annotations

import pytest
import torch

from benchmarks.spec import Cell
from benchmarks.sweep import build_pruner
from benchmarks.trainer import train
from tests.conftest import tiny_splits

CPU = torch.device("cpu")


class Killed(Exception):
    pass


def run(method: str, regime: str, checkpoint=None, kill: tuple[str, int] | None = None):
    splits = tiny_splits(n=128)
    cell = Cell(method=method, arch="lenet300", dataset="tiny", target_sparsity=0.8, seed=0, regime=regime)
    pruner = build_pruner(cell, splits)
    seen = []

    def on_epoch(row):
        seen.append((row["phase"], row["epoch"]))
        if kill and (row["phase"], row["epoch"]) == kill:
            raise Killed

    result = train(pruner, splits, epochs=3, batch_size=32, device=CPU, seed=0, progress=False,
                   on_epoch=on_epoch, train_epochs=2, checkpoint=checkpoint)
    return result, pruner.masks(), seen


@pytest.mark.parametrize("method,regime,kill", [("crbg", "strong", ("search", 2)), ("cs", "weak", ("search", 3)),
                                                ("cts", "weak", ("train", 2)), ("snip", "weak", ("train", 1))])
def test_killed_cell_resumes_to_the_same_result(tmp_path, method, regime, kill):
    full, full_masks, all_epochs = run(method, regime)
    ckpt = tmp_path / "cell.pt"
    with pytest.raises(Killed):
        run(method, regime, ckpt, kill)
    resumed, masks, rerun = run(method, regime, ckpt)
    assert rerun == all_epochs[all_epochs.index(kill):]  # only from the killed epoch on
    assert resumed.val_acc == full.val_acc and resumed.test_acc == full.test_acc
    assert all(torch.equal(masks[k], full_masks[k]) for k in masks)
    assert resumed.curves == full.curves
    assert (resumed.search_epochs, resumed.train_epochs) == (full.search_epochs, full.train_epochs)
