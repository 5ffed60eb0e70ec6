"""Learning-rate schedules shared by every method (stepped once per optimiser step)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "constant", "late_decay")
REFERENCE_STEPS = 4220  # 10 epochs of MNIST's 54,000 training images at batch 128: where the rates were set
# Per-search rates hold down to this search length (a tenth of the reference); a shorter search keeps the
# per-step rates of one this long, so its parameters travel proportionally less. Without the floor a 15-step
# search stepped Adam at 280x the reference rate and drove CRBG's lambda to its clamp (9.8 % at 0.9).
MIN_SEARCH_STEPS = REFERENCE_STEPS // 10


def search_length(total_steps: int) -> int:
    """The length a per-search rate is spread over: the search's steps, at least `MIN_SEARCH_STEPS`."""
    return max(MIN_SEARCH_STEPS, total_steps)


def per_search_lr(lr: float, ref_steps: int, total_steps: int) -> float:
    """The per-step learning rate for a search of `total_steps` when `lr` is the rate of a search of
    `ref_steps` steps: lr x ref_steps / `search_length`, so a mask parameter can travel the same distance in
    the same fraction of any search of at least `MIN_SEARCH_STEPS`. `ref_steps` 0: `lr` is per step."""
    return lr * ref_steps / search_length(total_steps) if ref_steps else lr


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
