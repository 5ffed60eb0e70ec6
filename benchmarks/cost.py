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
- ``latency_ms_<form>_b<batch>`` (``--measure-latency``): median CPU milliseconds of one forward pass, for
  the dense model, the ticket with zeros in dense weights (``masked``) and with its Linear layers as
  ``torch.sparse`` CSR matrices (``csr``), at batch 1 and 64, measured in one process with ``latency_threads``
  threads. Measured on the machine that ran the cell, never estimated.
"""

from __future__ import annotations

import copy
import lzma
import math
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.errors import UserError
from benchmarks.slim import slim
from methods import Pruner
from methods.sparsity import SparsityReport

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


def ticket_cost(pruner: Pruner, input_shape: tuple[int, ...], report: SparsityReport,
                masks: dict[str, torch.Tensor]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The cell's cost columns and, per masked layer, its dense and ticket MACs, from the pruner's final
    `report` and `masks` (as the caller already has them)."""
    total, dense_layers = layer_macs(pruner, input_shape)
    kept = {layer.name: layer.kept / layer.weights for layer in report.layers}
    ticket_layers = {name: round(macs * kept[name]) for name, macs in dense_layers.items()}
    flops = total - sum(dense_layers.values()) + sum(ticket_layers.values())
    params = pruner.weight_parameters()
    masked = {id(module.parametrizations.weight.original) for _, module in pruner.layers}
    dense_bytes = 4 * sum(p.numel() for p in params)
    raw, packed = mask_bytes(masks)
    if pruner.regime == "strong":
        ticket = SEED_BYTES + packed
    else:  # trained weights: the kept values, their positions, and the unmasked trained parameters
        ticket = 4 * report.kept + packed + 4 * sum(p.numel() for p in params if id(p) not in masked)
    columns = {"flops": flops, "flops_dense": total, "bytes_dense": dense_bytes, "bytes_ticket": ticket,
               "bytes_mask_raw": raw}
    layers = {name: {"flops": ticket_layers[name], "flops_dense": dense_layers[name]} for name in dense_layers}
    return columns, layers


class CSRLinear(nn.Module):
    """A Linear layer whose weight is a ``torch.sparse`` CSR matrix (the kept weights only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.reshape(-1, x.shape[-1]).T).T.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def plain_copy(pruner: Pruner, masked: bool) -> nn.Module:
    """A copy of the pruner's model without parametrizations: each masked layer holds its weight times the
    final mask (`masked`) or its original weight. (Removing a parametrization deletes the property from the
    module's class, which a deep copy shares with the original, so the copy is given its plain class instead.)"""
    was_training = pruner.model.training
    pruner.model.eval()  # a masked weight read in eval mode is the binary-masked one
    model = copy.deepcopy(pruner.model).eval()
    with torch.no_grad():
        for layer, original in pruner.layers:
            module = model.get_submodule(layer)
            w = original.weight if masked else original.parametrizations.weight.original
            module.__class__ = type(original).__bases__[0]
            del module.parametrizations
            module.weight = nn.Parameter(w.detach().clone(), requires_grad=False)
    pruner.model.train(was_training)
    return model


def deployable_forms(pruner: Pruner, input_shape: tuple[int, ...]) -> dict[str, nn.Module]:
    """The dense model and the ticket as it could ship: ``masked`` (dense weights with zeros), ``csr`` (its
    Linear layers as CSR matrices; convolutions stay dense) and, for a structured ticket that slims exactly
    (`benchmarks.slim`), ``slim`` (the removed units physically gone). Copies; the pruner is untouched."""
    forms = {"dense": plain_copy(pruner, masked=False), "masked": plain_copy(pruner, masked=True)}
    csr = copy.deepcopy(forms["masked"])
    for layer, module in pruner.layers:
        if isinstance(module, nn.Linear):
            parent, _, child = layer.rpartition(".")
            setattr(csr.get_submodule(parent) if parent else csr, child, CSRLinear(csr.get_submodule(layer)))
    forms["csr"] = csr
    if pruner.structured:
        try:
            forms["slim"] = slim(copy.deepcopy(forms["masked"]), {"cell": "", "arch": "", "input_shape": input_shape})
        except UserError:  # a removed unit still sends a constant on: no exact slim form to time
            pass
    return forms


def latency(pruner: Pruner, input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 64),
            repeats: int = 30) -> dict[str, float]:
    """Median CPU wall time (ms) of one forward pass of each deployable form at each batch size, measured in
    this process, forms interleaved repeat by repeat (so drift hits all alike) after three warm-up passes."""
    with torch.no_grad():
        forms = {k: m.cpu() for k, m in deployable_forms(pruner, input_shape).items()}
    out: dict[str, float] = {"latency_threads": torch.get_num_threads()}
    for batch in batches:
        x = torch.randn(batch, *input_shape)
        times: dict[str, list[float]] = {name: [] for name in forms}
        for r in range(repeats + 3):
            for name, model in forms.items():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    model(x)
                if r >= 3:
                    times[name].append(time.perf_counter() - t0)
        out.update({f"latency_ms_{name}_b{batch}": round(1e3 * statistics.median(t), 4) for name, t in times.items()})
    return out
