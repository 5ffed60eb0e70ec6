"""The mask parametrization every method builds on: `Mask` (``W -> W * mask`` via
``torch.nn.utils.parametrize``, so any torchvision or timm model runs unchanged), the fused `MaskedWeight`
node, the open and fixed masks, and which modules are prunable."""

from __future__ import annotations

import fnmatch
from abc import abstractmethod

import torch
from torch import Tensor, nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_modules(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    """Every Linear/Conv module of `model` whose name matches none of the `exclude` glob patterns."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    ]


class Mask(nn.Module):
    """Parametrization ``W -> W * mask``.

    During search (``training=True``) the subclass's `search_mask` decides the (possibly relaxed)
    mask. In evaluation the mask is always binary: the frozen final mask once `freeze` was called,
    else the method's current `binary_mask`. ``structured`` masks have one entry per output unit and
    are broadcast over the rest of the weight.
    """

    def __init__(self, weight: Tensor, structured: bool) -> None:
        super().__init__()
        self.structured = structured
        self.weight_shape = tuple(weight.shape)
        self.bypass = False  # True: the mask is open (the dense network), see `Pruner.masks_open`
        self.register_buffer("final", None)
        self._cast: tuple[tuple[Tensor, int, torch.dtype], Tensor | None] | None = None  # see `_frozen`

    @property
    def mask_shape(self) -> tuple[int, ...]:
        return (self.weight_shape[0],) if self.structured else self.weight_shape

    def _broadcast(self, m: Tensor) -> Tensor:
        return m.view(-1, *([1] * (len(self.weight_shape) - 1))) if self.structured else m

    @abstractmethod
    def search_mask(self) -> Tensor:
        """The mask used in a training forward pass (float, differentiable w.r.t. the method's params)."""

    @abstractmethod
    def binary_mask(self) -> Tensor:
        """The current binary mask (bool, shape `mask_shape`)."""

    @abstractmethod
    def scores(self) -> Tensor:
        """A detached score per mask entry, larger = more important (used for exact projections)."""

    def freeze(self, mask: Tensor) -> None:
        self.final = mask.to(torch.bool)

    def current_mask(self) -> Tensor:
        return self.final if self.final is not None else self.binary_mask()

    @torch.compiler.disable  # eager under torch.compile: `mask_grad` reads per-step state (armed penalties)
    def forward(self, weight: Tensor) -> Tensor:
        if self.bypass:
            return weight
        if self.final is not None:
            m = self._frozen(weight.dtype)
            return weight if m is None else weight * m
        if self.training:
            return self.search_forward(weight)
        return weight * self._broadcast(self.binary_mask()).to(weight.dtype)

    def _frozen(self, dtype: torch.dtype) -> Tensor | None:
        """The frozen mask broadcast and cast to `dtype`, or None when it keeps every weight; cached until
        `final` is replaced or written to (the check that it is all ones syncs once per change)."""
        key = self._cast[0] if self._cast is not None else None
        if key is None or key[0] is not self.final or key[1] != self.final._version or key[2] != dtype:
            keep_all = bool(self.final.all())
            cast = None if keep_all else self._broadcast(self.final).to(dtype)
            self._cast = ((self.final, self.final._version, dtype), cast)
        return self._cast[1]

    def search_forward(self, weight: Tensor) -> Tensor:
        """The weight as the search sees it: ``weight * search_mask()``. A method makes it one autograd node
        (`MaskedWeight`) by overriding this and defining `mask_grad`."""
        return weight * self._broadcast(self.search_mask()).to(weight.dtype)

    def mask_grad(self, grad_m: Tensor, m: Tensor) -> Tensor:
        """dL/d(mask parameter) from dL/dm, for a mask `m` built by `MaskedWeight` (may work in place),
        plus the gradient of any penalty armed by `Pruner.penalty` since the last backward."""
        raise NotImplementedError


class MaskedWeight(torch.autograd.Function):
    """``weight * m`` as one autograd node, for a mask `m` computed without autograd from `param`.

    Autograd would record every element-wise step of the mask and replay each one backwards; here the
    backward is ``dL/dW = g m`` and ``dL/dparam = mask.mask_grad(sum over each entry's weights of g W, m)``,
    one or two passes. Usage: ``MaskedWeight.apply(weight, param, m, mask)``.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, param: Tensor, m: Tensor, mask: Mask) -> Tensor:
        ctx.save_for_backward(weight, m)
        ctx.mask = mask
        return weight * mask._broadcast(m).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, m = ctx.saved_tensors
        mb = ctx.mask._broadcast(m)
        # A Linear layer's weight gradient arrives transposed in memory; writing the products in the
        # weight's own layout costs one strided pass here instead of one in every later element-wise op
        grad_w = torch.mul(grad, mb, out=torch.empty_like(weight)) if ctx.needs_input_grad[0] else None
        grad_m = torch.mul(grad, weight, out=torch.empty_like(weight)).sum_to_size(mb.shape).view(m.shape)
        return grad_w, ctx.mask.mask_grad(grad_m, m), None, None


class OpenMask(Mask):
    """A mask that is all ones until `freeze` sets it (one-shot methods, dense, fixed layers)."""

    def __init__(self, weight: Tensor, structured: bool) -> None:
        super().__init__(weight, structured)
        self.freeze(torch.ones(self.mask_shape, dtype=torch.bool, device=weight.device))

    def search_mask(self) -> Tensor:
        return self.final

    def binary_mask(self) -> Tensor:
        return self.final

    def scores(self) -> Tensor:
        return self.final.float()


class FixedMask(OpenMask):
    """An all-ones mask: the structured classifier, whose output units are the classes, is never gated."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__(weight, structured=True)
