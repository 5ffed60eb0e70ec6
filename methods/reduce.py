"""Sums whose value does not depend on the number of CPU threads.

PyTorch splits a full reduction of a large CPU tensor (``x.sum()``, ``a.dot(b)``) into one partial sum per
thread, so its last bits change with the thread count, and a search that feeds such a sum back into its
updates (CTS's gradient balancing) ends with another mask under another executor. `total` sums fixed
blocks of `BLOCK` elements (each block reduced by one thread, in one order) and then the block sums
(fewer than PyTorch's parallel grain, so serially): the same value at any thread count, on CPU and CUDA.
"""

from __future__ import annotations

from torch import Tensor

BLOCK = 4096


def total(x: Tensor) -> Tensor:
    """``x.sum()`` (a 0-d tensor, differentiable) computed in fixed blocks: invariant to the thread count."""
    flat = x.reshape(-1)
    whole = flat.numel() // BLOCK * BLOCK
    if whole == 0:
        return flat.sum()
    return flat[:whole].view(-1, BLOCK).sum(1).sum() + flat[whole:].sum()


def squared_norm(x: Tensor) -> Tensor:
    """``x.flatten().dot(x.flatten())`` as a `total`: invariant to the thread count."""
    return total(x * x)
