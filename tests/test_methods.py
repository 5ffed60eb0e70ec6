"""The Pruner interface, CRBG and Edge-Popup on small models."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmarks.zoo import build_model
from methods import METHODS, get_method
from methods.mask import Mask
from methods.sparsity import kth_largest
from methods.edgepopup import BandedThreshold
from methods.init import init_weight


def lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet300", 10, (1, 28, 28))


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


SEARCH_DONE = 4 / 10  # the fused-gradient test's point in the search: after step 3 (from 0) of 10


def spec_penalty(pruner, penalty) -> torch.Tensor:
    """The penalty as the specs write it, differentiable by autograd (the methods add its gradient
    analytically in their masks' `mask_grad`)."""
    if pruner.name == "crbg":
        gates, s = [m.mu for m in pruner.gated()], pruner.hp.sigma
        n = sum(g.numel() for g in gates)
        sparse = pruner.lam * sum(normal_cdf(mu / s).sum() for mu in gates) / n
        undecided = sum((normal_cdf((1 - mu) / s) - normal_cdf(-mu / s)).sum() for mu in gates) / n  # P(0 < z < 1)
        return sparse + pruner.decide * SEARCH_DONE**2 * undecided  # the ramp t^2, t the fraction of the search
    if pruner.name == "cs":
        masks = pruner.gated()
        soft = [torch.sigmoid(m.beta * m.s) for m in masks]
        decide = sum(m.decide_scale * (q * (1 - q)).sum() for m, q in zip(masks, soft))  # strong regime only
        return pruner.control.lam * sum(q.sum() for q in soft) / sum(m.s.numel() for m in masks) + decide
    return penalty()


SEARCHING = sorted(name for name, cls in METHODS.items() if cls.searches)


def target(name: str) -> float:
    return 0.0 if METHODS[name].dense else 0.8


@pytest.mark.parametrize("name", sorted(METHODS))
def test_attach_freezes_model_and_exposes_only_method_params(name):
    model = lenet()
    pruner = get_method(name)(model, target(name), regime=METHODS[name].regimes[0])
    for _, module in pruner.layers:
        assert parametrize.is_parametrized(module, "weight")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if pruner.search_trains_weights:  # imp: its search trains the model's own weights, from `optimizer` on
        assert not trainable and pruner.parameters() == pruner.weight_parameters() and not pruner.mask_parameters()
        return
    assert trainable == {id(p) for p in pruner.parameters()}
    # one score/gate tensor per layer, first and last included; one-shot masks have none
    assert len(pruner.parameters()) == (3 if name in SEARCHING else 0)


def test_exclude_by_name_pattern():
    pruner = get_method("edgepopup")(lenet(), 0.5, exclude=("fc1",))
    assert [n for n, _ in pruner.layers] == ["fc2", "fc3"]  # the classic nets' layers have names


@pytest.mark.parametrize("regime,init,std", [("weak", "auto", math.sqrt(2 / 100)),
                                             ("strong", "signed_constant", math.sqrt(2 / 100)),
                                             ("strong", "scaled_signed_constant", math.sqrt(2 / 100))])
def test_excluded_layers_get_the_requested_init_dense(regime, init, std):
    """Issue 28, point 14: an excluded layer is drawn with the cell's --weight-init (at density 1: it is
    dense), not left at PyTorch's default (fc3 std 0.055 where Kaiming-normal gives sqrt(2/100) = 0.141);
    the masked layers' draws are those of the same cell without the exclusion."""
    torch.manual_seed(0)
    excluded = get_method("imp" if regime == "weak" else "edgepopup")(lenet(), 0.9, exclude=("fc3",),
                                                                     weight_init=init, regime=regime)
    torch.manual_seed(0)
    plain = get_method("imp" if regime == "weak" else "edgepopup")(lenet(), 0.9, weight_init=init, regime=regime)
    fc3 = excluded.model.fc3.weight
    assert not parametrize.is_parametrized(excluded.model.fc3)
    assert float(fc3.std()) == pytest.approx(std, rel=0.1)
    if "signed_constant" in init:
        assert torch.allclose(fc3.abs(), torch.full_like(fc3, std))  # dense: fan_in, not fan_in x density
    for name in ("fc1", "fc2"):
        assert torch.equal(getattr(excluded.model, name).parametrizations.weight.original,
                           getattr(plain.model, name).parametrizations.weight.original)


def test_banded_threshold_is_exact_along_a_random_walk():
    """The incremental k-th value equals a full selection every step, also after jumps that miss the band."""
    torch.manual_seed(0)
    scores = torch.randn(20_000).abs()
    select = BandedThreshold()
    for step in range(60):
        jump = 0.5 if step % 15 == 14 else 0.01
        scores = (scores + jump * torch.randn_like(scores)).abs()
        keep = 2_000 if step < 40 else 17_000
        t = select(scores, keep)
        assert torch.equal(t, kth_largest(scores, keep))
        assert int((scores >= t).sum()) == keep
        assert bool((scores >= t)[scores.argsort(descending=True)[:keep]].all())


def test_edgepopup_layerwise_density_and_straight_through_gradient():
    model = lenet()
    pruner = get_method("edgepopup")(model, 0.9)
    model.train()
    model(torch.randn(8, 1, 28, 28)).sum().backward()
    for name, _, mask in pruner.mask_modules():
        assert mask.score.grad is not None and mask.score.grad.abs().sum() > 0
        # pruned edges get gradient too (straight-through): not only the kept ones
        assert (mask.score.grad[~mask.binary_mask()] != 0).any()
    for layer in pruner.report().layers:
        assert layer.kept == round(0.1 * layer.weights)


def test_crbg_gate_relaxation_penalty_and_binary_eval():
    model = lenet()
    pruner = get_method("crbg")(model, 0.8)
    mask = next(pruner.mask_modules())[2]
    z = mask.search_mask()
    assert z.min() >= 0 and z.max() <= 1 and ((z > 0) & (z < 1)).any()
    gates = [m.mu for _, _, m in pruner.mask_modules()]
    n = sum(g.numel() for g in gates)
    expected = pruner.lam * sum(normal_cdf(g / 0.5).sum() for g in gates) / n
    assert torch.allclose(pruner.penalty(), expected)
    # eval uses the binary mask 1[mu > threshold], never the fractional gates
    model.eval()
    module = pruner.layers[0][1]
    w = module.parametrizations.weight.original
    assert torch.equal(module.weight, w * (mask.mu > 0.5).float())


def test_crbg_gradient_is_reparameterised_inside_unit_interval():
    pruner = get_method("crbg")(lenet(), 0.8)
    mask = next(pruner.mask_modules())[2]
    with torch.no_grad():
        mask.mu.fill_(0.5)
        mask.mu[0, :10] = -5.0  # always closed: clamp gives zero gradient
    w = next(pruner.mask_modules())[1].parametrizations.weight.original
    torch.manual_seed(3)
    masked = mask.search_forward(w)  # the fused node training uses: dL/dmu = sum of dL/dW' * W, through the clamp
    masked.backward(torch.ones_like(w) / w)  # dL/dW' = 1 / W: each entry's dL/dz is exactly 1
    torch.manual_seed(3)
    z = mask.search_mask()  # the same draw
    assert torch.allclose(masked, w * z)
    assert (mask.mu.grad[0, :10] == 0).all()
    inside = (z > 0) & (z < 1)
    assert torch.allclose(mask.mu.grad, inside.float())  # dz/dmu = 1 inside (0, 1), 0 outside
    assert abs(inside[1:].float().mean().item() - (2 * normal_cdf(torch.tensor(1.0)).item() - 1)) < 0.01


@pytest.mark.parametrize("target", [0.5, 0.77, 0.9])
def test_crbg_exact_projection_hits_target(target):
    pruner = get_method("crbg")(lenet(), target)
    pruner.finalize()
    assert abs(pruner.report().sparsity - target) < 1e-4


def test_crbg_dual_ascent_raises_lambda_when_too_dense():
    pruner = get_method("crbg")(lenet(), 0.9)
    pruner.optimizer(100)
    with torch.no_grad():
        for _, _, m in pruner.mask_modules():
            m.mu.fill_(1.0)  # all gates open: density 1 > target density
    lam0 = pruner.lam
    for step in range(60, 70):
        pruner.on_step(step)
    assert pruner.lam > lam0 * 1.05


def test_crbg_structured_counts_units_and_dead_columns():
    model = lenet()
    pruner = get_method("crbg")(model, 0.5, granularity="structured")
    masks = [m for _, _, m in pruner.mask_modules()]
    assert masks[0].mu.shape == (300,) and masks[1].mu.shape == (100,)
    assert not list(masks[2].parameters())  # the classifier's output units (classes) are never gated
    pruner.finalize()
    rep = pruner.report()
    assert abs(rep.unit_sparsity - 0.5) < 0.01
    l1, l2, l3 = rep.layers
    alive1 = int(masks[0].final.sum())
    alive2 = int(masks[1].final.sum())
    assert l1.kept == alive1 * 784
    assert l2.kept == alive2 * alive1  # rows of removed units and columns fed by removed units
    assert l3.kept == 10 * alive2
    assert rep.sparsity > rep.unit_sparsity  # removing a unit removes its row and the next layer's column


def test_structured_rejected_where_unsupported():
    with pytest.raises(ValueError, match="granularity"):
        get_method("edgepopup")(lenet(), 0.5, granularity="structured")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bake_gives_plain_model_with_same_function(name):
    model = lenet()
    pruner = get_method(name)(model, target(name), regime=METHODS[name].regimes[0])
    pruner.finalize()
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    before = model(x)
    masks = pruner.masks()
    baked = pruner.bake()
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    assert torch.allclose(baked(x), before, atol=1e-6)
    for name_, module in pruner.layers:
        assert torch.equal(module.weight != 0, masks[name_])


def test_weight_inits():
    w = torch.empty(50, 200)
    init_weight(w, "signed_constant")
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / 200)))
    assert 0.4 < (w > 0).float().mean() < 0.6
    init_weight(w, "scaled_signed_constant", density=0.25)
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / (200 * 0.25))))
    init_weight(w, "uniform")
    assert w.abs().max() <= math.sqrt(6 / 200) and w.abs().max() > 0.9 * math.sqrt(6 / 200)
    init_weight(w, "kaiming_normal")
    assert abs(w.std().item() - math.sqrt(2 / 200)) < 0.01
    with pytest.raises(ValueError, match="unknown weight init"):
        init_weight(w, "xavier")


def test_sparsity_out_of_range():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        get_method("crbg")(lenet(), 1.0)


FUSED = [("crbg", "unstructured", "strong", {}), ("crbg", "structured", "strong", {}),
         ("crbg", "unstructured", "strong", {"regularizer": "induce-decision", "decide": 50.0}),
         ("cs", "unstructured", "strong", {}), ("cs", "unstructured", "weak", {}), ("cts", "unstructured", "strong", {}),
         ("edgepopup", "unstructured", "strong", {})]


@pytest.mark.parametrize("layout", ["default", "channels_last+bf16"])
@pytest.mark.parametrize("name,granularity,regime,hp", FUSED)
def test_fused_masked_weight_matches_autograd_on_the_reference_mask(name, granularity, regime, hp, layout,
                                                                    monkeypatch):
    """Each method's search loss (one-node `search_forward`, penalty gradient added in `mask_grad`) gives
    the loss and gradients (mask parameters and, where trained, weights) that autograd gives on
    ``weight * search_mask()`` plus the spec's penalty with the same random draw; also with the CUDA
    path's channels_last weights and bf16 autocast."""
    torch.manual_seed(0)
    model = build_model("conv2", 10, (3, 32, 32))
    pruner = get_method(name)(model, 0.8, granularity, get_method(name).Hparams(**hp), regime=regime)
    pruner.optimizer(10)
    pruner.on_step(3)  # CS: a temperature other than 1; CRBG induce-decision: its weight at t = SEARCH_DONE
    if hasattr(pruner, "control"):  # CRBG, CS: a penalty gradient as large as the task's
        pruner.control.log_lam.fill_(5.0)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    amp = layout != "default"
    if amp:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    trained = [p for p in model.parameters() if p.requires_grad]

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = pruner.loss(model, x, y, nn.functional.cross_entropy)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trained]

    loss, fused = grads()
    for mask in pruner.gated():
        monkeypatch.setattr(mask, "search_forward", partial(Mask.search_forward, mask))
    monkeypatch.setattr(pruner, "penalty", partial(spec_penalty, pruner, pruner.penalty))
    ref_loss, reference = grads()
    assert torch.allclose(loss, ref_loss, rtol=1e-6)
    assert len(fused) == len(reference) > 0
    for f, r in zip(fused, reference):
        assert torch.allclose(f, r, rtol=1e-4, atol=1e-7)
    assert any(f.abs().sum() > 0 for f in fused)


@pytest.mark.parametrize("name", ["crbg", "cs"])
def test_penalty_gradient_survives_torch_compile(name):
    """Under torch.compile (`--compile`) the penalty gradient that `penalty()` arms and the masks' backward
    adds still arrives: how the gradient changes with lambda is the spec penalty's gradient, by autograd."""
    torch.manual_seed(0)
    model = build_model("lenet300", 10, (1, 28, 28))
    pruner = get_method(name)(model, 0.8)
    pruner.optimizer(10)
    params = pruner.mask_parameters()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    compiled = torch.compile(model)
    model.train()

    def grads(log_lam: float, loss) -> list[torch.Tensor]:
        pruner.control.log_lam.fill_(log_lam)
        torch.manual_seed(5)  # the same gate noise in both runs: the task part cancels
        model.zero_grad(set_to_none=True)
        loss().backward()
        return [p.grad.clone() for p in params]

    def search_loss():
        return pruner.loss(compiled, x, y, nn.functional.cross_entropy)

    def spec_loss():
        return spec_penalty(pruner, None)

    change = [hi - lo for hi, lo in zip(grads(4.0, search_loss), grads(-12.0, search_loss))]
    expected = [hi - lo for hi, lo in zip(grads(4.0, spec_loss), grads(-12.0, spec_loss))]
    assert all(e.abs().max() > 0 for e in expected)
    for c, e in zip(change, expected):
        assert torch.allclose(c, e, rtol=1e-3, atol=1e-3 * float(e.abs().max()))


def test_frozen_mask_cast_follows_every_change_of_the_final_mask():
    pruner = get_method("magnitude")(lenet(), 0.8)
    module = pruner.layers[0][1]
    mask = module.parametrizations.weight[0]
    w = module.parametrizations.weight.original
    assert module.weight is w  # the open mask (all ones) costs no product
    pruner.prepare(None)
    assert torch.equal(module.weight, w * mask.final.float())
    with torch.no_grad():  # written in place, as load_state_dict does
        mask.final.fill_(False)
    assert not module.weight.any()
    mask.freeze(torch.ones_like(mask.final))
    assert module.weight is w


def test_evaluation_builds_each_masked_weight_once(monkeypatch):
    """`evaluate` caches the parametrizations: one binary mask per layer for the whole split (Edge-Popup's
    is a selection), and the same accuracy as building it per batch."""
    from benchmarks.trainer import evaluate
    from tests.conftest import tiny_splits

    torch.manual_seed(0)
    pruner = get_method("edgepopup")(build_model("lenet300", 10, (1, 28, 28)), 0.9)
    splits, cpu = tiny_splits(n=64), torch.device("cpu")
    built = []
    real = type(pruner.gated()[0]).binary_mask
    monkeypatch.setattr(type(pruner.gated()[0]), "binary_mask", lambda self: built.append(self) or real(self))
    acc = evaluate(pruner.model, splits, "val", 4, cpu)  # 4 batches of 16
    assert len(built) == len(pruner.gated())
    pruner.model.eval()
    with torch.no_grad():
        per_batch = sum(int((pruner.model(x[None]).argmax(1) == y).sum()) for x, y in zip(*splits.val.tensors))
    assert acc == 100.0 * per_batch / 64


def test_cs_decision_penalty_ramps_in_the_strong_regime_only():
    """The decision penalty's weight grows as t^2 over the round to `decide` / n in the strong regime and is
    0 in the weak one (the paper's protocol); its gradient is checked against autograd in the fused test."""
    strong, weak = (get_method("cs")(lenet(), 0.5, regime=r) for r in ("strong", "weak"))
    for p in (strong, weak):
        p.optimizer(100)
    n = sum(m.s.numel() for m in strong.gated())
    for step, t in ((0, 0.01), (49, 0.5), (99, 1.0)):
        strong.on_step(step), weak.on_step(step)
        assert strong.gated()[0].decide_scale == pytest.approx(strong.hp.decide * t ** 2 / n)
        assert weak.gated()[0].decide_scale == 0.0
    assert strong.record()["decision_penalty"] == strong.hp.decide and weak.record()["decision_penalty"] == 0.0


def test_cs_density_floor_moves_the_threshold_only_below_the_target():
    """With the loss closing more entries than the target allows, the sigmoid's centre and the binary
    threshold follow the target quantile of s down, so the mask searched is the one the projection keeps;
    above the target the centre stays at 0 (plain CS); `floor=False` and target_mode none leave it at 0."""
    def pruner(**hp):
        p = get_method("cs")(lenet(), 0.5, regime="strong", hparams=get_method("cs").Hparams(**hp))
        p.optimizer(100)
        return p

    p = pruner()
    gen = torch.Generator().manual_seed(1)
    for m in p.gated():  # density 0.25 at threshold 0
        m.s.data = torch.randn(m.s.shape, generator=gen) - 0.674
    p.on_step(0)
    centre = p.gated()[0].centre
    assert float(centre) < 0 and all(m.centre is centre for m in p.gated())
    assert float(p.density()) == pytest.approx(0.5, abs=0.01)
    m = p.gated()[0]
    assert torch.equal(m.binary_mask(), m.s > centre)
    assert torch.sigmoid(m.beta * (m.s - centre)).sub(m.search_mask()).abs().max() < 1e-6
    for m in p.gated():  # density 0.75: the penalty's side, the floor does nothing
        m.s.data = torch.randn(m.s.shape, generator=gen) + 0.674
    p.on_step(1)
    assert float(p.gated()[0].centre) == 0.0
    for hp in ({"floor": False}, {"target_mode": "none"}):
        q = pruner(**hp)
        for m in q.gated():
            m.s.data = torch.randn(m.s.shape, generator=gen) - 0.674
        q.on_step(0)
        assert float(q.gated()[0].centre) == 0.0 and float(q.density()) < 0.3
    assert p.record()["density_floor"] and not pruner(floor=False).record()["density_floor"]


@pytest.mark.parametrize("name", ["crbg", "cs"])
def test_penalty_gradient_is_consumed_exactly_once(name):
    """`penalty()` arms a gradient on every mask; the backward consumes (and disarms) it; a step whose backward
    missed it fails in `before_step` instead of silently losing the penalty."""
    pruner = get_method(name)(lenet(), 0.8)
    pruner.optimizer(10)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    pruner.loss(pruner.model, x, y, nn.functional.cross_entropy).backward()
    pruner.before_step()  # consumed: no error
    assert all(m.penalty_scale is None for m in pruner.gated())
    pruner.penalty()  # armed, and no backward follows
    with pytest.raises(RuntimeError, match="not consumed"):
        pruner.before_step()
