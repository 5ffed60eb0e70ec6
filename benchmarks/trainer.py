"""The training machinery of one cell (`CellRun`): its epoch loops, search and weight steps, evaluation and
per-epoch checkpoints. The epoch loops (`CHECKPOINTED`) save a checkpoint named by phase every epoch and
resume it mid-way; which phases run, in which order, is `benchmarks.phases`."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from benchmarks.console import log
from benchmarks.data import Splits, batches
from benchmarks.recipe import Recipe
from benchmarks.sample import class_sample
from methods import Pruner
from methods.contract import CHECKPOINTED, SearchContext
from methods.schedules import MIN_SEARCH_STEPS


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cuda_layout(model: nn.Module, device: torch.device) -> bool:
    """The CUDA layout: cudnn autotuning on, and a conv net (masks included) in channels_last. Returns
    whether the inputs go channels_last too; on other devices nothing changes."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if conv:
        model.to(memory_format=torch.channels_last)
    return conv


@dataclass(frozen=True)
class Speed:
    """How steps run; none of it changes what a cell means except `amp` (part of the cell's id).
    `amp`: bf16 autocast; `compile`: torch.compile the training forward. On CUDA, cudnn.benchmark is on and
    conv nets run channels_last."""

    amp: bool = False
    compile: bool = False


@dataclass
class TrainResult:
    val_acc: float
    test_acc: float
    curves: list[dict[str, Any]] = field(default_factory=list)
    bn_recalibrated: bool = False
    search_epochs: int = 0
    search_s: float = 0.0
    train_epochs: int = 0
    train_s: float = 0.0
    search_from: str = ""  # the cell whose search this cell resumed from (a sanity check's parent), if not itself
    projection: dict[str, float] = field(default_factory=dict)  # `CellRun.finalize`: the search's mask vs the final one
    wall_before: float = 0.0  # wall seconds spent on this cell by earlier, interrupted runs (its checkpoint's)


@torch.no_grad()
def evaluate(model: nn.Module, splits: Splits, which: str, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy (%) on split `which`, in eval mode, i.e. with the binary masks; NaN on an empty split."""
    model.eval()
    correct, total = torch.zeros((), dtype=torch.long, device=device), 0
    with parametrize.cached():  # each masked weight is built once, not once per batch (nothing changes here)
        for xb, yb in batches(getattr(splits, which), 4 * batch_size, device):
            correct += (model(splits.transform(xb)).argmax(1) == yb).sum()  # counted on the device, read once
            total += len(yb)
    return 100.0 * int(correct) / total if total else math.nan


@torch.no_grad()
def recalibrate_bn(model: nn.Module, splits: Splits, batch_size: int, device: torch.device,
                   max_batches: int = 100) -> bool:
    """Recompute BatchNorm running statistics under the final binary masks (they were gathered under
    the search-time masks). Returns whether the model had any BatchNorm."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    for i, (xb, _) in enumerate(batches(splits.train, batch_size, device)):
        if i == max_batches:
            break
        model(splits.transform(xb))
    return True


def search_step(model: nn.Module, pruner: Pruner, opt: torch.optim.Optimizer, sched: Any, criterion: nn.Module,
                x: torch.Tensor, y: torch.Tensor, step: int, amp: bool = False) -> torch.Tensor:
    """One mask-search step; returns the detached (task loss, penalty) pair (no host-device sync). `amp`: bf16
    autocast."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        task = pruner.task_loss(model, x, y, criterion)
        penalty = pruner.penalty()  # after the forward: see `Pruner.penalty`
    opt.zero_grad(set_to_none=True)
    (task + penalty).backward()
    pruner.before_step()
    opt.step()
    if sched is not None:
        sched.step()
    pruner.on_step(step)
    return torch.stack((task.detach(), penalty.detach().to(task.dtype)))


def has_penalty(pruner: Pruner) -> bool:
    """Whether the method adds a penalty to its task loss (curves.csv then logs it as `penalty`)."""
    return type(pruner).penalty is not Pruner.penalty


def weight_step(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, criterion: nn.Module,
                x: torch.Tensor, y: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """One plain training step of the (masked) model's weights."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = criterion(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()


class Paired:
    """Two optimisers, or two LR schedules (either may be None), stepped and checkpointed as one: the joint
    regime's mask search (the method's own optimiser) beside its weight training (the cell's recipe)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.parts = (first, second)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parts:
            p.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for p in self.parts:
            if p is not None:
                p.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [p.state_dict() if p is not None else None for p in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p, s in zip(self.parts, state["parts"]):
            if p is not None:
                p.load_state_dict(s)


class Checkpoint:
    """Per-epoch state of a running cell in one file, replaced atomically, so a killed cell resumes at
    its last finished epoch with the same result as an uninterrupted run (same RNG streams)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None. An unreadable file (cut by a disk failure: we write atomically) is
        reported in one line and ignored, and the cell starts afresh."""
        if self.path is None or not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:
            log(f"bench: checkpoint {self.path} is unreadable ({type(e).__name__}); its cell starts afresh")
            return None

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def copy_to(self, dest: Path) -> None:
        """Publish the current checkpoint at `dest` (atomically), for another cell to resume from."""
        if self.path is None or not self.path.exists():
            return
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(self.path, tmp)
        os.replace(tmp, dest)


class CellRun:
    """The phases of one cell over one dataset with one shuffling stream."""

    def __init__(self, pruner: Pruner, splits: Splits, batch_size: int, device: torch.device, seed: int,
                 progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None, checkpoint: Path | None,
                 recipe: Recipe, speed: Speed = Speed()) -> None:
        self.pruner, self.splits, self.batch_size, self.device = pruner, splits, batch_size, device
        self.model = pruner.model.to(device)
        self.amp = speed.amp
        self.channels_last = cuda_layout(self.model, device)
        self.forward = torch.compile(self.model) if speed.compile else self.model
        self.seed = seed
        self.shuffle = torch.Generator().manual_seed(seed)
        self.progress, self.on_epoch, self.recipe = progress, on_epoch, recipe
        self.criterion = nn.CrossEntropyLoss()
        self.curves: list[dict[str, Any]] = []
        self.elapsed = {"search": 0.0, "train": 0.0}  # wall seconds of search cost and of training, across resumes
        self.projection: dict[str, float] = {}  # the search's own binary mask against the final one
        self.recalibrated = False  # BatchNorm statistics recomputed under the final mask (`recalibrate`)
        self.ckpt = Checkpoint(checkpoint)
        self.resume = self.ckpt.load()  # read once: the state a killed run left, or None
        self.started = time.time()
        self.wall_before = self.resume.get("wall", 0.0) if self.resume else 0.0  # wall seconds of earlier runs
        self.cell_id = checkpoint.stem if checkpoint is not None else ""  # checkpoints are named by cell id
        # whose search this cell's state comes from: its own, or a cell it resumed from (`train`'s share_search)
        self.search_origin = self.resume.get("search_origin", self.cell_id) if self.resume else self.cell_id
        if self.resume:
            origin = "" if self.search_origin == self.cell_id else f" (the search of cell {self.search_origin})"
            log(f"bench: cell {self.cell_id} resumes from its checkpoint after {self.resume['phase']} epoch "
                f"{self.resume['epoch']}{origin}")
        self.steps_per_epoch = math.ceil(len(splits.train) / batch_size)
        pruner.ctx = self.context()

    def epoch_batches(self, augment: bool, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for xb, yb in batches(self.splits.train, self.batch_size, self.device, shuffle=shuffle,
                              generator=self.shuffle):
            if augment and self.splits.augment is not None:
                xb = self.splits.augment(xb)
            xb = self.splits.transform(xb)
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def context(self) -> SearchContext:
        return SearchContext(batches=lambda: self.epoch_batches(augment=False), criterion=self.criterion,
                             sample=self.class_sample,
                             weight_optimizer=self.weight_optimizer)

    def class_sample(self, per_class: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`per_class` training examples of each class, fixed by the seed, as the trainer's batches
        (transformed, not augmented, on the device)."""
        x, y = class_sample(self.splits.train, per_class, self.seed)
        out = []
        for i in range(0, len(y), self.batch_size):
            xb = self.splits.transform(x[i:i + self.batch_size].to(self.device))
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            out.append((xb, y[i:i + self.batch_size].to(self.device)))
        return out

    def weight_optimizer(self, params: list[nn.Parameter], steps: int) -> tuple[torch.optim.Optimizer, Any]:
        """The cell's recipe over `params`: its optimiser and a per-step LR schedule spanning `steps`."""
        opt = self.recipe.make_optimizer(params)
        return opt, self.recipe.make_schedule(opt, steps, self.steps_per_epoch)

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self, phase: str, epoch: int, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
        return {"phase": phase, "epoch": epoch, "model": self.model.state_dict(),
                "pruner": self.pruner.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict() if sched is not None else None,
                "rng": torch.get_rng_state(), "shuffle": self.shuffle.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "curves": self.curves, "elapsed": self.elapsed, "search_origin": self.search_origin,
                "projection": self.projection, "wall": self.wall_before + time.time() - self.started}

    def _restore(self, state: dict[str, Any], opt: torch.optim.Optimizer, sched: Any) -> None:
        pruner = state["pruner"] if "finals" not in state else {  # a checkpoint written before Pruner.state_dict
            "finals": state["finals"], "rewind": state["rewind"], "extra": state["pruner"]}
        self.pruner.load_state_dict(pruner)
        self.model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        self.shuffle.set_state(state["shuffle"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.curves = state["curves"]
        self.elapsed = state["elapsed"]
        self.projection = state.get("projection", {})

    def _end_epoch(self, phase: str, epoch: int, loss_sum: torch.Tensor, bar: tqdm) -> None:
        """Log the epoch: `loss_sum` is the summed task loss, or (search steps) the summed (task loss, penalty)."""
        means = (torch.as_tensor(loss_sum) / self.steps_per_epoch).reshape(-1).tolist()
        train_loss, penalty = means[0], (means[1] if len(means) > 1 else 0.0)
        if not math.isfinite(train_loss + penalty):
            raise Diverged(f"loss is {train_loss + penalty} in {phase} epoch {epoch}")
        val_acc = evaluate(self.model, self.splits, "val", self.batch_size, self.device)
        sparsity = 0.0 if phase == "pretrain" else self.pruner.report().sparsity  # pre-training: masks open
        row = {"phase": phase, "epoch": epoch, "train_loss": train_loss, "val_acc": val_acc, "sparsity": sparsity,
               **({"penalty": penalty} if phase == "search" and has_penalty(self.pruner) else {}),
               **(self.pruner.state() if phase == "search" else {})}
        self.curves.append(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_acc:.2f}", sparsity=f"{row['sparsity']:.3f}")
        if self.on_epoch is not None:
            self.on_epoch(row)

    # -- phases -----------------------------------------------------------------------------------
    def _epochs(self, phase: str, epochs: int, opt: torch.optim.Optimizer, sched: Any, augment: bool,
                step_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                after_epoch: Callable[[int], None] | None = None) -> None:
        """The epoch loop of a phase: resumes from the checkpoint when it was written in this phase, and saves
        one after every epoch. Its time counts as search cost, except weight training after the search."""
        assert phase in CHECKPOINTED, phase
        start = 0
        if self.resume is not None and self.resume["phase"] == phase:
            self._restore(self.resume, opt, sched)
            start = self.resume["epoch"]
        bar = tqdm(total=epochs * self.steps_per_epoch, initial=start * self.steps_per_epoch, desc=f"  {phase}",
                   leave=False, disable=not self.progress, unit="step")
        step = start * self.steps_per_epoch
        for epoch in range(start + 1, epochs + 1):
            t0 = time.time()
            self.model.train()
            loss_sum: torch.Tensor | float = 0.0
            for xb, yb in self.epoch_batches(augment):
                loss_sum = loss_sum + step_fn(xb, yb, step)
                step += 1
                bar.update()
            if after_epoch is not None:
                after_epoch(epoch)
            self._end_epoch(phase, epoch, loss_sum, bar)
            self.elapsed["train" if phase == "train" else "search"] += time.time() - t0
            self.ckpt.save(self._state(phase, epoch, opt, sched))
        bar.close()

    def search(self, epochs: int) -> None:
        """The method's search loop: `epochs` passes over the training data. The method's params only, except
        in the joint regime, where the cell's recipe also trains the model's weights, step for step."""
        steps = epochs * self.steps_per_epoch
        if getattr(self.pruner.hp, "lr_ref_steps", 0) and steps < MIN_SEARCH_STEPS:
            log(f"bench: cell {self.cell_id}: {self.pruner.name} searches {steps} steps, fewer than the "
                f"{MIN_SEARCH_STEPS} its per-search rates hold for; it steps at the rates of a {MIN_SEARCH_STEPS}-step "
                f"search, so its mask moves less than in a longer one (a rough result)")
        opt, sched = self.pruner.optimizer(steps)
        weights = self.pruner.weight_parameters() if self.pruner.regime == "joint" \
            and not self.pruner.search_trains_weights else []
        if weights:
            for p in weights:
                p.requires_grad_(True)
            w_opt, w_sched = self.weight_optimizer(weights, steps)
            opt, sched = Paired(opt, w_opt), Paired(sched, w_sched)
        self._epochs("search", epochs, opt, sched, self.pruner.augment_search,
                     lambda x, y, step: search_step(self.forward, self.pruner, opt, sched, self.criterion, x, y,
                                                    step, self.amp),
                     after_epoch=self.pruner.on_epoch)
        for p in weights:
            p.requires_grad_(False)

    def finalize(self) -> None:
        """Fix the final mask (`Pruner.finalize`: the exact projection of most methods). After a search,
        record what the projection changed: the sparsity of the search's own binary mask and the validation
        accuracy of the binary mask just before and just after (a controller that reached its target
        leaves the two accuracies equal)."""
        if not self.pruner.searches:
            self.pruner.finalize()
            return
        before = self.pruner.report().sparsity
        acc_before = evaluate(self.model, self.splits, "val", self.batch_size, self.device)
        self.pruner.finalize()
        self.projection = {"sparsity_before_projection": before, "val_acc_before_projection": acc_before,
                           "val_acc_after_projection": evaluate(self.model, self.splits, "val", self.batch_size,
                                                                self.device)}

    def train_weights(self, epochs: int, phase: str = "train") -> None:
        """Train the model's own weights under the current masks with the cell's recipe (masks fixed)."""
        masks = {p: p.requires_grad for p in self.pruner.mask_parameters()}
        for p in masks:
            p.requires_grad_(False)
        params = self.pruner.weight_parameters()
        for p in params:
            p.requires_grad_(True)
        opt, sched = self.weight_optimizer(params, epochs * self.steps_per_epoch)
        self._epochs(phase, epochs, opt, sched, True,
                     lambda x, y, step: weight_step(self.forward, opt, sched, self.criterion, x, y, self.amp))
        for p in params:
            p.requires_grad_(False)
        for p, flag in masks.items():
            p.requires_grad_(flag)
