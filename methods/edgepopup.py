"""Edge-Popup (Ramanujan et al., CVPR 2020): a score per frozen weight, per-layer top-k in the forward
pass, straight-through gradient to the scores. See ``shared/specs/edgepopup.md``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods.base import Hparams, Mask, Pruner, kth_largest
from methods.schedules import lr_schedule


def topk_mask(scores: Tensor, keep: int) -> Tensor:
    """Bool mask of the `keep` largest entries, by a k-th value threshold (no sort). Entries tied with
    the threshold are all kept; with continuous scores ties have probability zero."""
    if keep >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    return scores >= kth_largest(scores.flatten(), keep)


class _StraightThroughTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, keep: int) -> Tensor:
        return topk_mask(scores, keep).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


@dataclass
class EdgePopupHparams(Hparams):
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"


class EdgePopupMask(Mask):
    def __init__(self, weight: Tensor, structured: bool, hp: EdgePopupHparams, density: float) -> None:
        super().__init__(weight, structured)
        bound = 1.0 / math.sqrt(weight[0].numel())  # Kaiming-uniform scores, as the official code
        self.score = torch.nn.Parameter(torch.empty(self.mask_shape, device=weight.device).uniform_(-bound, bound))
        self.keep = max(1, round(density * self.score.numel()))

    def search_mask(self) -> Tensor:
        return _StraightThroughTopK.apply(self.score.abs(), self.keep)

    def binary_mask(self) -> Tensor:
        return topk_mask(self.score.detach().abs(), self.keep)

    def scores(self) -> Tensor:
        return self.score.detach().abs()


class EdgePopup(Pruner):
    """Layer-wise top-k of |score| at the same density in every layer."""

    name = "edgepopup"
    Hparams = EdgePopupHparams
    mask_cls = EdgePopupMask

    def make_mask(self, weight: Tensor, structured: bool) -> Mask:
        return EdgePopupMask(weight, structured, self.hp, 1.0 - self.target)

    def optimizer(self, total_steps: int):
        opt = torch.optim.SGD(self.parameters(), lr=self.hp.lr, momentum=self.hp.momentum,
                              weight_decay=self.hp.weight_decay)
        return opt, lr_schedule(opt, self.hp.schedule, total_steps)

    def record(self) -> dict:
        return {**super().record(), "selection": "layerwise_topk", "target_mode": "exact_topk"}
