"""The training loop: one cell = search a mask with a pruner on a model, then evaluate with the binary mask."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.data import Splits, batches
from methods import Pruner


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    val_acc: float
    test_acc: float
    curves: list[dict[str, Any]] = field(default_factory=list)
    bn_recalibrated: bool = False


@torch.no_grad()
def evaluate(model: nn.Module, splits: Splits, which: str, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy (%) on split `which`, in eval mode, i.e. with the binary masks."""
    model.eval()
    correct = total = 0
    for xb, yb in batches(getattr(splits, which), 4 * batch_size, device):
        pred = model(splits.transform(xb)).argmax(1)
        correct += int((pred == yb).sum())
        total += len(yb)
    return 100.0 * correct / max(1, total)


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
                x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
    """One mask-search step; returns the detached loss (no host-device sync)."""
    loss = criterion(model(x), y) + pruner.penalty()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    pruner.on_step(step)
    return loss.detach()


def train(pruner: Pruner, splits: Splits, epochs: int, batch_size: int, device: torch.device, seed: int,
          progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          test: bool = True) -> TrainResult:
    """Search the mask for `epochs` epochs, fix it (`pruner.finalize`), and evaluate. `on_epoch` sees each
    epoch's metrics (tuning reports and prunes there); `test=False` never touches the test set."""
    model = pruner.model.to(device)
    steps_per_epoch = math.ceil(len(splits.train) / batch_size)
    opt, sched = pruner.optimizer(epochs * steps_per_epoch)
    criterion = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    curves: list[dict[str, Any]] = []
    step = 0
    bar = tqdm(total=epochs * steps_per_epoch, desc="  cell", leave=False, disable=not progress, unit="step")
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        for xb, yb in batches(splits.train, batch_size, device, shuffle=True, generator=shuffle):
            if splits.augment is not None:
                xb = splits.augment(xb)
            loss_sum += search_step(model, pruner, opt, sched, criterion, splits.transform(xb), yb, step)
            step += 1
            bar.update()
        pruner.on_epoch(epoch)
        train_loss = float(loss_sum) / steps_per_epoch
        if not math.isfinite(train_loss):
            raise Diverged(f"loss is {train_loss} in epoch {epoch}")
        val_acc = evaluate(model, splits, "val", batch_size, device)
        row = {"epoch": epoch, "train_loss": train_loss, "val_acc": val_acc,
               "sparsity": pruner.report().sparsity, **pruner.state()}
        curves.append(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_acc:.2f}", sparsity=f"{row['sparsity']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    pruner.finalize()
    recalibrated = recalibrate_bn(model, splits, batch_size, device)
    return TrainResult(val_acc=evaluate(model, splits, "val", batch_size, device),
                       test_acc=evaluate(model, splits, "test", batch_size, device) if test else math.nan,
                       curves=curves, bn_recalibrated=recalibrated)
