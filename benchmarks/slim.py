"""Physically slimmed structured tickets: units a ticket zeroed entirely are cut out with Torch-Pruning's
dependency graph (coupled channels as one group), and the result is checked to compute the masked ticket's
outputs. Used by `bench export --slim` and by the `slim` latency form (`benchmarks.cost`)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from benchmarks.errors import UserError


def slim(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """Physically remove every unit (output row or channel) the ticket zeroed entirely and that can go without
    changing any output, with Torch-Pruning's dependency graph, which also removes what the unit fed (the next
    layers' columns, BatchNorm entries). Channels coupled through a residual sum are one group: a channel goes
    only where every layer writing into it zeroed it (`removable`). Groups through operations whose channels
    do not stand alone (LayerNorm over them, attention heads' reshapes) are left whole. The classifier keeps
    its outputs. A removed unit whose bias (or BatchNorm shift) still sends a constant on is folded into the
    biases of the Linear layers it feeds (`fold_constants`); a group whose constant reaches a convolution,
    where zero padding makes it vary at the borders, stays whole. Checked: the slimmed model must give the
    masked one's outputs (max abs difference 1e-5, both computed in float64 so that fp32's summation order,
    which moves ResNet-50 logits of size 40 by 3e-5, does not hide or fake a change) on random inputs, else
    this fails."""
    import torch_pruning as tp

    from methods.mask import prunable_modules

    model.eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(4, *meta["input_shape"], generator=gen)
    before = in_float64(model, example)
    params = list(model.parameters())
    count = sum(p.numel() for p in params)
    with torch.enable_grad():  # the graph is traced through autograd
        for p in params:
            p.requires_grad_(True)
        with warnings.catch_warnings():  # a ViT's cls_token / pos_embed: their groups pass a LayerNorm, left whole
            warnings.simplefilter("ignore", UserWarning)
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        for p in params:
            p.requires_grad_(False)
    layers = prunable_modules(model)
    for name, module in layers[:-1]:  # the last layer is the classifier
        dead = (module.weight.flatten(1) == 0).all(dim=1).nonzero().flatten().tolist()
        if not dead:
            continue
        fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        idxs = removable(graph.get_pruning_group(module, fn, idxs=dead), dead)
        if not idxs or len(idxs) == module.weight.shape[0]:
            continue
        group = graph.get_pruning_group(module, fn, idxs=idxs)
        if not graph.check_pruning_group(group) or not fold_constants(model, group, example):
            continue
        group.prune()
    for p in model.parameters():
        p.requires_grad_(False)
    diff = (in_float64(model, example) - before).abs().max().item()
    if diff > 1e-5:
        raise UserError(f"cell {meta['cell']} ({meta['arch']}) cannot be slimmed exactly: outputs move by {diff:.2g} "
                        f"(computed in float64); export it without --slim")
    meta["parameters_slim"] = sum(p.numel() for p in model.parameters())
    meta["slimmed"] = meta["parameters_slim"] < count  # whether any unit was removed
    return model


@torch.no_grad()
def in_float64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs on `x` computed in float64 (on a copy)."""
    return copy.deepcopy(model).double()(x.double())


@torch.no_grad()
def fold_constants(model: nn.Module, group: Any, example: torch.Tensor) -> bool:
    """Before a group's units are cut out: for every layer that reads them (its input columns are in the
    group), the value those columns carry is measured on `example`; zero is fine; a constant (the same for
    every input and position) is added, times the columns' weights, to a Linear reader's bias, which then
    computes the same without them. Returns False, folding nothing, where a column varies or a constant would
    reach a convolution."""
    readers = [(item.dep.target.module, list(item.idxs)) for item in group.items
               if getattr(item.dep.handler, "__name__", "") == "prune_in_channels"
               and isinstance(item.dep.target.module, (nn.Linear, nn.Conv2d))]
    seen: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0].detach()))
             for m, _ in readers]
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
    folds = []
    for module, idxs in readers:
        x = seen[module].movedim(1, -1) if isinstance(module, nn.Conv2d) else seen[module]
        cols = x.reshape(-1, x.shape[-1])[:, idxs]
        if not cols.abs().max() > 0:
            continue
        if isinstance(module, nn.Conv2d) or (cols.amax(0) - cols.amin(0)).abs().max() > 1e-6 * cols.abs().max():
            return False
        folds.append((module, module.weight[:, idxs] @ cols[0]))
    for module, shift in folds:
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=shift.dtype), requires_grad=False)
        module.bias.add_(shift)
    return True


def removable(group: Any, dead: list[int]) -> list[int]:
    """The `dead` channels of a Torch-Pruning group's root that can be cut out exactly: none if the group passes
    through an operation whose channels do not stand alone (normalisation across channels, splits into attention
    heads, concatenations); else those that every layer writing into the coupled channels (a residual sum) zeroed too."""
    from torch_pruning import ops

    alone = {ops.OPTYPE.CONV, ops.OPTYPE.LINEAR, ops.OPTYPE.BN, ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.PRELU,
             ops.OPTYPE.DEPTHWISE_CONV, ops.OPTYPE.RESHAPE}  # reshapes: flatten, a token dimension, mapped by index
    bad: set[int] = set()
    for item in group.items:
        dep = item.dep
        if dep.target.type not in alone:
            return []
        writes = dep.target.type in (ops.OPTYPE.CONV, ops.OPTYPE.LINEAR, ops.OPTYPE.DEPTHWISE_CONV) and \
            getattr(dep.handler, "__name__", "") == "prune_out_channels"
        if writes:
            weight = dep.target.module.weight
            bad.update(int(r) for i, r in zip(item.idxs, item.root_idxs) if bool(weight[int(i)].any()))
    return [i for i in dead if i not in bad]
