"""SynFlow (Tanaka, Kunin, Yamins and Ganguli, NeurIPS 2020): data-free, iterative synaptic flow.

All parameters are replaced by their absolute values, the input is all ones and R = sum of the output;
score = |w * dR/dw|. Over `rounds` rounds the density falls exponentially to the target, rescoring each
round under the current mask. BatchNorm in eval mode, double precision (as the authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods.contract import SearchContext
from methods.pai import OneShotHparams, OneShotPruner


@dataclass
class SynFlowHparams(OneShotHparams):
    rounds: int = 100


class SynFlow(OneShotPruner):
    """Iterative data-free pruning that avoids layer collapse (100 rounds, exponential schedule)."""

    name = "synflow"
    Hparams = SynFlowHparams

    def score(self, ctx: SearchContext) -> list[Tensor]:
        x, _ = next(iter(ctx.batches()))  # only the input's shape is used
        dtype = next(iter(self.gated_weights())).dtype
        model = self.model.double().eval()
        state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        signs = {k: v.sign() for k, v in state.items()}
        with torch.no_grad():
            for v in state.values():
                v.abs_()
        ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
        weights = self.gated_weights()
        for w in weights:
            w.requires_grad_(True)
        for k in range(1, self.hp.rounds + 1):
            grads = torch.autograd.grad(model(ones).sum(), weights)
            scores = [(w.detach() * g).abs() for w, g in zip(weights, grads)]
            self.project(scores, (1.0 - self.target) ** (k / self.hp.rounds))
        for w in weights:
            w.requires_grad_(False)
        with torch.no_grad():
            for k, v in state.items():
                v.mul_(signs[k])
        model.to(dtype)
        return [mask.final.to(dtype) for mask in self.gated()]

    def record(self) -> dict:
        return {**super().record(), "schedule": "exponential", "precision": "float64"}
