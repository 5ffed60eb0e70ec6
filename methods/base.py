"""The `Pruner` interface shared by every method, and the mask parametrization it builds on.

A pruner attaches one `Mask` parametrization (``torch.nn.utils.parametrize``) to the weight of every
prunable module, so any torchvision or timm model runs unchanged. A method subclasses `Mask`
(what the mask is during search) and `Pruner` (its optimiser, penalty and schedules).

Sparsity vocabulary follows ``shared/specs/README.md``: sparsity is the fraction of prunable weights
(Linear and Conv weights; biases and norms are never counted) that the final binary mask removes.
"""

from __future__ import annotations

import contextlib
import fnmatch
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable, Iterator, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from methods.init import DEFAULT_WEIGHT_INIT, init_weight

Granularity = Literal["unstructured", "structured"]
Regime = Literal["strong", "weak", "joint"]
REGIMES: tuple[str, ...] = ("strong", "weak", "joint")
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


def later(default: Any) -> Any:
    """Declare a dataclass field added after results were published: cell ids omit it while it holds its
    default, so old results keep their ids (every field of a `Hparams` or `Cell` added from now on uses it)."""
    return field(default=default, metadata={"omit_if_default": True})


def without_later_defaults(settings: dict[str, Any], cls: Any) -> dict[str, Any]:
    """`settings` (field -> value of dataclass `cls`) as they enter a cell id: `later` fields at their
    default are left out."""
    omit = {f.name: f.default for f in fields(cls) if f.metadata.get("omit_if_default")}
    return {k: v for k, v in settings.items() if k not in omit or v != omit[k]}


def identity(obj: Any) -> dict[str, Any]:
    """A dataclass's settings as they enter a cell id: every field, except `later` ones at their default."""
    return without_later_defaults({f.name: getattr(obj, f.name) for f in fields(obj)}, type(obj))


@dataclass
class Hparams:
    """Base for a method's hyperparameters: a typed dataclass that is the single source of truth."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchContext:
    """What the trainer lends a method before its search (`Pruner.prepare`)."""

    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]  # one epoch of (input, label), no augmentation
    train_weights: Callable[[int], None]  # train the (masked) model's weights for n epochs, standard recipe
    criterion: Callable[[Tensor, Tensor], Tensor]
    # the cell's weight-training recipe over `params` for `steps` steps: (optimiser, per-step LR schedule)
    weight_optimizer: Callable[[list[nn.Parameter], int], tuple[torch.optim.Optimizer, Any]] | None = None


class Pruner(ABC):
    """A method that finds a binary mask over a model's prunable weights.

    Life cycle, driven by the trainer::

        pruner = get_method("crbg")(model, sparsity=0.9, granularity="unstructured", regime="strong")
        pruner.prepare(ctx)               # one-shot scoring, dense pre-training (optional)
        opt, sched = pruner.optimizer(total_steps)          # only when `searches`
        loss = pruner.loss(model, x, y, criterion); loss.backward(); pruner.before_step(); opt.step()
        pruner.on_step(step); pruner.on_epoch(epoch)
        pruner.finalize()                 # fixes the final binary mask (exact projection etc.)
        # weak regime: the trainer loads `pruner.rewind_state()` and trains the surviving weights
        pruner.masks(), pruner.report(), pruner.bake()
    """

    name: ClassVar[str]
    Hparams: ClassVar[type[Hparams]]
    granularities: ClassVar[tuple[str, ...]] = ("unstructured",)
    mask_cls: ClassVar[type[Mask]]
    searches: ClassVar[bool] = True  # runs the epoch loop; False: the mask is fixed by `prepare` (one-shot)
    augment_search: ClassVar[bool] = True  # data augmentation during the search
    weight_init: ClassVar[str] = DEFAULT_WEIGHT_INIT  # the strong regime's init when the sweep says "auto"
    dense: ClassVar[bool] = False  # no mask at all: target sparsity 0, trained in both regimes
    regimes: ClassVar[tuple[str, ...]] = REGIMES  # the regimes the method has a meaning in

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        granularity: Granularity = "unstructured",
        hparams: Hparams | None = None,
        exclude: tuple[str, ...] = (),
        weight_init: str = "auto",
        regime: Regime = "strong",
    ) -> None:
        if self.dense and sparsity != 0.0:
            raise ValueError(f"method {self.name!r} keeps every weight: its target sparsity is 0, got {sparsity}")
        if not self.dense and not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
        if granularity not in self.granularities:
            raise ValueError(f"method {self.name!r} supports granularity {self.granularities}, not {granularity!r}")
        if regime not in REGIMES:
            raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
        if regime not in self.regimes:
            raise ValueError(f"method {self.name!r} runs in the {' or '.join(self.regimes)} regime only, not {regime!r}")
        if regime == "joint" and not (self.searches or self.dense):
            raise ValueError(f"method {self.name!r} fixes its mask before any training, so the joint regime (weights "
                             f"and mask found together) does not apply to it; use the weak regime")
        self.model = model
        self.target = sparsity
        self.granularity = granularity
        self.regime = regime
        self.hp = hparams if hparams is not None else self.Hparams()
        self.weight_init = self.default_init(regime) if weight_init == "auto" else weight_init
        self.structured = granularity == "structured"
        self.layers = prunable_modules(model, exclude)
        if not self.layers:
            raise ValueError("the model has no prunable (Linear/Conv) module left after exclusions")
        self.extra_epochs = 0  # data passes a method spends outside the search loop (dense pre-training)
        self.ctx: SearchContext | None = None  # what the trainer lends, set before `prepare` and on a resume
        self._attach()
        self._rewind = self.weight_state()

    @classmethod
    def default_init(cls, regime: str) -> str:
        """The weights a method starts from by default: in the weak and joint regimes every method starts from
        the standard Kaiming-normal init, whose weights are then trained; in the strong regime the method's own
        choice (the scaled signed constant for mask-search methods)."""
        return cls.weight_init if regime == "strong" else "kaiming_normal"

    # -- construction -------------------------------------------------------------------------
    def _attach(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        last = self.layers[-1][1]
        for _, module in self.layers:
            init_weight(module.weight, self.weight_init, density=1.0 - self.target)
            if self.structured and module is last:
                mask: Mask = FixedMask(module.weight)
            else:
                mask = self.make_mask(module.weight, self.structured)
            parametrize.register_parametrization(module, "weight", mask, unsafe=True)

    def make_mask(self, weight: Tensor, structured: bool) -> Mask:
        return self.mask_cls(weight, structured, self.hp)

    def mask_modules(self) -> Iterator[tuple[str, nn.Module, Mask]]:
        for name, module in self.layers:
            yield name, module, module.parametrizations.weight[0]

    def gated(self) -> list[Mask]:
        """The masks the method searches (all but a structured classifier's fixed one)."""
        return [mask for _, _, mask in self.mask_modules() if not isinstance(mask, FixedMask)]

    def mask_parameters(self) -> list[nn.Parameter]:
        return [p for _, _, mask in self.mask_modules() for p in mask.parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The model's own parameters (weights, biases, norms), i.e. everything but the masks' state."""
        masks = {id(p) for p in self.mask_parameters()}
        return [p for p in self.model.parameters() if id(p) not in masks]

    @property
    def search_trains_weights(self) -> bool:
        """Whether the method's own search optimiser also trains the model's weights (CS in its paper's
        protocol). In the joint regime the trainer trains them beside any other method's search."""
        return False

    def weight_state(self) -> dict[str, Tensor]:
        """A copy of the model's weights and buffers (BN statistics included), masks' state excluded."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()
                if ".parametrizations.weight.0." not in f".{k}"}

    def set_rewind_point(self) -> None:
        """The weights the weak regime's retraining starts from from now on (default: the initial ones)."""
        self._rewind = self.weight_state()

    def rewind_state(self) -> dict[str, Tensor]:
        return self._rewind

    @contextlib.contextmanager
    def masks_open(self) -> Iterator[None]:
        """Run the model as the dense network (every mask passes the weight through)."""
        masks = [mask for _, _, mask in self.mask_modules()]
        for mask in masks:
            mask.bypass = True
        try:
            yield
        finally:
            for mask in masks:
                mask.bypass = False

    # -- what a method provides -----------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """The tensors the method optimises."""
        return self.mask_parameters()

    def search_epochs(self, epochs: int) -> int:
        """Passes over the data the search loop makes for a cell of `epochs` epochs (default: `epochs`)."""
        return epochs

    def optimizer(self, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        """The method's optimiser over `parameters()` and a per-step LR scheduler (or None).
        Every method with `searches` defines it."""
        raise NotImplementedError(f"{self.name} has no search loop")

    def prepare(self, ctx: SearchContext) -> None:
        """Called once before the search loop (and instead of it when not `searches`)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The search objective on one batch. Default: the task loss plus the method's penalty."""
        return criterion(model(x), y) + self.penalty()

    def before_step(self) -> None:
        """Called between backward and the optimiser step (gradient surgery). The base checks the penalty
        hand-over: a gradient `penalty()` armed on a mask (`penalty_scale`) must have been consumed by the
        backward, which disarms it, so it is applied exactly once (a Python attribute: no device sync)."""
        armed = [name for name, _, mask in self.mask_modules() if getattr(mask, "penalty_scale", None) is not None]
        if armed:
            raise RuntimeError(f"{self.name}: the penalty gradient armed on {', '.join(armed)} was not consumed: the "
                               f"backward did not pass through those masks' search forward")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Hyperparameters `bench tune` samples from an Optuna trial; empty = nothing to tune."""
        return {}

    def penalty(self) -> Tensor:
        """Regulariser added to the loss; zero for methods without one. A method may return the value
        alone and add the gradient in its masks' `mask_grad` (as CRBG and CS do): `loss` calls the model
        first, then this, and the backward that follows carries the penalty's gradient."""
        return torch.zeros((), device=self.device)

    def on_step(self, step: int) -> None:
        """Called after every optimiser step (schedules, dual updates)."""

    def on_epoch(self, epoch: int) -> None:
        """Called after every epoch."""

    def state(self) -> dict[str, float]:
        """Scalar method state worth logging per epoch (lambda, temperature, ...)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Method state outside the model's state_dict that a checkpoint must carry (dual variables...)."""
        return {"extra_epochs": self.extra_epochs}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.extra_epochs = state["extra_epochs"]

    def record(self) -> dict[str, Any]:
        """Everything that identifies how the result was produced: hyperparameters and protocol choices."""
        return self.hp.to_dict()

    @property
    def exact_target(self) -> bool:
        """Whether the final mask removes exactly the target fraction (of weights, or of units when
        structured); the sweep fails a cell whose achieved sparsity misses it by more than 0.01."""
        return not self.dense

    def finalize(self) -> None:
        """Fix the final binary masks. Default: the current binary masks as they are."""
        for mask in self.gated():
            mask.freeze(mask.binary_mask())

    # -- shared machinery ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.layers[0][1].parametrizations.weight.original.device

    def project_global(self, density: float, scores: list[Tensor] | None = None) -> None:
        """Exact projection: keep the `density` fraction of mask entries with the largest scores (default:
        each mask's `scores()`), globally; the count is exact even where scores tie."""
        gated = self.gated()
        scores = scores if scores is not None else [mask.scores() for mask in gated]
        flat = torch.cat([s.flatten() for s in scores])
        keep = topk_mask(flat, max(1, round(density * flat.numel())))
        for mask, part in zip(gated, keep.split([s.numel() for s in scores])):
            mask.freeze(part.view(mask.mask_shape))

    def project_layerwise(self, density: float, scores: list[Tensor] | None = None) -> None:
        """Exact projection at the same `density` in every layer."""
        gated = self.gated()
        scores = scores if scores is not None else [mask.scores() for mask in gated]
        for mask, s in zip(gated, scores):
            mask.freeze(topk_mask(s.flatten(), max(1, round(density * s.numel()))).view(mask.mask_shape))

    def masks(self) -> dict[str, Tensor]:
        """The binary mask of every prunable weight, broadcast to the weight's full shape."""
        out = {}
        for name, _, mask in self.mask_modules():
            m = mask._broadcast(mask.current_mask().to(torch.bool))
            out[name] = m.expand(mask.weight_shape).clone().cpu()
        return out

    def report(self) -> SparsityReport:
        """Achieved sparsity, global and per layer. For structured masks, the columns of units removed
        upstream are counted as removed where the model is a plain chain (see `chained_inputs`)."""
        masks = self.masks()
        if self.structured:
            masks = remove_dead_columns(self.model, self.layers, masks)
        rep = SparsityReport()
        for name, _, mask in self.mask_modules():
            m = masks[name]
            units = units_kept = None
            if mask.structured and not isinstance(mask, FixedMask):
                unit_mask = mask.current_mask()
                units, units_kept = unit_mask.numel(), int(unit_mask.sum())
            rep.layers.append(LayerSparsity(name, tuple(m.shape), m.numel(), int(m.sum()), units, units_kept))
        return rep

    def bake(self) -> nn.Module:
        """Remove the parametrizations, leaving plain weights W * mask in the model (for export)."""
        masks = self.masks()
        for name, module in self.layers:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            with torch.no_grad():
                module.weight.mul_(masks[name].to(module.weight.device, module.weight.dtype))
        return self.model


def topk_mask(x: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly the `k` largest entries of a 1-D tensor (exact count, ties included)."""
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    keep[torch.topk(x.float(), k, sorted=False).indices] = True
    return keep


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
