"""Magnitude pruning at initialisation: keep the largest |w| (global by default)."""

from __future__ import annotations

from torch import Tensor

from methods.contract import SearchContext
from methods.pai import OneShotHparams, OneShotPruner


class Magnitude(OneShotPruner):
    """Keep the largest |w| of the initial weights (global by default, scope=layerwise per layer)."""

    name = "magnitude"
    Hparams = OneShotHparams

    def score(self, ctx: SearchContext) -> list[Tensor]:
        return [w.detach().abs() for w in self.gated_weights()]
