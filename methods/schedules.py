"""Learning-rate schedules shared by every method (stepped once per optimiser step)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "constant", "late_decay")
REFERENCE_STEPS = 4220  # 10 epochs of MNIST's 54,000 training images at batch 128: where the rates were set


def per_search_lr(lr: float, ref_steps: int, total_steps: int) -> float:
    """The per-step learning rate for a search of `total_steps` when `lr` is the rate of a search of
    `ref_steps` steps: lr x ref_steps / total_steps, so a mask parameter can travel the same distance in
    the same fraction of any search. `ref_steps` 0: `lr` is per step, whatever the search's length."""
    return lr * ref_steps / max(1, total_steps) if ref_steps else lr


def lr_schedule(opt: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int = 0):
    """A LambdaLR: linear warm-up for `warmup_steps`, then `name`: cosine to zero, constant, or
    late_decay (x0.1 for the last quarter of the steps)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "late_decay":
            return 0.1 if step >= 0.75 * total_steps else 1.0
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
