"""Every zoo model runs one search epoch and one evaluation with every method attached, on synthetic
data of its input size, and its exported masks have the sparsity the row reports."""

from __future__ import annotations

import pytest
import torch

from benchmarks.spec import Cell
from benchmarks.cell import build_pruner
from benchmarks.phases import train
from benchmarks.zoo import MODELS
from methods import METHODS
from tests.conftest import tiny_splits

TIMM = ["timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"]
INPUT = {"lenet300": (1, 28, 28), "timm:vit_tiny_patch16_224": (3, 32, 32),
         "timm:swin_tiny_patch4_window7_224": (3, 224, 224)}
FAST = ["lenet300", "conv2", "resnet20", "timm:vit_tiny_patch16_224"]
SEARCH = ["crbg", "edgepopup"]  # every architecture with these in CI; every method on the FAST ones
CASES = [pytest.param(arch, method, gran, marks=[] if arch in FAST or method in SEARCH else [pytest.mark.slow])
         for arch in sorted(MODELS) + TIMM for method in sorted(METHODS) for gran in METHODS[method].granularities
         if "strong" in METHODS[method].regimes]  # weak-only imp: tests/test_imp.py
CPU = torch.device("cpu")


def make(arch: str, method: str, granularity: str = "unstructured", regime: str = "strong"):
    splits = tiny_splits(INPUT.get(arch, (3, 32, 32)), n=4)
    dense = METHODS[method].dense
    cell = Cell(method=method, arch=arch, dataset="tiny", target_sparsity=0.0 if dense else 0.7, seed=0,
                granularity=granularity, regime=regime, epochs=1, batch_size=4)
    return build_pruner(cell, splits), splits


@pytest.mark.parametrize("arch,method,granularity", CASES)
def test_zoo_model_search_and_eval(arch, method, granularity):
    pruner, splits = make(arch, method, granularity)
    model = pruner.model
    before = [p.detach().clone() for p in pruner.mask_parameters()]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    result = train(pruner, splits, epochs=1, batch_size=4, device=CPU, seed=0, progress=False)
    assert 0.0 <= result.test_acc <= 100.0
    if pruner.searches:
        assert any(not torch.equal(b, p) for b, p in zip(before, pruner.mask_parameters())), "mask did not move"
    if not pruner.dense:  # strong regime: nothing but the method's parameters trains
        for n, p in model.named_parameters():
            if n in frozen:
                assert torch.equal(p, frozen[n]), n
    report = pruner.report()
    masks = pruner.masks()
    assert set(masks) == {name for name, _ in pruner.layers}
    target = 0.0 if pruner.dense else 0.7
    if granularity == "unstructured":
        assert abs(report.sparsity - target) < 0.01
        assert sum(int(m.sum()) for m in masks.values()) == report.kept
    else:
        assert abs(report.unit_sparsity - target) < 0.01
        assert sum(int(m.sum()) for m in masks.values()) >= report.kept  # columns of dead units also removed
    baked = pruner.bake()
    x, _ = splits.train.tensors
    with torch.no_grad():
        baked.eval()
        assert torch.isfinite(baked(x)).all()
    zeros = sum(int((m.weight == 0).sum()) for _, m in pruner.layers)
    assert zeros >= sum(int((~mk).sum()) for mk in masks.values())


@pytest.mark.parametrize("arch", ["lenet300", "resnet20", "timm:vit_tiny_patch16_224"])
@pytest.mark.parametrize("method", ["crbg", "cs", "cts", "snip"])
def test_weak_regime_trains_surviving_weights_only(arch, method):
    pruner, splits = make(arch, method, regime="weak")
    result = train(pruner, splits, epochs=1, batch_size=4, device=CPU, seed=0, progress=False)
    assert result.train_epochs == 1 and result.search_epochs >= (1 if pruner.searches else 0)
    rewind = pruner.rewind_state()
    moved = [k for k, v in pruner.model.state_dict().items() if k in rewind and v.is_floating_point()
             and not torch.equal(v, rewind[k])]
    assert any(k.endswith("parametrizations.weight.original") for k in moved), "weights were not trained"
    assert abs(pruner.report().sparsity - 0.7) < 0.01


def test_conv_nets_learn_with_their_own_weight_training_rate(mnist_data_root, tmp_path):
    """Conv-N has no normalisation: the recipe's lr 0.1 sends it to chance (8.5 % here); its own 0.01
    learns. A dense Conv-2 trained for 2 epochs on 4,096 MNIST images (about 90 % test accuracy)."""
    from dataclasses import replace

    from torch.utils.data import TensorDataset

    from benchmarks.data import load_dataset
    from benchmarks.recipe import DEFAULT_LR, Recipe
    from benchmarks.zoo import build_model
    from methods import get_method

    assert Recipe().for_arch("conv2").lr == 0.01 and Recipe().for_arch("resnet20").lr == DEFAULT_LR
    full = load_dataset("mnist", mnist_data_root)
    head = lambda ds, n: TensorDataset(*(t[:n] for t in ds.tensors))  # noqa: E731
    splits = replace(full, train=head(full.train, 4096), val=head(full.val, 1000), test=head(full.test, 1000))
    torch.manual_seed(0)
    dense = get_method("dense")(build_model("conv2", 10, splits.input_shape), 0.0, regime="weak")
    result = train(dense, splits, 2, 64, CPU, seed=0, progress=False, recipe=Recipe().for_arch("conv2"))
    assert result.test_acc > 80


def test_sweep_rows_train_with_the_architectures_rate(tmp_path, monkeypatch):
    """The optimiser itself gets the architecture's rate (a spy on SGD), and the row records it."""
    import pandas as pd

    from benchmarks.cli import main

    seen = []
    sgd = torch.optim.SGD

    def spy(params, lr, **kw):
        seen.append(lr)
        return sgd(params, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "SGD", spy)
    for arch, lr in (("conv2", 0.01), ("resnet20", 0.1)):
        out = tmp_path / arch
        seen.clear()
        assert main(["run", "--methods", "dense", "--arch", arch, "--dataset", "synthetic", "--epochs", "1",
                     "--batch-size", "128", "--no-progress", "--out", str(out)]) == 0
        assert seen == [lr]
        assert pd.read_csv(out / "runs.csv").train_lr.tolist() == [lr]
