"""GraSP (Wang, Zhang and Grosse, ICLR 2020): preserve gradient flow at initialisation.

Score S = -w * (H g), with g the loss gradient and H the Hessian, from logits divided by a temperature
T = 200 as in the authors' code. As there, the weights with the largest S are removed (their removal
reduces the gradient norm least, or raises it), so the mask keeps the smallest S: our "larger = keep"
score is w * (H g).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from methods.contract import SearchContext
from methods.pai import OneShotPruner, SampledHparams


@dataclass
class GraSPHparams(SampledHparams):
    temperature: float = 200.0


class GraSP(OneShotPruner):
    """Keep the weights whose removal would reduce the gradient flow most (Hessian-gradient product)."""

    name = "grasp"
    Hparams = GraSPHparams

    def score(self, ctx: SearchContext) -> list[Tensor]:
        self.model.train()
        T = self.hp.temperature
        # the Hessian-vector product needs double backward, which fused attention kernels lack
        with self.scoring() as weights, sdpa_kernel(SDPBackend.MATH):
            sample = self.scoring_batches(ctx)  # g and Hg on the same examples
            g = self.batch_gradients(ctx, sample, scale=T, weights=weights)
            hg = [torch.zeros_like(w) for w in weights]
            for x, y in sample:
                grads = torch.autograd.grad(ctx.criterion(self.model(x) / T, y), weights, create_graph=True)
                z = sum((gi * ga.detach()).sum() for gi, ga in zip(grads, g))
                for acc, h in zip(hg, torch.autograd.grad(z, weights)):
                    acc += h
        return [w.detach() * h for w, h in zip(weights, hg)]

    def record(self) -> dict:
        return {**super().record(), "score": "-w*Hg, largest removed"}
