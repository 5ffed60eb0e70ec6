"""Frozen-weight initialisations for the strong-ticket regime.

Every scheme draws from ``torch``'s global generator, so a seeded run gives the same weights.
The ``scaled_*`` variants account for pruning: with density d a unit receives d * fan_in inputs,
so the variance-preserving scale uses fan_in * d. (The Edge-Popup code uses 1 - d there, its issue #9.)
The ``midscaled_*`` variants use fan_in * sqrt(d): variance-preserving at the geometric mean of the densities
a relaxed search runs through, from an open mask (1) to the target (d), so the activations are off by at
most d^(-1/4) per layer at either end instead of d^(-1/2) at one of them.

Every mask-search method searches over the same signed Kaiming constant (the same signs, drawn from the
same seed), scaled for the geometric mean of the densities its own search runs at: Edge-Popup's top-k is at
the target density d from the first step (``scaled``, fan_in * d); CRBG, CS and CTS relax from an open mask
down to d (``midscaled``, fan_in * sqrt(d)). The scale is a constant per layer: it does not change which
mask is best (a bias-free ReLU network's argmax is invariant to a positive constant per layer), only how the
search gets there. Measured on MNIST LeNet-300-100, strong regime, 10 epochs, seed 0, test % at sparsity
0.5 / 0.9 / 0.98:

| method | unscaled | scaled (d) | midscaled (sqrt d) |
|---|---|---|---|
| crbg | 95.80 / 96.54 / 89.84 | 96.54 / 96.41 / 28.75 | 96.32 / 97.42 / 96.36 |
| cs | 95.02 / 96.42 / 88.30 | 88.13 / 97.71 / 25.28 | 91.84 / 97.88 / 96.98 |
| cts | 97.53 / 96.31 / 88.18 | 97.61 / 97.11 / 95.44 | 97.57 / 97.58 / 96.54 |
| edgepopup | – | 97.68 / 97.69 / 9.80 | 97.65 / 97.32 / 93.33 |

Scaled by the target density, the relaxed methods (CRBG, CS, CTS start from an open mask) begin their
search with activations d^(-1/2) too large per layer (7x at 0.98: training losses of 20-75 in the first
epochs) and CRBG and CS end at 29 and 25 %; Edge-Popup (the target density from the first step) loses its
whole network at 0.98 (every unit dead from epoch 2, loss ln 10). Unscaled (94.7 % against 98.1 % for
Edge-Popup at 0.8) shrinks the final ticket's activations by sqrt(d) per layer instead. Midscaled would save
Edge-Popup at 0.98 but costs it 0.4 points at 0.9 over 10 epochs and 0.6-0.9 over 3 (96.28 / 95.69 at
0.5 / 0.9 against 96.9 / 96.6); its default stays matched to its own search (`--weight-init` overrides).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_WEIGHT_INIT = "midscaled_signed_constant"
WEIGHT_INITS = (
    "signed_constant",
    "kaiming_normal",
    "uniform",
    "scaled_signed_constant",
    "scaled_kaiming_normal",
    "scaled_uniform",
    "midscaled_signed_constant",
    "midscaled_kaiming_normal",
    "midscaled_uniform",
    "keep",
)


def fan_in(weight: Tensor) -> int:
    return weight[0].numel()


@torch.no_grad()
def init_weight(weight: Tensor, scheme: str, density: float = 1.0) -> None:
    """Re-initialise `weight` in place with `scheme` (one of `WEIGHT_INITS`; ``keep`` leaves it)."""
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"unknown weight init {scheme!r}; choose from {', '.join(WEIGHT_INITS)}")
    if scheme == "keep":
        return
    base = scheme.removeprefix("scaled_").removeprefix("midscaled_")
    fan = fan_in(weight) * (density if scheme.startswith("scaled_") else
                            math.sqrt(density) if scheme.startswith("midscaled_") else 1.0)
    if base == "signed_constant":
        weight.normal_().sign_().mul_(math.sqrt(2.0 / fan))
        weight[weight == 0] = math.sqrt(2.0 / fan)
    elif base == "kaiming_normal":
        weight.normal_(0.0, math.sqrt(2.0 / fan))
    else:  # uniform, alpha = sqrt(6 / fan_in): the Kaiming-uniform bound
        bound = math.sqrt(6.0 / fan)
        weight.uniform_(-bound, bound)


def init_weights(modules: list, scheme: str) -> None:
    """`init_weight` at density 1 for the weight of each module, in order (layers left unmasked)."""
    for module in modules:
        init_weight(module.weight, scheme)
