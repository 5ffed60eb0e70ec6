"""Shared machinery of the one-shot baselines (pruning at initialisation): a mask fixed once from a
score per weight, before any training. A baseline defines `score`; the projection is global or
layer-wise at the exact target (`scope`). See ``shared/specs/baselines.md``."""

from __future__ import annotations

import contextlib
import itertools
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
    batches: int = 1  # data-driven scores with samples_per_class 0: the first mini-batches of the epoch order

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.batches < 1:
            raise ValueError(f"batches must be >= 1, got {self.batches}")


@dataclass
class SampledHparams(OneShotHparams):
    """A data-driven score's sample (`OneShotPruner.scoring_batches`): `samples_per_class` training examples of
    each class, fixed by the seed, for every pass (SNIP's and GraSP's papers, Synaptic-Flow's code: 10); 0:
    the first `batches` mini-batches of the epoch order, drawn once and shared by every pass. A plain field,
    not `later`: it changed these methods' scores, so their cells' ids changed with it."""

    samples_per_class: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_class < 0:
            raise ValueError(f"samples_per_class must be >= 0, got {self.samples_per_class}")


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

    def scoring_batches(self, ctx: SearchContext) -> list[tuple[Tensor, Tensor]]:
        """The batches every pass of a data-driven score uses: the class sample (`samples_per_class`), or
        the first `batches` mini-batches of the epoch order."""
        if self.hp.samples_per_class and ctx.sample is not None:
            return ctx.sample(self.hp.samples_per_class)
        return list(itertools.islice(ctx.batches(), self.hp.batches))

    def batch_gradients(self, ctx: SearchContext, batches: list[tuple[Tensor, Tensor]], scale: float = 1.0,
                        weights: list[Tensor] | None = None) -> list[Tensor]:
        """The loss gradient w.r.t. the gated weights, summed over `batches` (logits / `scale`)."""
        weights = weights if weights is not None else self.gated_weights()
        total = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            grads = torch.autograd.grad(ctx.criterion(self.model(x) / scale, y), weights)
            for t, g in zip(total, grads):
                t += g
        return total

    def record(self) -> dict[str, Any]:
        return {**super().record(), "when": "at_init"}
