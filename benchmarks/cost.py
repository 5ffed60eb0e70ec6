"""What a ticket costs: multiply-adds for one input and bytes to store, per cell and per layer.

Conventions (README, "Definitions"):
- ``flops`` / ``flops_dense``: multiply-accumulates (MACs) of one forward pass on one input, as PyTorch's
  ``torch.utils.flop_counter`` counts them (matrix products and convolutions; it counts 2 FLOPs per MAC, we
  halve). The ticket's count scales each masked layer by the fraction of its weights the mask keeps (every
  weight of a Linear or Conv layer is used the same number of times per input); everything else (attention
  products, unmasked layers) counts in full.
- ``bytes_dense``: the model's own parameters in fp32 (mask state excluded).
- ``bytes_ticket``: what must be stored to rebuild the ticket. Strong regime: the seed (8 bytes) plus the
  mask packed at 1 bit per prunable weight and compressed with LZMA (the weights are regenerated from the
  seed). Weak and joint regimes: the kept weights in fp32 plus that compressed mask (their positions) plus
  every unmasked trained parameter in fp32. ``bytes_mask_raw``: the mask at 1 bit per prunable weight.
"""

from __future__ import annotations

import lzma
import math

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from methods import Pruner

SEED_BYTES = 8


@torch.no_grad()
def layer_macs(pruner: Pruner, input_shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """Dense MACs of the whole model and of each masked layer, for one input (masks open)."""
    model = pruner.model
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape, device=pruner.device)
    with pruner.masks_open(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    per_module = {name.partition(".")[2]: sum(ops.values()) // 2 for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops() // 2, {name: per_module.get(name, 0) for name, _ in pruner.layers}


def mask_bytes(masks: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(raw 1-bit size, LZMA-compressed size) of every mask, concatenated in layer order."""
    bits = np.concatenate([m.flatten().numpy().astype(np.uint8) for m in masks.values()])
    packed = np.packbits(bits).tobytes()
    return math.ceil(bits.size / 8), len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME))


def ticket_cost(pruner: Pruner, input_shape: tuple[int, ...]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The cell's cost columns and, per masked layer, its dense and ticket MACs."""
    report = pruner.report()
    total, dense_layers = layer_macs(pruner, input_shape)
    kept = {layer.name: layer.kept / layer.weights for layer in report.layers}
    ticket_layers = {name: round(macs * kept[name]) for name, macs in dense_layers.items()}
    flops = total - sum(dense_layers.values()) + sum(ticket_layers.values())
    params = pruner.weight_parameters()
    masked = {id(module.parametrizations.weight.original) for _, module in pruner.layers}
    dense_bytes = 4 * sum(p.numel() for p in params)
    raw, packed = mask_bytes(pruner.masks())
    if pruner.regime == "strong":
        ticket = SEED_BYTES + packed
    else:  # trained weights: the kept values, their positions, and the unmasked trained parameters
        ticket = 4 * report.kept + packed + 4 * sum(p.numel() for p in params if id(p) not in masked)
    columns = {"flops": flops, "flops_dense": total, "bytes_dense": dense_bytes, "bytes_ticket": ticket,
               "bytes_mask_raw": raw}
    layers = {name: {"flops": ticket_layers[name], "flops_dense": dense_layers[name]} for name in dense_layers}
    return columns, layers
