"""Shared machinery of the one-shot baselines (pruning at initialisation): a mask fixed once from a
score per weight, before any training. A baseline defines `score`; the projection is global or
layer-wise at the exact target (`scope`). See ``shared/specs/baselines.md``."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor

from methods.base import Pruner
from methods.contract import SearchContext
from methods.hparams import Hparams
from methods.mask import OpenMask

SCOPES = ("global", "layerwise")


class OneShotMask(OpenMask):
    """A mask set once by its pruner; open (all ones) until then."""

    def __init__(self, weight: Tensor, structured: bool, hp: Hparams) -> None:
        super().__init__(weight, structured)


@dataclass
class OneShotHparams(Hparams):
    scope: str = "global"
    batches: int = 1  # mini-batches the data-driven scores average over

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")


class OneShotPruner(Pruner):
    """Scores every prunable weight once in `prepare` and keeps the top ones at the target."""

    searches = False
    mask_cls = OneShotMask
    weight_init = "kaiming_normal"  # the init these baselines' papers prune

    @abstractmethod
    def score(self, ctx: SearchContext) -> list[Tensor]:
        """One score per weight of every gated layer (same order as `gated()`), larger = keep."""

    def prepare(self, ctx: SearchContext) -> None:
        self.project(self.score(ctx), 1.0 - self.target)

    def project(self, scores: list[Tensor], density: float) -> None:
        """Keep the top `density` of `scores`, globally or per layer (`scope`)."""
        self.project_global(density, scores, layerwise=self.hp.scope != "global")

    def finalize(self) -> None:
        """The mask was fixed in `prepare`."""

    @contextlib.contextmanager
    def scoring(self) -> Iterator[list[Tensor]]:
        """The dense network with gradients enabled on the gated weights (yielded), for saliency scores."""
        weights = self.gated_weights()
        for w in weights:
            w.requires_grad_(True)
        try:
            with self.masks_open():
                yield weights
        finally:
            for w in weights:
                w.requires_grad_(False)

    def batch_gradients(self, ctx: SearchContext, batches: int, scale: float = 1.0,
                        weights: list[Tensor] | None = None) -> list[Tensor]:
        """The loss gradient w.r.t. the gated weights, summed over the first `batches` batches (logits / `scale`)."""
        weights = weights if weights is not None else self.gated_weights()
        total = [torch.zeros_like(w) for w in weights]
        for i, (x, y) in enumerate(ctx.batches()):
            if i == batches:
                break
            grads = torch.autograd.grad(ctx.criterion(self.model(x) / scale, y), weights)
            for t, g in zip(total, grads):
                t += g
        return total

    def record(self) -> dict[str, Any]:
        return {**super().record(), "when": "at_init"}
