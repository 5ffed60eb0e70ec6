"""The `Pruner` interface shared by every method: its life cycle, driven by the trainer, over the mask
parametrization of `methods.mask`, with sparsity accounting from `methods.sparsity`.

A pruner attaches one `Mask` parametrization to the weight of every prunable module. A method subclasses
`Mask` (what the mask is during search) and `Pruner` (its optimiser, penalty and schedules).
"""

from __future__ import annotations

import contextlib
from abc import ABC
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from methods.hparams import Hparams
from methods.init import DEFAULT_WEIGHT_INIT, init_weight, init_weights
from methods.mask import FixedMask, Mask, prunable_modules
from methods.sparsity import (SparsityReport, keep_global, keep_proportional, layer_report, remove_dead_columns,
                              topk_mask)
from methods.contract import REGIMES, Granularity, Regime, SearchContext


class Pruner(ABC):
    """A method that finds a binary mask over a model's prunable weights.

    Life cycle, driven by the trainer::

        pruner = get_method("crbg")(model, sparsity=0.9, granularity="unstructured", regime="strong")
        # the trainer runs `pruner.phases()`: dense pre-training (`pretrain_epochs`), then
        pruner.prepare(ctx)               # one-shot scoring (optional)
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
        self.ctx: SearchContext | None = None  # what the trainer lends, set before `prepare` and on a resume
        self._attach()
        self._rewind = self.weight_state()

    @classmethod
    def role(cls, sanity: str = "none") -> str:
        """A cell's part in a comparison (`ROLES`): the dense model is the reference, a method with a search
        loop searches, a one-shot method is a baseline, and any sanity-check ablation is a sanity row."""
        if sanity != "none":
            return "sanity"
        return "reference" if cls.dense else "search" if cls.searches else "baseline"

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
        masked = [module for _, module in self.layers]  # excluded layers: the same scheme, dense, drawn last
        init_weights([m for _, m in prunable_modules(self.model) if m not in masked], self.weight_init)

    def make_mask(self, weight: Tensor, structured: bool) -> Mask:
        return self.mask_cls(weight, structured, self.hp)

    def mask_modules(self) -> Iterator[tuple[str, nn.Module, Mask]]:
        for name, module in self.layers:
            yield name, module, module.parametrizations.weight[0]

    def gated(self) -> list[Mask]:
        """The masks the method searches (all but a structured classifier's fixed one)."""
        return [mask for _, _, mask in self.mask_modules() if not isinstance(mask, FixedMask)]

    def gated_weights(self) -> list[Tensor]:
        """The raw weights (the parametrizations' originals) under `gated()`'s masks, in the same order."""
        return [module.parametrizations.weight.original for _, module, mask in self.mask_modules()
                if not isinstance(mask, FixedMask)]

    def mask_parameters(self) -> list[nn.Parameter]:
        return [p for _, _, mask in self.mask_modules() for p in mask.parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The model's own parameters (weights, biases, norms), i.e. everything but the masks' state."""
        masks = {id(p) for p in self.mask_parameters()}
        return [p for p in self.model.parameters() if id(p) not in masks]

    search_trains_weights: ClassVar[bool] = False  # the search's own optimiser trains the weights too (CS's
    # paper protocol, IMP); in the joint regime the trainer trains them beside any other method's search

    def weight_state(self) -> dict[str, Tensor]:
        """A copy of the model's weights and buffers (BN statistics included), masks' state excluded."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()
                if ".parametrizations.weight.0." not in f".{k}"}

    def set_rewind_point(self) -> None:
        """The weights the weak regime's retraining starts from from now on (default: the initial ones)."""
        self._rewind = self.weight_state()

    def rewind_state(self) -> dict[str, Tensor]:  # the weights `set_rewind_point` saved
        return self._rewind

    def state_dict(self) -> dict[str, Any]:
        """What the model's own state_dict lacks for a checkpoint of the search: the frozen final masks, the
        rewind point and the method's `extra_state` (dual variables, temperatures, rounds)."""
        return {"finals": {name: mask.final for name, _, mask in self.mask_modules()}, "rewind": self._rewind,
                "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; call it before loading the model's state_dict (the final masks are buffers
        that only exist once set)."""
        for name, _, mask in self.mask_modules():
            final = state["finals"][name]
            mask.final = None if final is None else final.to(self.device)
        self._rewind = {k: v.to(self.device) for k, v in state["rewind"].items()}
        self.load_extra_state(state["extra"])

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

    def phases(self) -> tuple[str, ...]:
        """The phases a cell runs, in order (`methods.contract.PHASES`), before evaluation: dense pre-training
        if asked, prepare, the search loop, finalize, the sanity ablation, then rewind + weight training (weak
        regime, dense) or BatchNorm recalibration under the final mask."""
        head = ("pretrain",) if self.pretrain_epochs() else ()
        body = ("prepare",) + (("search",) if self.searches else ()) + ("finalize", "ablate")
        tail = ("rewind", "train") if self.regime == "weak" or self.dense else ("recalibrate",)
        return head + body + tail

    def pretrain_epochs(self) -> int:
        """Epochs of dense training (every mask open, the cell's recipe) before the search, counted as search
        cost; the weak regime's retraining then starts from the pre-trained weights (`set_rewind_point`)."""
        return 0

    def search_epochs(self, epochs: int) -> int:
        """Passes over the data the search loop makes for a cell of `epochs` epochs (default: `epochs`)."""
        return epochs

    def optimizer(self, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        """The method's optimiser over `parameters()` and a per-step LR scheduler (or None).
        Every method with `searches` defines it."""
        raise NotImplementedError(f"{self.name} has no search loop")

    def prepare(self, ctx: SearchContext) -> None:
        """Called once before the search loop (and instead of it when not `searches`)."""

    def task_loss(self, model: nn.Module, x: Tensor, y: Tensor,
                  criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The search's task objective on one batch, without the penalty. Default: the criterion."""
        return criterion(model(x), y)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The search objective on one batch: `task_loss` plus `penalty()` (in that order: see `penalty`)."""
        return self.task_loss(model, x, y, criterion) + self.penalty()

    def before_step(self) -> None:
        """Called between backward and the optimiser step (gradient surgery). The base checks the penalty
        hand-over: a gradient `penalty()` armed on a mask (`penalty_scale`) must have been consumed by the
        backward, which disarms it, so it is applied exactly once (a Python attribute: no device sync)."""
        armed = [name for name, _, mask in self.mask_modules() if getattr(mask, "penalty_scale", None) is not None]
        if armed:
            raise RuntimeError(f"{self.name}: the penalty gradient armed on {', '.join(armed)} was not consumed: the "
                               f"backward did not pass through those masks' search forward")

    @staticmethod
    def search_space(trial: Any, regime: str = "strong") -> dict[str, Any]:
        """What `bench tune` samples from an Optuna trial for a study in `regime`; empty = nothing to tune."""
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
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore `extra_state()`."""

    def record(self) -> dict[str, Any]:
        """Everything that identifies how the result was produced: hyperparameters and protocol choices."""
        return self.hp.to_dict()

    def outcome(self) -> dict[str, Any]:  # results of the search the row records as columns, not hyperparameters
        return {}

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

    def project_global(self, density: float, scores: list[Tensor] | None = None, layerwise: bool = False,
                       shares: list[int] | None = None) -> None:
        """Exact projection: keep the `density` fraction of mask entries with the largest scores (default: each
        mask's `scores()`), globally, `layerwise` in every layer, or in proportion to `shares`; counts exact."""
        gated = self.gated()
        scores = scores if scores is not None else [mask.scores() for mask in gated]
        keeps = [topk_mask(s.flatten(), max(1, round(density * s.numel()))) for s in scores] if layerwise \
            else keep_global(scores, density) if shares is None else keep_proportional(scores, shares, density)
        for mask, keep in zip(gated, keeps):
            mask.freeze(keep.view(mask.mask_shape))

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
        return layer_report(masks, {name: mask.current_mask() for name, _, mask in self.mask_modules()
                                    if mask.structured and not isinstance(mask, FixedMask)})

    def bake(self) -> nn.Module:
        """Remove the parametrizations, leaving plain weights W * mask in the model (for export)."""
        masks = self.masks()
        for name, module in self.layers:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            with torch.no_grad():
                module.weight.mul_(masks[name].to(module.weight.device, module.weight.dtype))
        return self.model
