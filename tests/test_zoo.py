"""Every zoo model runs one search step and one evaluation with every method attached, on synthetic
data of its input size, and its exported masks have the sparsity the row reports."""

from __future__ import annotations

import pytest
import torch

from benchmarks.sweep import build_pruner
from benchmarks.spec import Cell
from benchmarks.trainer import evaluate
from benchmarks.zoo import MODELS
from methods import METHODS
from tests.conftest import tiny_splits

TIMM = ["timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"]
INPUT = {"lenet300": (1, 28, 28), "timm:vit_tiny_patch16_224": (3, 32, 32),
         "timm:swin_tiny_patch4_window7_224": (3, 224, 224)}
CASES = [(arch, method, gran) for arch in sorted(MODELS) + TIMM for method in sorted(METHODS)
         for gran in METHODS[method].granularities]


@pytest.mark.parametrize("arch,method,granularity", CASES)
def test_zoo_model_search_step_and_eval(arch, method, granularity):
    splits = tiny_splits(INPUT.get(arch, (3, 32, 32)), n=4)
    cell = Cell(method=method, arch=arch, dataset="tiny", target_sparsity=0.7, seed=0, granularity=granularity,
                epochs=1, batch_size=4)
    pruner = build_pruner(cell, splits)
    model = pruner.model
    opt, _ = pruner.optimizer(1)
    before = [p.detach().clone() for p in pruner.parameters()]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.train()
    x, y = splits.train.tensors
    loss = torch.nn.functional.cross_entropy(model(x), y) + pruner.penalty()
    loss.backward()
    opt.step()
    pruner.on_step(0)
    assert any(not torch.equal(b, p) for b, p in zip(before, pruner.parameters())), "method params did not move"
    for n, p in model.named_parameters():  # strong regime: nothing but the method's parameters trains
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    pruner.finalize()
    acc = evaluate(model, splits, "test", 4, torch.device("cpu"))
    assert 0.0 <= acc <= 100.0
    report = pruner.report()
    masks = pruner.masks()
    assert set(masks) == {name for name, _ in pruner.layers}
    if granularity == "unstructured":
        assert abs(report.sparsity - 0.7) < 0.01
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept == report.kept
    else:
        assert abs(report.unit_sparsity - 0.7) < 0.01
        assert sum(int(m.sum()) for m in masks.values()) >= report.kept  # columns of dead units also removed
    baked = pruner.bake()
    with torch.no_grad():
        baked.eval()
        assert torch.isfinite(baked(x)).all()
    zeros = sum(int((m.weight == 0).sum()) for _, m in pruner.layers)
    assert zeros >= sum(int((~mk).sum()) for mk in masks.values())
