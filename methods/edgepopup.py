"""Edge-Popup (Ramanujan et al., CVPR 2020): a score per frozen weight, per-layer top-k in the forward
pass, straight-through gradient to the scores. See ``shared/specs/edgepopup.md``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from methods.base import Pruner
from methods.hparams import Hparams
from methods.mask import Mask, MaskedWeight
from methods.sparsity import kth_largest
from methods.schedules import lr_schedule


class BandedThreshold:
    """Exact k-th largest value, reusing last step's threshold: scores move little per step, so the
    k-th value usually stays in a narrow band around it. Count the values above the band, select
    inside the band only, and fall back to a full selection (widening the band) when it is missed.
    On CUDA a full selection is cheap and the band would cost host syncs, so it is used directly."""

    def __init__(self, width: float = 0.02) -> None:
        self.width = width
        self.last: Tensor | None = None

    def __call__(self, x: Tensor, keep: int) -> Tensor:
        flat = x.flatten()
        if keep >= flat.numel():
            return flat.min()
        if self.last is not None and self.banded(flat):
            lo, hi = self.last * (1 - self.width), self.last * (1 + self.width)
            above = int(torch.gt(flat, hi, out=torch.empty_like(flat)).sum())  # float out: one pass
            band = flat[(flat - (lo + hi) / 2).abs_() <= (hi - lo) / 2]
            if above < keep <= above + band.numel():
                self.width = max(1e-4, self.width * 0.9)
                self.last = torch.kthvalue(band, band.numel() - (keep - above) + 1).values
                return self.last
            self.width = min(1.0, self.width * 2)
        self.last = kth_largest(flat, keep)
        return self.last

    @staticmethod
    def banded(x: Tensor) -> bool:
        """Whether to try the band: off the GPU only, since counting the band reads a value to the host."""
        return not x.is_cuda


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
        self.threshold = BandedThreshold()

    def search_mask(self) -> Tensor:
        scores = self.score.abs()
        top = self._select(scores.detach())
        return top + (scores - scores.detach())  # straight through: d top / d |score| = 1

    def search_forward(self, weight: Tensor) -> Tensor:
        return MaskedWeight.apply(weight, self.score, self._select(self.score.detach().abs()), self)

    def mask_grad(self, grad_m: Tensor, m: Tensor) -> Tensor:
        return grad_m.mul_(self.score.detach().sign())  # straight through the top-k, then through |score|

    def binary_mask(self) -> Tensor:
        return self._select(self.score.detach().abs()).bool()

    def _select(self, scores: Tensor) -> Tensor:
        """1.0 at the `keep` largest scores, else 0.0 (ties at the threshold all kept; probability zero for
        real scores)."""
        return torch.ge(scores, self.threshold(scores, self.keep), out=torch.empty_like(scores))

    def scores(self) -> Tensor:
        return self.score.detach().abs()


class EdgePopup(Pruner):
    """Layer-wise top-k of |score| at the same density in every layer."""

    name = "edgepopup"
    Hparams = EdgePopupHparams
    mask_cls = EdgePopupMask
    weight_init = "scaled_signed_constant"  # its search runs at the target density from the first step (methods.init)

    def make_mask(self, weight: Tensor, structured: bool) -> Mask:
        return EdgePopupMask(weight, structured, self.hp, 1.0 - self.target)

    @staticmethod
    def search_space(trial, regime: str = "strong") -> dict:
        """Optuna search space (`bench tune`): learning rate and weight decay on the scores."""
        return {"lr": trial.suggest_float("lr", 1e-2, 1.0, log=True),
                "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)}

    def optimizer(self, total_steps: int):
        opt = torch.optim.SGD(self.parameters(), lr=self.hp.lr, momentum=self.hp.momentum,
                              weight_decay=self.hp.weight_decay)
        return opt, lr_schedule(opt, self.hp.schedule, total_steps)

    def record(self) -> dict:
        return {**super().record(), "selection": "layerwise_topk", "target_mode": "exact_topk"}
