"""CRBG as its thesis describes it: the induce-decision regulariser, PReLU units, the joint regime (weights and
gates trained together), a lambda axis with no target control. The induce-decision gradient is checked against
autograd in `tests/test_methods.py` (the fused-gradient test)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.errors import UserError
from benchmarks.spec import SweepSpec
from benchmarks.phases import train
from benchmarks.zoo import build_model, set_activation
from methods import get_method
from tests.conftest import tiny_splits


def test_lambda_list_is_a_grid_axis_crossed_with_targets():
    spec = SweepSpec(methods=["crbg", "edgepopup"], sparsity=[0.5, 0.9],
                     hparams={"crbg": {"lam": "0.1, 1,10", "target_mode": "none"}})
    crbg = [c for c in spec.cells() if c.method == "crbg"]
    assert sorted((dict(c.hparams)["lam"], c.target_sparsity) for c in crbg) == [
        (0.1, 0.5), (0.1, 0.9), (1.0, 0.5), (1.0, 0.9), (10.0, 0.5), (10.0, 0.9)]
    assert all(dict(c.hparams)["target_mode"] == "none" for c in crbg)
    assert len({c.id for c in crbg}) == 6 and sum(c.method == "edgepopup" for c in spec.cells()) == 2
    yaml_list = SweepSpec(methods=["crbg"], sparsity=[0.5], hparams={"crbg": {"lam": [0.1, 1]}}).cells()
    assert [dict(c.hparams)["lam"] for c in yaml_list] == [0.1, 1.0]
    with pytest.raises(UserError, match="empty value"):
        SweepSpec(methods=["crbg"], hparams={"crbg": {"lam": "0.1,"}})
    with pytest.raises(UserError, match="crbg.lam: expected float"):
        SweepSpec(methods=["crbg"], hparams={"crbg": {"lam": "0.1,x"}})


def test_fixed_lambda_without_target_control_leaves_sparsity_to_lambda():
    """target_mode none: no dual update, no projection; a larger lambda closes more gates."""
    splits, cpu = tiny_splits(n=128), torch.device("cpu")
    sparsity = {}
    for lam in (1e-3, 1e3):
        torch.manual_seed(0)
        hp = get_method("crbg").Hparams(lam=lam, target_mode="none", lr=0.05, lr_ref_steps=0, mu_init=0.7)
        pruner = get_method("crbg")(build_model("lenet300", 10, (1, 28, 28)), 0.5, hparams=hp)
        train(pruner, splits, epochs=4, batch_size=16, device=cpu, seed=0, progress=False)
        assert float(pruner.lam) == pytest.approx(lam, rel=1e-6) and not pruner.exact_target
        sparsity[lam] = pruner.report().sparsity
    assert sparsity[1e3] > sparsity[1e-3] + 0.3, sparsity


def test_prelu_replaces_every_relu_module_and_is_recorded(tmp_path, mnist_data_root):
    model = build_model("lenet300", 10, (1, 28, 28), "prelu")
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert [m.weight.numel() for m in model.modules() if isinstance(m, nn.PReLU)] == [300, 100]  # per unit
    assert sum(isinstance(m, nn.LeakyReLU) for m in build_model("conv2", 10, (1, 28, 28), "leaky").modules()) == 4
    resnet = build_model("resnet20", 10, (3, 32, 32), "prelu")
    assert sum(isinstance(m, nn.PReLU) for m in resnet.modules()) == 19  # stem + 2 per block: every ReLU
    with pytest.raises(UserError, match="net has no nn.ReLU module"):
        set_activation(nn.Sequential(nn.Linear(2, 2), nn.GELU()), "prelu", (2,), "net")
    with pytest.raises(UserError, match="resnet50 shares one ReLU module between layers of widths"):
        build_model("resnet50", 10, (3, 32, 32), "prelu")
    relu, prelu = (SweepSpec(methods=["crbg"], sparsity=[0.5], activation=a).cells()[0] for a in ("relu", "prelu"))
    assert relu.id == SweepSpec(methods=["crbg"], sparsity=[0.5]).cells()[0].id != prelu.id  # relu: old ids kept
    out = tmp_path / "o"
    assert main(["run", "--methods", "crbg", "--granularity", "structured", "--sparsity", "0.5", "--epochs", "1",
                 "--train-size", "300", "--activation", "prelu", "--arch", "lenet300", "--dataset", "mnist",
                 "--data-root", str(mnist_data_root), "--out", str(out), "--no-progress"]) == 0
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row.activation == "prelu" and row.status == "ok"
    # the structured accounting still follows the chain through PReLU: fc2's columns of closed fc1 units count
    layers = pd.read_csv(out / "layers.csv").set_index("layer")
    masks = torch.load(out / "masks" / f"{row.cell}.pt", weights_only=True)
    alive1, alive2 = int(masks["fc1"].any(1).sum()), int(masks["fc2"].any(1).sum())
    assert 0 < alive1 < 300 and 0 < alive2 < 100
    assert layers.loc["fc2", "kept"] == alive2 * alive1 and layers.loc["fc3", "kept"] == 10 * alive2
    assert row.sparsity > row.unit_sparsity * 0.9


@pytest.mark.parametrize("name", ["crbg", "edgepopup", "cs"])
def test_joint_regime_trains_weights_and_mask_together_without_retraining(name):
    torch.manual_seed(0)
    splits, cpu = tiny_splits(n=128), torch.device("cpu")
    pruner = get_method(name)(build_model("lenet300", 10, (1, 28, 28), "prelu"), 0.5, regime="joint")
    assert pruner.weight_init == "kaiming_normal"
    weights = {n: p.detach().clone() for n, p in pruner.model.named_parameters() if "parametrizations" not in n
               or n.endswith("original")}
    masks = [p.detach().clone() for p in pruner.mask_parameters()]
    result = train(pruner, splits, epochs=2, batch_size=16, device=cpu, seed=0, progress=False)
    after = dict(pruner.model.named_parameters())
    assert all(not torch.equal(after[n], w) for n, w in weights.items())  # weights and PReLU slopes trained
    assert all(not torch.equal(p, m) for p, m in zip(pruner.mask_parameters(), masks))
    assert result.train_epochs == 0 and [c["phase"] for c in result.curves] == ["search", "search"]
    assert not any(p.requires_grad for p in pruner.weight_parameters())  # frozen again after the search
    assert abs(pruner.report().sparsity - 0.5) < 0.01


def test_joint_regime_refuses_one_shot_methods():
    with pytest.raises(UserError, match="snip fix their mask before any training"):
        SweepSpec(methods=["crbg", "snip"], regime="joint")
    cells = SweepSpec(methods=["crbg", "dense"], regime="joint").cells()
    assert {c.regime for c in cells} == {"joint"}
    assert {c.method: c.train_epochs for c in cells} == {"crbg": 0, "dense": 10}


def test_lenet300_width_family_for_the_base_size_sweep():
    shapes = {a: [tuple(p.shape) for p in build_model(a, 10, (1, 28, 28)).parameters()]
              for a in ("lenet300x0.25", "lenet300x0.5", "lenet300", "lenet300x2")}
    assert shapes["lenet300x0.25"] == [(75, 784), (25, 75), (10, 25)]
    assert shapes["lenet300x2"] == [(600, 784), (200, 600), (10, 200)]
    assert shapes["lenet300"] == [(300, 784), (100, 300), (10, 100)]


def test_weight_init_auto_follows_each_search_and_regime():
    """auto: the relaxed searches (from an open mask to the target) start from the midscaled signed constant,
    Edge-Popup (the target density from step one) from the scaled one, dense and the one-shot baselines from
    Kaiming normal; every method from Kaiming normal where weights are trained. An explicit init wins."""
    methods = ["crbg", "cs", "cts", "edgepopup", "snip", "dense"]
    strong = {c.method: c.weight_init for c in SweepSpec(methods=methods, sparsity=[0.9]).cells()}
    assert strong == {"crbg": "midscaled_signed_constant", "cs": "midscaled_signed_constant",
                      "cts": "midscaled_signed_constant", "edgepopup": "scaled_signed_constant",
                      "snip": "kaiming_normal", "dense": "kaiming_normal"}
    weak = {c.weight_init for c in SweepSpec(methods=methods, sparsity=[0.9], regime="weak").cells()}
    assert weak == {"kaiming_normal"}
    explicit = SweepSpec(methods=["crbg"], sparsity=[0.9], weight_init="signed_constant").cells()[0]
    assert explicit.weight_init == "signed_constant"
    torch.manual_seed(0)
    pruner = get_method("crbg")(build_model("lenet300", 10, (1, 28, 28)), 0.96)
    w = pruner.layers[0][1].parametrizations.weight.original
    assert torch.allclose(w.abs(), torch.full_like(w, (2 / (784 * 0.04 ** 0.5)) ** 0.5))  # fan_in x sqrt(density)
