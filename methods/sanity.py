"""Sanity checks for a found mask (Frankle et al., ICLR 2021, "Pruning neural networks at initialization:
why are we missing the mark?"). Each ablation keeps every layer's number of surviving weights:

- ``random``: a fresh uniformly random mask in each layer (same per-layer sparsity);
- ``shuffle``: the mask permuted within each output unit (same per-layer sparsity and the same fan-in for
  every neuron / filter, a stricter control than ``random``);
- ``reinit``: the same mask on freshly drawn weights (same init scheme, another seed).

If a method's accuracy survives an ablation, the information it found is in that statistic, not in the
mask's precise positions (or in their match with the weights).
"""

from __future__ import annotations

import torch

from methods.base import Pruner
from methods.init import init_weight

SANITY = ("none", "random", "shuffle", "reinit")


def ablate(pruner: Pruner, variant: str, seed: int) -> None:
    """Apply sanity ablation `variant` to the pruner's final masks (and weights, for ``reinit``)."""
    if variant not in SANITY:
        raise ValueError(f"unknown sanity check {variant!r}; choose from {', '.join(SANITY)}")
    if variant == "none" or pruner.dense:
        return
    gen = torch.Generator().manual_seed(10_007 + seed)  # independent of the streams that found the mask
    for mask in pruner.gated():
        m = mask.final.cpu()
        if variant == "random":
            flat = torch.zeros(m.numel(), dtype=torch.bool)
            flat[torch.randperm(m.numel(), generator=gen)[: int(m.sum())]] = True
            new = flat.view(m.shape)
        elif variant == "shuffle":
            rows = m.flatten(1) if m.dim() > 1 else m.view(1, -1)
            order = torch.rand(rows.shape, generator=gen).argsort(dim=1)
            new = rows.gather(1, order).view(m.shape)
        else:
            new = m
        mask.freeze(new.to(mask.final.device))
    if variant == "reinit":
        pruner.model.load_state_dict(pruner.rewind_state(), strict=False)
        state = torch.get_rng_state()
        torch.manual_seed(10_007 + seed)
        for _, module, _ in pruner.mask_modules():
            init_weight(module.parametrizations.weight.original, pruner.weight_init, density=1.0 - pruner.target)
        torch.set_rng_state(state)
        pruner.set_rewind_point()
