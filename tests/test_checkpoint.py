"""A cell killed mid-run resumes from its last per-epoch checkpoint and ends exactly as an uninterrupted
run (same masks, same accuracy, same curves): in the search phase and in weak-regime training. Sanity
checks resume from their parent's search the same way."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.spec import Cell
from benchmarks.paths import search_snapshot
from benchmarks.cell import build_pruner, run_cell
from benchmarks.phases import train
from tests.conftest import tiny_splits

CPU = torch.device("cpu")


class Killed(Exception):
    pass


def run(method: str, regime: str, checkpoint=None, kill: tuple[str, int] | None = None, hparams=()):
    splits = tiny_splits(n=128)
    cell = Cell(method=method, arch="lenet300", dataset="tiny", target_sparsity=0.8, seed=0, regime=regime,
                hparams=hparams)
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
                                                ("cts", "weak", ("pretrain", 2)),  # dense pre-training (2 epochs)
                                                ("crbg", "joint", ("search", 2)),  # both optimisers restored
                                                ("cts", "weak", ("train", 2)), ("snip", "weak", ("train", 2)),
                                                ("imp", "weak", ("search", 6)),  # at a round's end: prune, rewind pending
                                                ("imp", "weak", ("search", 7))])  # each after a checkpoint was written
def test_killed_cell_resumes_to_the_same_result(tmp_path, method, regime, kill):
    hp = (("rewind_epochs", 2),) if kill[0] == "pretrain" else ()
    full, full_masks, all_epochs = run(method, regime, hparams=hp)
    ckpt = tmp_path / "cell.pt"
    with pytest.raises(Killed):
        run(method, regime, ckpt, kill, hparams=hp)
    assert torch.load(ckpt, weights_only=False)["phase"] == kill[0]  # the killed phase had saved its checkpoint
    resumed, masks, rerun = run(method, regime, ckpt, hparams=hp)
    assert rerun == all_epochs[all_epochs.index(kill):]  # only from the killed epoch on
    assert resumed.val_acc == full.val_acc and resumed.test_acc == full.test_acc
    assert all(torch.equal(masks[k], full_masks[k]) for k in masks)
    assert resumed.curves == full.curves
    assert (resumed.search_epochs, resumed.train_epochs) == (full.search_epochs, full.train_epochs)


@pytest.mark.parametrize("method,regime", [("crbg", "strong"), ("cts", "weak")])
def test_sanity_checks_resume_from_their_parents_search_with_the_same_result(tmp_path, method, regime):
    """A sanity check resumes from the end-of-search state its parent published instead of searching
    again, and ends exactly as it does after its own search (CTS weak: pre-training, search, training)."""
    splits = tiny_splits(n=128)
    parent = Cell(method=method, arch="lenet300", dataset="tiny", target_sparsity=0.8, seed=0, regime=regime,
                  epochs=2, batch_size=32, train_epochs=1 if regime == "weak" else 0)
    ckpts = tmp_path / "checkpoints"
    assert run_cell(parent, splits, CPU, False, ckpts, share_search=True).run["search_from"] == ""
    assert search_snapshot(ckpts, parent.id).exists()
    for variant in ("random", "shuffle", "reinit"):
        cell = dataclasses.replace(parent, sanity=variant)
        shared = run_cell(cell, splits, CPU, False, ckpts)
        own = run_cell(cell, splits, CPU, False, None)
        assert shared.run["status"] == own.run["status"] == "ok"
        assert (shared.run["search_from"], own.run["search_from"]) == (parent.id, "")
        for key in ("val_acc", "test_acc", "sparsity", "search_epochs", "train_epochs"):
            assert shared.run[key] == own.run[key], key
        assert shared.curves == own.curves
        assert all(torch.equal(shared.masks[k], own.masks[k]) for k in own.masks)


def test_a_cell_runs_the_phases_its_method_lists(monkeypatch):
    """The trainer runs `Pruner.phases()` as given, in that order, and nothing else: a method that drops the
    BatchNorm recalibration, searches before it prepares and ablates before it finalizes gets exactly that, and an unknown
    phase name is refused before anything runs."""
    from benchmarks import phases

    calls = []
    for name, fn in list(phases.PHASE_RUNNERS.items()):
        monkeypatch.setitem(phases.PHASE_RUNNERS, name, lambda run, plan, name=name, fn=fn: (calls.append(name), fn(run, plan)))
    splits = tiny_splits(n=64)
    cell = Cell(method="crbg", arch="lenet300", dataset="tiny", target_sparsity=0.8, seed=0)
    pruner = build_pruner(cell, splits)
    assert pruner.phases() == ("prepare", "search", "finalize", "ablate", "recalibrate")
    order = ("search", "prepare", "ablate", "finalize")  # not the canonical order: the method's is followed
    monkeypatch.setattr(type(pruner), "phases", lambda self: order)
    train(pruner, splits, epochs=1, batch_size=32, device=CPU, seed=0, progress=False)
    assert calls == list(order)
    weak = build_pruner(dataclasses.replace(cell, method="cts", regime="weak"), splits)
    assert weak.phases() == ("pretrain", "prepare", "search", "finalize", "ablate", "rewind", "train")
    monkeypatch.setattr(type(pruner), "phases", lambda self: ("prepare", "prune"))
    with pytest.raises(ValueError, match="unknown phase"):
        train(pruner, splits, epochs=1, batch_size=32, device=CPU, seed=0, progress=False)
    assert calls == list(order)


def test_batchnorm_is_recalibrated_under_the_final_mask_in_the_strong_regime_only():
    """Strong regime: BatchNorm statistics are recomputed under the final mask (`bn_recalibrated`), so a channel
    the structured ticket removed has running mean and variance exactly 0 (it was open, with other statistics,
    during the search). Weak regime: the weights are trained under the final mask, nothing to recalibrate."""
    splits = tiny_splits(shape=(3, 16, 16), n=64)
    cell = Cell(method="crbg", arch="resnet20", dataset="tiny", target_sparsity=0.5, seed=0,
                granularity="structured")
    pruner = build_pruner(cell, splits)
    result = train(pruner, splits, epochs=1, batch_size=32, device=CPU, seed=0, progress=False)
    assert result.bn_recalibrated
    conv, bn = pruner.model.conv1, pruner.model.bn1
    dead = ~pruner.masks()["conv1"].flatten(1).any(dim=1)
    assert dead.any() and (~dead).any()
    assert torch.equal(bn.running_mean[dead], torch.zeros(int(dead.sum())))
    assert torch.equal(bn.running_var[dead], torch.zeros(int(dead.sum())))
    assert (bn.running_var[~dead] > 0).all() and conv.weight.shape[0] == dead.numel()
    weak = build_pruner(dataclasses.replace(cell, regime="weak", granularity="unstructured"), splits)
    assert not train(weak, splits, epochs=1, batch_size=32, device=CPU, seed=0, progress=False,
                     train_epochs=1).bn_recalibrated
