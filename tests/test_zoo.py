"""Every zoo model runs one search epoch and one evaluation with every method attached, on synthetic
data of its input size, and its exported masks have the sparsity the row reports."""

from __future__ import annotations

import pytest
import torch

from benchmarks.spec import Cell
from benchmarks.sweep import build_pruner
from benchmarks.trainer import train
from benchmarks.zoo import MODELS
from methods import METHODS
from tests.conftest import tiny_splits

TIMM = ["timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"]
INPUT = {"lenet300": (1, 28, 28), "timm:vit_tiny_patch16_224": (3, 32, 32),
         "timm:swin_tiny_patch4_window7_224": (3, 224, 224)}
FAST = ["lenet300", "conv2", "resnet20", "timm:vit_tiny_patch16_224"]
SEARCH = ["crbg", "edgepopup"]  # every architecture with these in CI; every method on the FAST ones
CASES = [pytest.param(arch, method, gran, marks=[] if arch in FAST or method in SEARCH else [pytest.mark.slow])
         for arch in sorted(MODELS) + TIMM for method in sorted(METHODS) for gran in METHODS[method].granularities]
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
