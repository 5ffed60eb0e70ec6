"""CRBG: continuously relaxed Bernoulli gates (Tsayag and Lindenbaum, 2026). See ``shared/specs/crbg.md``.

Gate z = clamp(mu + eps, 0, 1), eps ~ N(0, sigma^2) fresh each forward; penalty
lambda * mean Phi(mu / sigma) (the expected fraction of open gates, so lambda means the same on any
model size); final mask 1[mu > threshold]. A target sparsity is reached by dual ascent on lambda
(``target_mode`` "dual"), an exact global projection of mu at the end ("project"), or both (default).
The dual control is two-sided and every rate is per fraction of the search (`methods.target`); the Adam
rate on mu is ``lr`` for a search of ``lr_ref_steps`` steps, scaled by lr_ref_steps / steps, so short
searches move the gates as far as long ones (at 720 steps, 1,500 MNIST images: 91.5 / 90.9 / 90.1 %
at sparsity 0.5 / 0.8 / 0.9 against 85.7 / 88.7 / 85.7 % with a per-step rate).

Regularisers (``regularizer``; the thesis compares two and reports that induce-decision wins on LeNet):

- ``induce-sparse``: lambda * mean Phi(mu / sigma), the expected fraction of open gates.
- ``induce-decision`` (our definition; the thesis gives no formula): induce-sparse plus
  ``decide * t^2 * mean P(0 < z < 1)``, where P(0 < z < 1) = Phi((1 - mu) / sigma) - Phi(-mu / sigma) is the
  probability that a gate's draw falls strictly inside (0, 1), i.e. that the gate has not decided between
  closed and open, and t is the fraction of the search done. Its gradient
  (phi(mu / sigma) - phi((1 - mu) / sigma)) / sigma is zero at mu = 1/2 and pushes mu away from 1/2 on either
  side, towards 0 (closed) or 1 (open), so the binary mask 1[mu > 1/2] agrees with the gates the network was
  trained with; it does not favour either side, so sparsity is still set by lambda (and the target control).
  The t^2 ramp (as CS's decision penalty, `methods.cs`) lets the task gradient sort the gates before they
  are pushed to a decision. ``decide`` is the penalty's final weight on the same mean scale as lambda.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods.base import Pruner
from methods.hparams import later
from methods.mask import Mask, MaskedWeight
from methods.reduce import total
from methods.schedules import REFERENCE_STEPS, lr_schedule, per_search_lr
from methods.target import TargetControlled, TargetHparams

REGULARIZERS = ("induce-sparse", "induce-decision")


@dataclass
class CRBGHparams(TargetHparams):
    method = "crbg"
    lr: float = 1e-2
    lr_ref_steps: int = REFERENCE_STEPS  # lr is the rate of a search this long (`per_search_lr`); 0: per step
    sigma: float = 0.5
    mu_init: float = 0.5
    mu_init_noise: float = 0.01
    threshold: float = 0.5
    lam: float = 1.0
    schedule: str = "constant"
    regularizer: str = later("induce-sparse")
    decide: float = later(1.0)  # induce-decision: the decision penalty's final weight

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigma <= 0:
            raise ValueError(f"crbg.sigma must be > 0, got {self.sigma}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"crbg.regularizer must be one of {', '.join(REGULARIZERS)}, got {self.regularizer!r}")
        if self.decide < 0:
            raise ValueError(f"crbg.decide must be >= 0, got {self.decide}")


class CRBGMask(Mask):
    def __init__(self, weight: Tensor, structured: bool, hp: CRBGHparams) -> None:
        super().__init__(weight, structured)
        mu = torch.full(self.mask_shape, hp.mu_init, device=weight.device)
        mu += hp.mu_init_noise * torch.randn_like(mu)
        self.mu = torch.nn.Parameter(mu)
        self.sigma = hp.sigma
        self.threshold = hp.threshold
        self.penalty_scale: Tensor | None = None  # lambda / (n sigma sqrt(2 pi)) (signed), armed by `CRBG.penalty`
        self.decide_scale = 0.0  # induce-decision: decide t^2 / (n sigma sqrt(2 pi)), set by `CRBG.on_step`

    def search_mask(self) -> Tensor:
        return (self.mu + torch.empty_like(self.mu).normal_(0.0, self.sigma)).clamp(0.0, 1.0)

    def search_forward(self, weight: Tensor) -> Tensor:
        with torch.no_grad():  # the same draw as `search_mask`, in place in one tensor
            z = torch.empty_like(self.mu).normal_(0.0, self.sigma).add_(self.mu).clamp_(0.0, 1.0)
        return MaskedWeight.apply(weight, self.mu, z, self)

    def mask_grad(self, grad_m: Tensor, z: Tensor) -> Tensor:
        # dz/dmu = 1 inside (0, 1), else 0; written over grad_m
        grad = torch.ops.aten.hardtanh_backward.grad_input(grad_m, z, 0.0, 1.0, grad_input=grad_m)
        scale, self.penalty_scale = self.penalty_scale, None
        if scale is not None:  # + d/dmu of lambda / n * Phi(mu / sigma): lambda / n * phi(mu / sigma) / sigma
            mu = self.mu.detach()
            d = self.decide_scale  # + d/dmu of the decision term: d (phi(mu / sigma) - phi((1 - mu) / sigma))
            grad.addcmul_(torch.mul(mu, mu).mul_(-0.5 / self.sigma**2).exp_(), scale + d if d else scale)
            if d:
                grad.add_(torch.rsub(mu, 1.0).square_().mul_(-0.5 / self.sigma**2).exp_(), alpha=-d)
        return grad

    def binary_mask(self) -> Tensor:
        return self.mu.detach() > self.threshold

    def scores(self) -> Tensor:
        return self.mu.detach()


class CRBG(TargetControlled, Pruner):
    """Unstructured (gate per weight) or structured (gate per output neuron / channel)."""

    name = "crbg"
    Hparams = CRBGHparams
    granularities = ("unstructured", "structured")
    mask_cls = CRBGMask

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gates = self.gated()
        self._n_gates = sum(m.mu.numel() for m in self._gates)
        self._total_steps = 1  # of the search, set by `optimizer`
        self.init_control()

    @property
    def lam(self) -> Tensor:
        return self.control.lam

    @property
    def decide(self) -> float:
        """The decision penalty's final weight: `decide` with induce-decision, else 0."""
        return self.hp.decide if self.hp.regularizer == "induce-decision" else 0.0

    def optimizer(self, total_steps: int):
        self.start_control(total_steps)
        self._total_steps = total_steps
        opt = torch.optim.Adam(self.parameters(), lr=per_search_lr(self.hp.lr, self.hp.lr_ref_steps, total_steps),
                               fused=True)  # one kernel for all gates
        return opt, lr_schedule(opt, self.hp.schedule, total_steps)

    @torch.no_grad()
    def penalty(self) -> Tensor:
        """lambda * expected fraction of open gates (mean over gates of Phi(mu / sigma)).

        Its gradient, lambda / n * phi(mu / sigma) / sigma, is added by each gate's `mask_grad` in the
        backward that follows (one fused pass, no autograd graph), so the value returned has no graph."""
        s = self.hp.sigma
        scale = self.lam / (self._n_gates * s * math.sqrt(2.0 * math.pi))
        for m in self._gates:
            m.penalty_scale = scale
        erf_sum = sum(total(torch.mul(m.mu, 1.0 / (s * math.sqrt(2.0))).erf_()) for m in self._gates)
        value = self.lam * 0.5 * (1.0 + erf_sum / self._n_gates)
        d = self._gates[0].decide_scale * self._n_gates * s * math.sqrt(2.0 * math.pi)  # decide t^2
        if d:  # + d * mean P(0 < z < 1) = d * mean (erf((1 - mu) / (sigma sqrt 2)) + erf(mu / (sigma sqrt 2))) / 2
            undecided = sum(total(torch.rsub(m.mu, 1.0).mul_(1.0 / (s * math.sqrt(2.0))).erf_()) for m in self._gates)
            value = value + d * 0.5 * (undecided + erf_sum) / self._n_gates
        return value

    def on_step(self, step: int) -> None:
        super().on_step(step)  # dual update of lambda
        t = min(1.0, (step + 1) / self._total_steps)
        scale = self.decide * t**2 / (self._n_gates * self.hp.sigma * math.sqrt(2.0 * math.pi))
        for m in self._gates:
            m.decide_scale = scale

    @torch.no_grad()
    def density(self) -> Tensor:
        """Fraction of gates whose binary value is 1 right now (the quantity the target constrains)."""
        return sum(torch.gt(m.mu, self.hp.threshold, out=torch.empty_like(m.mu)).sum()  # float out: one pass
                   for m in self._gates) / self._n_gates

    @staticmethod
    def search_space(trial, regime: str = "strong") -> dict:
        """Optuna search space (`bench tune`): lambda, sigma, learning rate, mu init and threshold."""
        return {"lam": trial.suggest_float("lam", 1e-3, 1e2, log=True),
                "lam_rate": trial.suggest_float("lam_rate", 4.0, 400.0, log=True),
                "sigma": trial.suggest_float("sigma", 0.1, 1.0),
                "lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
                "mu_init": trial.suggest_float("mu_init", 0.3, 1.0),
                "threshold": trial.suggest_float("threshold", 0.0, 0.7)}

    def state(self) -> dict[str, float]:
        return {"lambda": float(self.lam)}

    def extra_state(self) -> dict:
        return {**super().extra_state(), "decide_scale": self._gates[0].decide_scale}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        for m in self._gates:
            m.decide_scale = state.get("decide_scale", 0.0)

    def record(self) -> dict:
        return {**super().record(), "penalty_norm": "mean_over_gates"}
