"""Random pruning: a uniformly random mask at the target, the floor every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods.contract import SearchContext
from methods.pai import OneShotHparams, OneShotPruner


@dataclass
class RandomHparams(OneShotHparams):
    scope: str = "layerwise"  # same sparsity in every layer; "global": one uniform draw over all weights


class Random(OneShotPruner):
    """Uniformly random mask at the target sparsity (layer-wise by default)."""

    name = "random"
    Hparams = RandomHparams

    def score(self, ctx: SearchContext) -> list[Tensor]:
        return [torch.rand(w.shape, device=w.device) for w in self.gated_weights()]
