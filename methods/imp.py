"""Iterative magnitude pruning with rewinding (Frankle and Carbin 2019; Frankle et al. 2020, "lottery ticket
rewinding"). See ``shared/specs/imp.md``.

k rounds of: train the surviving weights for `epochs` epochs with the cell's weight-training recipe,
remove the fraction `rate` of the surviving weights with the smallest magnitude (globally, over every
prunable layer), rewind the survivors to their values at the end of epoch `rewind_epoch` of the first
round (0: the initialisation, as in the 2019 paper). k = ceil(log(1 - target) / log(1 - rate)); the last
round lands exactly on the target. The ticket is then trained from the rewind point by the weak regime's
training phase, which is the (k+1)-th training: every round before it is search cost (`search_epochs` =
k x epochs). Weak regime only: in the strong regime weights are never trained, so there is nothing to
iterate on (magnitude pruning of the initial weights is the `magnitude` baseline).

Our choices, recorded in every row: global pruning of every prunable layer at the same rate (OpenLTH's
`sparse_global`; the 2019 paper prunes LeNet's output layer at half the rate of the others); the
optimiser and its schedule restart each round; BatchNorm statistics are rewound with the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from methods.base import Pruner
from methods.hparams import Hparams
from methods.mask import Mask
from methods.sparsity import keep_global


@dataclass
class IMPHparams(Hparams):
    rate: float = 0.2  # fraction of the surviving weights removed per round (both papers)
    rewind_epoch: int = 1  # rewind point: end of this epoch of round 1 (0: init; LTR rewinds early, not to 0)

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1 or self.rewind_epoch < 0:
            raise ValueError("imp.rate must be in (0, 1) and imp.rewind_epoch >= 0")


class IMPMask(Mask):
    """A fixed binary mask (a buffer, so checkpoints carry it) that the method rewrites between rounds. Not a
    frozen `OneShotMask` re-frozen by `project_global` each round: a frozen mask's first forward checks on the
    host whether it keeps everything, a sync inside the step that follows each pruning."""

    def __init__(self, weight: Tensor, structured: bool, hp: IMPHparams) -> None:
        super().__init__(weight, structured)
        self.register_buffer("keep", torch.ones(self.mask_shape, dtype=torch.bool, device=weight.device))

    def search_mask(self) -> Tensor:
        return self.keep

    def search_forward(self, weight: Tensor) -> Tensor:
        return weight * self._broadcast(self.keep).to(weight.dtype)

    def binary_mask(self) -> Tensor:
        return self.keep

    def scores(self) -> Tensor:
        return self.keep.float()


class _Restartable:
    """The optimiser or the LR schedule of the current round, rebuilt by `IMP.restart`; stepped and
    checkpointed by the trainer like the object it stands for."""

    def __init__(self, owner: IMP, index: int) -> None:
        self.owner, self.index = owner, index

    @property
    def inner(self) -> Any:
        return self.owner.round_opt[self.index]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class _NoSchedule:
    def step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class IMP(Pruner):
    """Train, prune the smallest surviving magnitudes globally, rewind; repeat until the target."""

    name = "imp"
    Hparams = IMPHparams
    mask_cls = IMPMask
    augment_search = True  # the rounds are ordinary weight training
    regimes = ("weak",)  # weights trained and rewound; the strong regime's untrained magnitudes: `magnitude`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds = max(1, math.ceil(math.log(1.0 - self.target) / math.log(1.0 - self.hp.rate) - 1e-9))
        self.round = 0  # rounds finished (pruned and rewound)
        self.pending = False  # the round just ended: prune and rewind before the next step
        self.round_opt: list[Any] = [None, None]
        self.steps_per_round = 1
        self.round_epochs = 1

    def search_epochs(self, epochs: int) -> int:
        self.round_epochs = epochs
        return self.rounds * epochs

    @property
    def rewind_epoch(self) -> int:
        """`rewind_epoch`, or 0 (the initialisation) when a round is not longer than it: rewinding to the
        end of a round's training would be fine-tuning, not rewinding."""
        return self.hp.rewind_epoch if self.hp.rewind_epoch < self.round_epochs else 0

    @property
    def search_trains_weights(self) -> bool:
        return True

    def density_after(self, rnd: int) -> float:
        """The density the pruning at the end of round `rnd` (1-based) leaves; the last one is the target."""
        return 1.0 - self.target if rnd >= self.rounds else (1.0 - self.hp.rate) ** rnd

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.weight_parameters()

    def optimizer(self, total_steps: int) -> tuple[_Restartable, _Restartable]:
        self.steps_per_round = max(1, total_steps // self.rounds)
        for p in self.weight_parameters():
            p.requires_grad_(True)
        if self.rewind_epoch == 0:
            self.set_rewind_point()  # a resumed run then loads the checkpoint's rewind point over it
        self.restart()
        return _Restartable(self, 0), _Restartable(self, 1)

    def restart(self) -> None:
        """A fresh optimiser and schedule for one round of the cell's weight-training recipe."""
        params = self.weight_parameters()
        if self.ctx is not None and self.ctx.weight_optimizer is not None:
            self.round_opt = list(self.ctx.weight_optimizer(params, self.steps_per_round))
        else:  # outside the trainer: the default recipe's optimiser at a constant rate
            self.round_opt = [torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4), _NoSchedule()]

    def task_loss(self, model, x: Tensor, y: Tensor, criterion) -> Tensor:
        if self.pending:
            self.next_round()
        return criterion(model(x), y)

    def on_epoch(self, epoch: int) -> None:
        if self.round == 0 and epoch == self.rewind_epoch > 0:
            self.set_rewind_point()

    def on_step(self, step: int) -> None:
        done = step + 1
        if done % self.steps_per_round == 0 and done // self.steps_per_round < self.rounds:
            self.pending = True  # the round's last step: prune, rewind and restart before the next one

    @torch.no_grad()
    def prune_to(self, density: float) -> None:
        """Keep the `density` fraction of all weights with the largest surviving magnitudes (exact count)."""
        masks = self.gated()
        scores = [torch.where(m.keep, w.abs(), torch.full_like(w, -1.0)) for m, w in zip(masks, self.gated_weights())]
        for m, keep in zip(masks, keep_global(scores, density)):
            m.keep.copy_(keep)

    def next_round(self) -> None:
        self.pending = False
        self.round += 1
        self.prune_to(self.density_after(self.round))
        self.model.load_state_dict(self.rewind_state(), strict=False)
        self.restart()

    def finalize(self) -> None:
        """The last round's pruning, to exactly the target; the trainer then rewinds and trains the ticket."""
        self.prune_to(1.0 - self.target)
        self.round = self.rounds
        for p in self.weight_parameters():
            p.requires_grad_(False)
        super().finalize()

    def extra_state(self) -> dict:
        return {**super().extra_state(), "round": self.round, "pending": self.pending}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.round, self.pending = state["round"], state["pending"]

    def state(self) -> dict[str, float]:
        return {"round": float(self.round + 1)}

    @staticmethod
    def search_space(trial, regime: str = "strong") -> dict:
        """Optuna search space (`bench tune`): the pruning rate per round and the rewind epoch."""
        return {"rate": trial.suggest_float("rate", 0.1, 0.5), "rewind_epoch": trial.suggest_int("rewind_epoch", 0, 2)}

    def record(self) -> dict:
        return {**super().record(), "rounds": self.rounds, "rewind_epoch_used": self.rewind_epoch, "scope": "global",
                "rewind": "weights_and_bn_stats"}
