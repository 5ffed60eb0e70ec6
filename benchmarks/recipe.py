"""The weight-training recipe: a settings group of its own (OpenLTH's "training hparams").

It trains the surviving weights of weak-regime tickets, the dense reference and CTS's dense pre-training.
Every field is a `bench run --train-<field>` flag, a key of the YAML ``train:`` mapping, part of the cell
id when it differs from its default, and a ``train_<field>`` row column. The default is the suite's
standard recipe (SGD, momentum 0.9, weight decay 1e-4, cosine) at each architecture's own rate; the
lottery-ticket papers' LeNet-300-100 recipe (Adam 1.2e-3, batch 60) is ``--train-optimizer adam
--train-lr 1.2e-3 --train-weight-decay 0 --train-schedule constant --batch-size 60`` (momentum 0.9 is
Adam's default beta1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from benchmarks.settings import setting

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
TRAIN_SCHEDULES = ("cosine", "constant", "step")
DEFAULT_LR = 0.1


@dataclass(frozen=True)
class Recipe:
    """How weights are trained. `lr` 0 stands for the architecture's own rate (`register_model(train_lr=)`)."""

    optimizer: str = setting("sgd", "weight-training optimiser (nesterov: SGD with Nesterov momentum)", OPTIMIZERS)
    lr: float = setting(0.0, "weight-training learning rate; 0: the architecture's own (0.1; Conv-N 0.01)")
    momentum: float = setting(0.9, "SGD momentum, or Adam's beta1")
    weight_decay: float = setting(1e-4, "weight decay (decoupled for adamw)")
    schedule: str = setting("cosine", "learning-rate schedule after the warm-up", TRAIN_SCHEDULES)
    milestones: str = setting("0.5,0.75", "step schedule: fractions of training where the rate is multiplied by gamma")
    gamma: float = setting(0.1, "step schedule: the factor at each milestone")
    warmup_epochs: int = setting(0, "epochs of linear warm-up from 0 to the rate")

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in TRAIN_SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(TRAIN_SCHEDULES)}, got {self.schedule!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            problems.append(f"lr must be >= 0 (0: the architecture's own), got {self.lr}")
        if not 0 <= self.momentum < 1 or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append("momentum must be in [0, 1) and weight_decay >= 0")
        if not (math.isfinite(self.gamma) and self.gamma > 0) or self.warmup_epochs < 0:
            problems.append("gamma must be > 0 and warmup_epochs >= 0")
        try:
            marks = self.milestone_fractions
        except ValueError:
            marks = [-1.0]
        if any(not 0 < m < 1 for m in marks):
            problems.append(f"milestones must be comma-separated fractions in (0, 1), got {self.milestones!r}")
        if problems:
            raise ValueError("train recipe: " + "; ".join(problems))

    @property
    def milestone_fractions(self) -> list[float]:
        return [float(m) for m in str(self.milestones).split(",") if m.strip()]

    def for_arch(self, arch: str) -> Recipe:
        """This recipe with `lr` 0 replaced by the architecture's own rate."""
        from benchmarks.zoo import TRAIN_LR

        if self.lr:
            return self
        return Recipe(**{**self.to_dict(), "lr": TRAIN_LR.get(arch, DEFAULT_LR)})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def overrides(self) -> tuple[tuple[str, Any], ...]:
        """The fields that differ from the defaults, sorted: what enters a cell id."""
        default = Recipe()
        return tuple(sorted((k, v) for k, v in self.to_dict().items() if v != getattr(default, k)))

    def make_optimizer(self, params: list):
        """The optimiser over `params` (call on a recipe resolved by `for_arch`)."""
        import torch

        if self.optimizer in ("sgd", "nesterov"):
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.optimizer == "nesterov" and self.momentum > 0)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=(self.momentum, 0.999), weight_decay=self.weight_decay)

    def make_schedule(self, opt, total_steps: int, steps_per_epoch: int):
        """Per-step schedule: linear warm-up, then cosine to zero, constant, or steps at the milestones."""
        import torch

        warmup = min(total_steps, self.warmup_epochs * steps_per_epoch)
        marks = [m * total_steps for m in self.milestone_fractions]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if self.schedule == "constant":
                return 1.0
            if self.schedule == "step":
                return self.gamma ** sum(step >= m for m in marks)
            t = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
