"""SNIP (Lee, Ajanthan and Torr, ICLR 2019): connection sensitivity |w * dL/dw| at initialisation."""

from __future__ import annotations

from torch import Tensor

from methods.contract import SearchContext
from methods.pai import OneShotPruner, SampledHparams


class SNIP(OneShotPruner):
    """Keep the weights with the largest |w * dL/dw| at init on the scoring sample (`scoring_batches`)."""

    name = "snip"
    Hparams = SampledHparams

    def score(self, ctx: SearchContext) -> list[Tensor]:
        self.model.train()
        with self.scoring() as weights:
            grads = self.batch_gradients(ctx, self.scoring_batches(ctx), weights=weights)
        return [(w.detach() * g).abs() for w, g in zip(weights, grads)]
