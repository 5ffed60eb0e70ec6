"""CRBG: continuously relaxed Bernoulli gates (Tsayag and Lindenbaum, 2026). See ``shared/specs/crbg.md``.

Gate z = clamp(mu + eps, 0, 1), eps ~ N(0, sigma^2) fresh each forward; penalty
lambda * mean Phi(mu / sigma) (the expected fraction of open gates, so lambda means the same on any
model size); final mask 1[mu > threshold]. A target sparsity is reached by dual ascent on lambda
(``target_mode`` "dual"), an exact global projection of mu at the end ("project"), or both (default).
The dual control is two-sided and every rate is per fraction of the search (`methods.target`); the Adam
rate on mu is ``lr`` for a search of ``lr_ref_steps`` steps, scaled by lr_ref_steps / steps, so short
searches move the gates as far as long ones (at 720 steps, 1,500 MNIST images: 91.5 / 90.9 / 90.1 %
at sparsity 0.5 / 0.8 / 0.9 against 85.7 / 88.7 / 85.7 % with a per-step rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods.base import Mask, MaskedWeight, Pruner
from methods.schedules import REFERENCE_STEPS, lr_schedule, per_search_lr
from methods.target import TargetControlled, TargetHparams


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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sigma <= 0:
            raise ValueError(f"crbg.sigma must be > 0, got {self.sigma}")


class CRBGMask(Mask):
    def __init__(self, weight: Tensor, structured: bool, hp: CRBGHparams) -> None:
        super().__init__(weight, structured)
        mu = torch.full(self.mask_shape, hp.mu_init, device=weight.device)
        mu += hp.mu_init_noise * torch.randn_like(mu)
        self.mu = torch.nn.Parameter(mu)
        self.sigma = hp.sigma
        self.threshold = hp.threshold
        self.penalty_scale: Tensor | None = None  # lambda / (n sigma sqrt(2 pi)) (signed), armed by `CRBG.penalty`

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
            grad.addcmul_(torch.mul(mu, mu).mul_(-0.5 / self.sigma**2).exp_(), scale)
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
        self.init_control()

    @property
    def lam(self) -> Tensor:
        return self.control.lam

    def optimizer(self, total_steps: int):
        self.start_control(total_steps)
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
        erf_sum = sum(torch.mul(m.mu, 1.0 / (s * math.sqrt(2.0))).erf_().sum() for m in self._gates)
        return self.lam * 0.5 * (1.0 + erf_sum / self._n_gates)

    @torch.no_grad()
    def density(self) -> Tensor:
        """Fraction of gates whose binary value is 1 right now (the quantity the target constrains)."""
        return sum(torch.gt(m.mu, self.hp.threshold, out=torch.empty_like(m.mu)).sum()  # float out: one pass
                   for m in self._gates) / self._n_gates

    @staticmethod
    def search_space(trial) -> dict:
        """Optuna search space (`bench tune`): lambda, sigma, learning rate, mu init and threshold."""
        return {"lam": trial.suggest_float("lam", 1e-3, 1e2, log=True),
                "lam_rate": trial.suggest_float("lam_rate", 4.0, 400.0, log=True),
                "sigma": trial.suggest_float("sigma", 0.1, 1.0),
                "lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
                "mu_init": trial.suggest_float("mu_init", 0.3, 1.0),
                "threshold": trial.suggest_float("threshold", 0.0, 0.7)}

    def state(self) -> dict[str, float]:
        return {"lambda": float(self.lam)}

    def record(self) -> dict:
        return {**super().record(), "penalty_norm": "mean_over_gates", "lambda_final": float(self.lam)}
