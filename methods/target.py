"""Target-sparsity control shared by the penalty-based methods (CRBG, Continuous Sparsification).

A penalty weight lambda is a dual variable updated every step so that the density of the binary mask
follows a cubic ramp (Zhu and Gupta 2017) from where it starts down to 1 - target; an exact global
projection at the end (`Pruner.project_global`) then removes the last few hundredths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from methods.base import Hparams

TARGET_MODES = ("dual+project", "dual", "project", "none")


@dataclass
class TargetHparams(Hparams):
    """The target-control knobs of a `TargetControlled` method (its own `lam`, the initial lambda, beside)."""

    method: ClassVar[str]
    lam_lr: float = 0.01
    lam_down: float = 10.0
    ramp: float = 0.5
    target_mode: str = "dual+project"

    def __post_init__(self) -> None:
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"{self.method}.target_mode must be one of {', '.join(TARGET_MODES)}, "
                             f"got {self.target_mode!r}")


class DensityController:
    """Dual ascent in log space on the constraint ``density <= ramp(step)``.

    The relative error is clipped to [-1, 1]. A mask entry pushed far below its threshold loses its task
    gradient, so an overshoot is hard to undo: lambda falls `down` times faster than it rises. lambda lives
    on the device, so the update needs no host-device sync.
    """

    def __init__(self, lam: float, lr: float, down: float, ramp: float, target_density: float,
                 start_density: float, device: torch.device) -> None:
        self.log_lam = torch.tensor(math.log(lam), device=device)
        self.lr, self.down, self.ramp = lr, down, ramp
        self.final = target_density
        self.start = max(target_density, start_density)
        self.total_steps = 1

    @property
    def lam(self) -> Tensor:
        return self.log_lam.exp()

    def to(self, device: torch.device) -> None:
        self.log_lam = self.log_lam.to(device)

    def target(self, step: int) -> float:
        """Cubic ramp from the starting density to the final one over the first `ramp` fraction of steps."""
        t = min(1.0, step / max(1.0, self.ramp * self.total_steps))
        return self.final + (self.start - self.final) * (1.0 - t) ** 3

    def update(self, density: Tensor, step: int) -> None:
        err = (density / self.target(step) - 1.0).clamp(-1.0, 1.0)
        rate = self.lr * torch.where(err < 0, self.down, 1.0)
        self.log_lam = (self.log_lam + rate * err).clamp(-12.0, 12.0)


class TargetControlled:
    """Mixin for a `Pruner` whose penalty weight lambda is steered to the target (hyperparameters: a
    `TargetHparams` with `lam`): dual updates after every step, the exact global
    projection at the end, and lambda in checkpoints. The host defines `density()`, the current density of
    its binary mask, and calls `init_control()` once its masks exist and `start_control(total_steps)`
    when it builds its optimiser."""

    def init_control(self) -> None:
        self.control = DensityController(self.hp.lam, self.hp.lam_lr, self.hp.lam_down, self.hp.ramp,
                                         1.0 - self.target, float(self.density()), self.device)

    def start_control(self, total_steps: int) -> None:
        self.control.total_steps = total_steps
        self.control.to(self.device)  # the trainer may have moved the model

    def on_step(self, step: int) -> None:
        if "dual" in self.hp.target_mode:
            self.control.update(self.density(), step)

    def finalize(self) -> None:
        if "project" in self.hp.target_mode:
            self.project_global(1.0 - self.target)
        else:
            super().finalize()

    def extra_state(self) -> dict:
        return {**super().extra_state(), "log_lam": self.control.log_lam}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.control.log_lam = state["log_lam"].to(self.device)
