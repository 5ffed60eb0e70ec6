"""The phases of one cell, in the order its method lists them (`Pruner.phases`): e.g. pretrain -> prepare ->
search the mask (joint regime: and the weights) -> fix it -> ablate -> (weak regime) rewind and train the
surviving weights, then evaluation with the binary mask. Each phase name maps to one runner over a
`CellRun`; a resumed cell skips the phases before its checkpoint's and continues that one."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.data import Splits
from benchmarks.recipe import DEFAULT_LR, Recipe
from benchmarks.trainer import CellRun, Speed, TrainResult, evaluate, recalibrate_bn
from methods import Pruner
from methods.contract import PHASES
from methods.sanity import ablate


@dataclass
class Plan:
    """What a cell asks of its phases beyond the pruner: epochs, the sanity ablation, the shared search."""

    epochs: int
    train_epochs: int
    sanity: str
    seed: int
    share_search: Path | None = None


def pretrain(run: CellRun, plan: Plan) -> None:
    with run.pruner.masks_open():
        run.train_weights(run.pruner.pretrain_epochs(), "pretrain")
    run.pruner.set_rewind_point()


def prepare(run: CellRun, plan: Plan) -> None:
    t0 = time.time()
    run.pruner.prepare(run.pruner.ctx)  # one-shot scores: search cost too
    run.elapsed["search"] += time.time() - t0


def search(run: CellRun, plan: Plan) -> None:
    run.search(run.pruner.search_epochs(plan.epochs))
    if plan.share_search is not None:
        run.ckpt.copy_to(plan.share_search)


def rewind(run: CellRun, plan: Plan) -> None:
    run.pruner.model.load_state_dict(run.pruner.rewind_state(), strict=False)


def recalibrate(run: CellRun, plan: Plan) -> None:
    run.recalibrated = recalibrate_bn(run.model, run.splits, run.batch_size, run.device)


PHASE_RUNNERS: dict[str, Callable[[CellRun, Plan], None]] = {
    "pretrain": pretrain, "prepare": prepare, "search": search,
    "finalize": lambda run, plan: run.finalize(),
    "ablate": lambda run, plan: ablate(run.pruner, plan.sanity, plan.seed),
    "rewind": rewind, "train": lambda run, plan: run.train_weights(plan.train_epochs), "recalibrate": recalibrate,
}
assert set(PHASE_RUNNERS) == set(PHASES)


def train(pruner: Pruner, splits: Splits, epochs: int, batch_size: int, device: torch.device, seed: int,
          progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          test: bool = True, train_epochs: int | None = None, sanity: str = "none",
          checkpoint: Path | None = None, recipe: Recipe = Recipe(lr=DEFAULT_LR), speed: Speed = Speed(),
          share_search: Path | None = None) -> TrainResult:
    """Run a cell: the method's `phases()` in order, then evaluation with the final binary mask. `epochs`:
    search epochs (the method's `search_epochs` may multiply them), `train_epochs` (default `epochs`): weight
    training after the search (weak regime, dense). `on_epoch` sees each epoch's metrics; `test=False` never
    touches the test set. With `share_search` (and a `checkpoint`), the checkpoint at the end of the search is
    also published there, for cells that differ only after the search (sanity checks) to resume from."""
    run = CellRun(pruner, splits, batch_size, device, seed, progress, on_epoch, checkpoint, recipe, speed)
    phases = pruner.phases()
    unknown = [p for p in phases if p not in PHASE_RUNNERS]
    if unknown:
        raise ValueError(f"{pruner.name}: unknown phase(s) {', '.join(unknown)}; phases are {', '.join(PHASES)}")
    plan = Plan(epochs, train_epochs or epochs, sanity, seed, share_search)
    if run.resume is not None and run.resume["phase"] not in phases:
        raise ValueError(f"checkpoint {checkpoint} was written in phase {run.resume['phase']!r}, which "
                         f"{pruner.name} does not run here ({', '.join(phases)})")
    start = phases.index(run.resume["phase"]) if run.resume is not None else 0  # earlier phases are done
    for phase in phases[start:]:
        PHASE_RUNNERS[phase](run, plan)
    search_epochs = pruner.search_epochs(epochs) if "search" in phases else 0
    return TrainResult(val_acc=evaluate(run.model, splits, "val", batch_size, device),
                       test_acc=evaluate(run.model, splits, "test", batch_size, device) if test else math.nan,
                       curves=run.curves, bn_recalibrated=run.recalibrated,
                       search_epochs=pruner.pretrain_epochs() + search_epochs,
                       search_s=round(run.elapsed["search"], 2),
                       train_epochs=plan.train_epochs if "train" in phases else 0,
                       train_s=round(run.elapsed["train"], 2),
                       search_from="" if run.search_origin == run.cell_id else run.search_origin,
                       projection=run.projection, wall_before=run.wall_before)
