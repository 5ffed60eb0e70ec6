"""Sparsity accounting and exact selection: per-layer and global counts of a mask (`SparsityReport`), the
columns a structured mask removes downstream in a plain chain, and exact top-k selection.

Sparsity vocabulary follows ``shared/specs/README.md``: sparsity is the fraction of prunable weights
(Linear and Conv weights; biases and norms are never counted) that the final binary mask removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    weights: int
    kept: int
    units: int | None = None
    units_kept: int | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.weights


@dataclass
class SparsityReport:
    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.weights if self.weights else 0.0

    @property
    def collapsed(self) -> list[str]:
        """Layers with every weight pruned (layer collapse: the network is cut)."""
        return [layer.name for layer in self.layers if layer.kept == 0]

    @property
    def unit_sparsity(self) -> float | None:
        gated = [layer for layer in self.layers if layer.units is not None]
        if not gated:
            return None
        return 1.0 - sum(layer.units_kept for layer in gated) / sum(layer.units for layer in gated)


def topk_mask(x: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly the `k` largest entries of a 1-D tensor (exact count, ties included)."""
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    keep[torch.topk(x.float(), k, sorted=False).indices] = True
    return keep


def keep_global(scores: list[Tensor], density: float) -> list[Tensor]:
    """Boolean masks shaped like `scores` keeping exactly the `density` fraction of all their entries with
    the largest scores, compared across tensors (at least one entry)."""
    flat = torch.cat([s.flatten() for s in scores])
    keep = topk_mask(flat, max(1, round(density * flat.numel())))
    return [part.view(s.shape) for part, s in zip(keep.split([s.numel() for s in scores]), scores)]


def keep_proportional(scores: list[Tensor], kept: list[int], density: float) -> list[Tensor]:
    """Boolean masks shaped like `scores` keeping exactly the `density` fraction of all their entries, each
    tensor's share in proportion to `kept` (its entries kept now; largest remainders round), by score within
    the tensor. A search that ends off its target by e per cent then changes every layer's density by about e
    per cent, where a global cut would fall on whichever layer's scores sit nearest its threshold."""
    sizes = [s.numel() for s in scores]
    total = max(1, round(density * sum(sizes)))
    n_kept = sum(kept)
    if n_kept == 0:
        return keep_global(scores, density)
    ideal = [k * total / n_kept for k in kept]
    quota = [min(n, int(q)) for n, q in zip(sizes, ideal)]
    for i in sorted(range(len(sizes)), key=lambda i: ideal[i] - quota[i], reverse=True):
        if sum(quota) == total:
            break
        if quota[i] < sizes[i]:
            quota[i] += 1
    for i in range(len(sizes)):  # what no remainder took (full layers) goes to any layer with room
        quota[i] += min(sizes[i] - quota[i], total - sum(quota))
    return [topk_mask(s.flatten(), q).view(s.shape) for s, q in zip(scores, quota)]


def kth_largest(x: Tensor, k: int) -> Tensor:
    """The k-th largest value of a 1-D tensor, by selection (no full sort)."""
    return torch.kthvalue(x, x.numel() - k + 1).values


def chained_inputs(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Map each prunable module to the prunable module that feeds it, where that is certain.

    Only models that are one `nn.Sequential` of prunable layers separated by shape-preserving
    element-wise modules (activations, pooling, dropout, flatten) qualify; for anything else
    (residual nets, transformers) the map is empty and structured sparsity counts rows only.
    """
    if not isinstance(model, nn.Sequential):
        return {}
    passthrough = (nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity, nn.BatchNorm1d,
                   nn.BatchNorm2d, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.PReLU)
    names = {id(m): n for n, m in layers}
    feeds, prev = {}, None
    for child in model.children():
        if id(child) in names:
            if prev is not None:
                feeds[names[id(child)]] = prev
            prev = names[id(child)]
        elif not isinstance(child, passthrough):
            return {}
    return feeds


def remove_dead_columns(model: nn.Module, layers: list[tuple[str, nn.Module]], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Zero the input columns of each layer whose feeding unit is gated off (structured accounting)."""
    out = dict(masks)
    for name, src in chained_inputs(model, layers).items():
        alive = out[src].flatten(1).any(dim=1)  # units of the feeding layer with any weight kept
        m = out[name]
        per_unit = m.shape[1] // alive.numel()  # >1 after flattening conv channels into features
        col = alive.repeat_interleave(per_unit) if per_unit > 0 else alive
        if col.numel() != m.shape[1]:
            continue
        out[name] = m & col.view(1, -1, *([1] * (m.dim() - 2)))
    return out


def layer_report(masks: dict[str, Tensor], units: dict[str, Tensor]) -> SparsityReport:
    """The report of binary `masks` (layer -> full-shape mask), with the unit masks of structured layers."""
    rep = SparsityReport()
    for name, m in masks.items():
        unit = units.get(name)
        rep.layers.append(LayerSparsity(name, tuple(m.shape), m.numel(), int(m.sum()),
                                        None if unit is None else unit.numel(), None if unit is None else int(unit.sum())))
    return rep
