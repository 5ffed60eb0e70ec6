"""Continuous Sparsification, Concrete Ticket Search and the pruning-at-initialisation baselines."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmarks.errors import UserError
from benchmarks.zoo import build_model
from methods import get_method
from methods.contract import SearchContext
from methods.sanity import ablate


def lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet300", 10, (1, 28, 28))


def context(n_batches: int = 2, batch: int = 16, seed: int = 0) -> SearchContext:
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n_batches)]
    return SearchContext(batches=lambda: iter(data),
                         criterion=nn.CrossEntropyLoss())


def weights(pruner):
    return [m.parametrizations.weight.original.detach() for _, m in pruner.layers]


# -- Continuous Sparsification ----------------------------------------------------------------------
def test_cs_soft_mask_temperature_schedule_and_round_reset():
    pruner = get_method("cs")(lenet(), 0.8, hparams=get_method("cs").Hparams(rounds=2, beta_final=100.0, s0=0.0))
    pruner.optimizer(100)
    assert pruner.steps_per_round == 50
    assert pruner.beta(0) == 1.0 and math.isclose(pruner.beta(25), 10.0) and pruner.beta(50) == 1.0
    mask = pruner.gated()[0]
    with torch.no_grad():
        mask.s.uniform_(-1, 1)
    mask.beta = 3.0
    assert torch.allclose(mask.search_mask(), torch.sigmoid(3.0 * mask.s))
    assert torch.equal(mask.binary_mask(), mask.s > 0)
    pruner.on_step(49)  # the first round ends: s <- min(s, s0), temperature back to 1
    assert mask.s.max() <= 0.0 and mask.beta == 1.0
    n = sum(m.s.numel() for m in pruner.gated())
    expected = pruner.control.lam * sum(torch.sigmoid(m.beta * m.s).sum() for m in pruner.gated()) / n
    assert torch.allclose(pruner.penalty(), expected)


def test_cs_mask_optimiser_is_adam_in_the_strong_regime_sgd_where_weights_train():
    """auto: Adam on the logits alone in the strong regime (its rate per search, as SGD's), the paper's SGD where
    weights train with them; Adam with trained weights is refused before a sweep runs."""
    from benchmarks.spec import SweepSpec
    from methods.schedules import per_search_lr

    strong, weak = (get_method("cs")(lenet(), 0.8, regime=r) for r in ("strong", "weak"))
    opt, _ = strong.optimizer(100)
    assert isinstance(opt, torch.optim.Adam) and strong.record()["mask_optimizer"] == "adam"
    assert opt.param_groups[0]["lr"] == pytest.approx(per_search_lr(strong.hp.adam_lr, strong.hp.lr_ref_steps, 100))
    opt, _ = weak.optimizer(100)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 2 and weak.record()["mask_optimizer"] == "sgd"
    with pytest.raises(UserError, match="cs.optimizer=adam trains the mask logits alone; the weak regime"):
        SweepSpec(methods=["cs"], regime="weak", hparams={"cs": {"optimizer": "adam"}})
    plain = get_method("cs")(lenet(), 0.8, hparams=get_method("cs").Hparams(optimizer="sgd", momentum=0.0))
    assert isinstance(plain.optimizer(10)[0], torch.optim.SGD)  # no momentum: plain SGD, not a Nesterov error


def test_proportional_projection_trims_each_layer_by_its_share():
    """A search 0.5 % over its target density whose smallest kept scores all sit in the output layer: the global
    projection strips that layer, the proportional one (CS's default) takes the same share from every layer."""
    from methods.sparsity import keep_proportional

    def ended_over_target(projection: str) -> tuple[list[int], list[int]]:
        p = get_method("cs")(lenet(), 0.8, hparams=get_method("cs").Hparams(projection=projection))
        gen = torch.Generator().manual_seed(0)
        for m in p.gated():  # density 0.205 at threshold 0, the output layer's kept logits nearest it
            s = torch.randn(m.s.shape, generator=gen)
            s -= torch.quantile(s.flatten()[:100_000], 0.795)
            m.s.data = torch.where(s > 0, s * 1e-3, s) if m.s.numel() == 1000 else s
        before = [int(m.binary_mask().sum()) for m in p.gated()]
        p.finalize()
        return before, [int(m.current_mask().sum()) for m in p.gated()]

    total = sum(m.s.numel() for m in get_method("cs")(lenet(), 0.8).gated())
    for projection in ("global", "proportional"):
        before, after = ended_over_target(projection)
        assert sum(after) == round(0.2 * total)
        cut = [1 - a / b for a, b in zip(after, before)]
        if projection == "global":
            assert cut[-1] > 0.1 and max(cut[:-1]) < 0.03, cut
        else:
            assert max(cut) - min(cut) < 0.01 and max(cut) < 0.04, cut
    scores = [torch.randn(100), torch.randn(10), torch.randn(5)]  # topped up where a layer is full; exact totals
    for kept, density in (([50, 5, 2], 0.4), ([100, 10, 0], 0.9), ([0, 0, 0], 0.3), ([100, 10, 5], 0.99)):
        keep = keep_proportional(scores, kept, density)
        assert sum(int(k.sum()) for k in keep) == round(density * 115)
        assert all(int(k.sum()) <= s.numel() for k, s in zip(keep, scores))


def test_cs_density_ceiling_holds_the_target_from_the_ramps_end():
    """Above the target the centre stays at 0 while the density ramp runs; from its end (`ramp` of the search)
    the centre is the target quantile on both sides, so the binary mask holds the target density exactly.
    `ceiling=False` keeps plain CS above the target (the mask frozen short of 0.99 was cut 4 % by the projection)."""
    def pruner(**hp):
        p = get_method("cs")(lenet(), 0.8, hparams=get_method("cs").Hparams(**hp))
        p.optimizer(100)
        gen = torch.Generator().manual_seed(2)
        for m in p.gated():  # density 0.3 at threshold 0, above the 0.2 target
            m.s.data = torch.randn(m.s.shape, generator=gen) + 0.524
        return p

    p, plain = pruner(), pruner(ceiling=False)
    for q in (p, plain):
        q.on_step(10)  # during the ramp (it ends at step 50): plain CS above the target
        assert float(q.gated()[0].centre) == 0.0
    p.on_step(60), plain.on_step(60)
    assert float(p.gated()[0].centre) > 0 and float(p.density()) == pytest.approx(0.2, abs=1e-4)
    assert float(plain.gated()[0].centre) == 0.0 and float(plain.density()) > 0.25
    assert p.record()["density_ceiling"] and not plain.record()["density_ceiling"]


def test_cs_strong_freezes_weights_weak_trains_them_and_rewinds():
    strong = get_method("cs")(lenet(), 0.8)
    assert {id(p) for p in strong.parameters()} == {id(p) for p in strong.mask_parameters()}
    weak = get_method("cs")(lenet(), 0.8, regime="weak")
    weak.optimizer(10)
    assert set(map(id, weak.weight_parameters())) <= set(map(id, weak.parameters()))
    init = {k: v.clone() for k, v in weak.rewind_state().items()}
    with torch.no_grad():
        for w in weak.weight_parameters():
            w.add_(1.0)
    weak.on_epoch(1)
    assert all(torch.equal(init[k], v) for k, v in weak.rewind_state().items())  # not yet the rewind epoch
    weak.on_epoch(2)
    assert not torch.equal(init["fc1.parametrizations.weight.original"],
                           weak.rewind_state()["fc1.parametrizations.weight.original"])


# -- Concrete Ticket Search -----------------------------------------------------------------------
def test_cts_gate_is_binary_concrete_with_logit_density_init():
    pruner = get_method("cts")(lenet(), 0.8)
    mask = pruner.gated()[0]
    assert torch.allclose(mask.s, torch.full_like(mask.s, math.log(0.2 / 0.8)))
    with torch.no_grad():
        mask.s.fill_(0.7)
    g = mask.search_mask()
    assert ((g > 0) & (g <= 1)).all() and (g < 0.999).float().mean() > 0.9
    p_open = (g > 0.5).float().mean().item()
    assert abs(p_open - torch.sigmoid(torch.tensor(0.7 * 2 / 3)).item()) < 0.01  # P(g > 1/2) = sigmoid(tau s)
    g.sum().backward()
    assert (mask.s.grad >= 0).all() and (mask.s.grad > 0).float().mean() > 0.9  # through the sample


def test_cts_gradient_balancing_is_one_sided():
    from methods.schedules import REFERENCE_STEPS

    pruner = get_method("cts")(lenet(), 0.8)
    pruner.optimizer(10 * REFERENCE_STEPS)  # the balancing average spans the same fraction of any search
    assert math.isclose(pruner.momentum, 0.999, rel_tol=1e-9)
    pruner.optimizer(REFERENCE_STEPS)  # where the paper's 0.99 was set
    for m in pruner.gated():
        m.s.grad = torch.ones_like(m.s) * 1e-3
    pruner.before_step()  # at init the proxy equals density * d < budget (10 % headroom): no constraint
    assert float(pruner.balance) == 0.0
    assert all(torch.equal(m.s.grad, torch.full_like(m.s, 1e-3)) for m in pruner.gated())
    with torch.no_grad():
        for m in pruner.gated():
            m.s.fill_(2.0)  # far too dense
    for m in pruner.gated():
        m.s.grad = torch.ones_like(m.s) * 1e-3
    pruner.before_step()
    task_norm = math.sqrt(sum(m.s.numel() for m in pruner.gated())) * 1e-3
    p = torch.sigmoid(torch.tensor(2.0))
    g_s = 100.0 / pruner.budget * p * (1 - p)
    cons_norm = g_s * math.sqrt(sum(m.s.numel() for m in pruner.gated()))
    assert math.isclose(float(pruner.balance), 0.01 * task_norm / cons_norm, rel_tol=1e-4)
    assert all((m.s.grad > 1e-3).all() for m in pruner.gated())  # pushes the logits down


def test_cts_objective_follows_regime_and_kl_is_reverse():
    strong, weak = get_method("cts")(lenet(), 0.8), get_method("cts")(lenet(), 0.8, regime="weak")
    assert strong.objective == "ce" and weak.objective == "reverse_kl"
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    weak.model.train()
    torch.manual_seed(1)
    kl = weak.loss(weak.model, x, y, nn.CrossEntropyLoss())
    torch.manual_seed(1)  # the same gate draw
    with torch.no_grad():
        log_s = torch.log_softmax(weak.model(x), 1)
        with weak.masks_open():
            log_t = torch.log_softmax(weak.model(x), 1)
    reverse = (log_s.exp() * (log_s - log_t)).sum(1).mean()  # KL(student || teacher)
    forward = (log_t.exp() * (log_t - log_s)).sum(1).mean()
    assert kl.item() == pytest.approx(reverse.item(), rel=1e-5) and abs(reverse - forward) > 1e-3
    with weak.masks_open():
        assert weak.loss(weak.model, x, y, nn.CrossEntropyLoss()).item() < 1e-6  # the dense net vs itself


# -- pruning at initialisation ----------------------------------------------------------------------
def test_random_is_exact_per_layer_and_near_chance_strong():
    pruner = get_method("random")(lenet(), 0.9)
    pruner.prepare(context())
    for layer in pruner.report().layers:
        assert layer.kept == round(0.1 * layer.weights)
    m = pruner.masks()["fc1"].flatten()
    k = int(m.sum())
    assert 0.05 < m[:k].float().mean() < 0.15  # spread uniformly, not the first k entries
    other = get_method("random")(lenet(seed=1), 0.9)
    other.prepare(context())
    assert not torch.equal(other.masks()["fc1"], pruner.masks()["fc1"])  # drawn, not fixed


def test_magnitude_keeps_the_largest_weights_globally():
    pruner = get_method("magnitude")(lenet(), 0.9)
    pruner.prepare(context())
    flat = torch.cat([w.abs().flatten() for w in weights(pruner)])
    kept = torch.cat([m.final.flatten() for m in pruner.gated()])
    assert int(kept.sum()) == round(0.1 * flat.numel())
    assert flat[kept].min() >= flat[~kept].max()


def test_snip_scores_are_connection_sensitivity():
    pruner = get_method("snip")(lenet(), 0.9)
    ctx = context(n_batches=1)
    model = pruner.model
    with pruner.scoring() as ws:
        x, y = next(ctx.batches())
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), ws)
    expected = [(w.detach() * g).abs() for w, g in zip(ws, grads)]
    got = pruner.score(ctx)
    assert all(torch.allclose(a, b) for a, b in zip(got, expected))
    pruner.prepare(ctx)
    assert abs(pruner.report().sparsity - 0.9) < 1e-4


def test_grasp_uses_the_hessian_gradient_product():
    """On a one-layer linear model the score w * Hg matches an explicit Hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3, bias=False))
    pruner = get_method("grasp")(model, 0.5, hparams=get_method("grasp").Hparams(temperature=2.0))
    x, y = torch.randn(5, 1, 6), torch.randint(0, 3, (5,))
    ctx = SearchContext(batches=lambda: iter([(x, y)]),
                        criterion=nn.CrossEntropyLoss())
    w0 = weights(pruner)[0].clone()

    def loss(w):
        return nn.functional.cross_entropy((x.flatten(1) @ w.T) / 2.0, y)

    w = w0.clone().requires_grad_()
    g = torch.autograd.grad(loss(w), w)[0]
    hess = torch.autograd.functional.hessian(loss, w0).reshape(w0.numel(), w0.numel())
    expected = w0 * (hess @ g.flatten()).view_as(w0)
    assert torch.allclose(pruner.score(ctx)[0], expected, atol=1e-6)


def test_synflow_avoids_the_layer_collapse_of_global_magnitude():
    """A net whose first layer has a much larger fan-in: at 99 % global magnitude at init removes a whole
    layer (scaled init: small-fan-in layers have larger weights); SynFlow keeps every layer alive."""
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 50, bias=False), nn.ReLU(), nn.Linear(50, 50, bias=False),
                             nn.ReLU(), nn.Linear(50, 10, bias=False))
    mag = get_method("magnitude")(net(), 0.99, weight_init="scaled_signed_constant")
    mag.prepare(context())
    assert mag.report().collapsed  # the whole first layer is gone
    syn = get_method("synflow")(net(), 0.99, weight_init="scaled_signed_constant")
    syn.prepare(context())
    report = syn.report()
    assert not report.collapsed and abs(report.sparsity - 0.99) < 1e-4
    assert all(torch.equal(a.sign(), b.sign()) for a, b in zip(weights(syn), weights(mag)))  # signs restored


def test_dense_has_no_mask_and_target_zero():
    pruner = get_method("dense")(lenet(), 0.0)
    assert pruner.report().sparsity == 0.0 and not pruner.searches
    with pytest.raises(ValueError, match="target sparsity is 0"):
        get_method("dense")(lenet(), 0.5)


# -- sanity checks and layer collapse ---------------------------------------------------------------
@pytest.mark.parametrize("variant", ["random", "shuffle", "reinit"])
def test_sanity_ablations_keep_layer_sparsities(variant):
    pruner = get_method("magnitude")(lenet(), 0.9, regime="weak")
    pruner.prepare(context())
    before = [m.final.clone() for m in pruner.gated()]
    w_before = [w.clone() for w in weights(pruner)]
    ablate(pruner, variant, seed=0)
    for b, m in zip(before, pruner.gated()):
        a = m.final
        assert int(a.sum()) == int(b.sum())
        if variant == "shuffle":
            assert torch.equal(a.sum(1), b.sum(1))  # every unit keeps its fan-in
        assert torch.equal(a, b) == (variant == "reinit")
    reinit = all(not torch.equal(a, b) for a, b in zip(weights(pruner), w_before))
    assert reinit == (variant == "reinit")
    if variant == "reinit":  # the weak regime retrains from the new weights
        rewound = pruner.rewind_state()["fc1.parametrizations.weight.original"]
        assert torch.equal(rewound, weights(pruner)[0])


def test_layer_collapse_is_reported():
    pruner = get_method("magnitude")(lenet(), 0.5)
    pruner.prepare(context())
    mask = pruner.gated()[1]
    mask.freeze(torch.zeros_like(mask.final))
    assert pruner.report().collapsed == ["fc2"]


def test_class_sample_draws_per_class_examples_fixed_by_the_seed():
    from torch.utils.data import Subset, TensorDataset

    from benchmarks.sample import class_sample

    y = torch.arange(300) % 3
    ds = TensorDataset(torch.arange(300).float().view(300, 1), y)
    x, t = class_sample(ds, 10, seed=0)
    assert torch.bincount(t).tolist() == [10, 10, 10] and torch.equal(x.flatten().long() % 3, t)  # inputs match labels
    assert torch.equal(class_sample(ds, 10, seed=0)[0], x) and not torch.equal(class_sample(ds, 10, seed=1)[0], x)
    sub = Subset(ds, list(range(0, 300, 50)))  # 2 per class: a class with fewer gives all of them
    xs, ts = class_sample(sub, 10, seed=0)
    assert sorted(xs.flatten().long().tolist()) == list(range(0, 300, 50)) and torch.bincount(ts).tolist() == [2, 2, 2]


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_data_driven_scores_use_one_fixed_class_sample_for_every_pass(name, mnist_data_root, tmp_path, monkeypatch):
    """Issue 28, point 15: SNIP and GraSP score on 10 training examples of each class (100 on MNIST), and
    GraSP's g and Hg see the same examples (before: g and Hg on two differently shuffled batches of 64)."""
    import benchmarks.trainer as trainer
    from benchmarks.cli import main

    seen = []
    real = trainer.CellRun.class_sample

    def spy(self, per_class):
        out = real(self, per_class)
        seen.append(torch.cat([y for _, y in out]))
        return out
    monkeypatch.setattr(trainer.CellRun, "class_sample", spy)
    criterion_labels = []
    monkeypatch.setattr(trainer.nn, "CrossEntropyLoss", lambda: lambda out, y: criterion_labels.append(y.clone())
                        or nn.functional.cross_entropy(out, y))
    assert main(["run", "--methods", name, "--arch", "lenet300", "--dataset", "mnist", "--sparsity", "0.9",
                 "--epochs", "1", "--train-size", "1000", "--no-progress", "--data-root", str(mnist_data_root),
                 "--out", str(tmp_path / "r"), "--batch-size", "64"]) == 0
    (labels,) = seen
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10
    passes = 1 if name == "snip" else 2  # GraSP: the gradient, then the Hessian-gradient product
    scoring = criterion_labels[:2 * passes]  # the first criterion calls are the scores' (batches of 64 and 36)
    assert [len(y) for y in scoring] == [64, 36] * passes
    assert torch.equal(torch.cat(scoring), torch.cat([labels] * passes))
