"""The cell runner: one cell -> pruner(model) -> its phases -> rows. Below both the sweep (which plans cells and
writes rows) and the executors (which decide where cells run); `bench tune` builds its pruners here too."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import benchmarks
from benchmarks.console import log
from benchmarks.cost import latency, ticket_cost
from benchmarks.data import Splits, preprocessing
from benchmarks.paths import checkpoint_path, search_snapshot, write_marker
from benchmarks.settings import CELL_SETTINGS
from benchmarks.spec import Cell
from benchmarks.phases import train
from benchmarks.trainer import Checkpoint, Speed
from benchmarks.zoo import build_model
from methods import Pruner, get_method


def versions(device: torch.device) -> dict[str, str]:
    import timm
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": f"{device.type}:{name}", "threads": torch.get_num_threads(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", ""), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "python": platform.python_version(), "ticketbench": benchmarks.__version__}


@dataclass
class CellResult:
    run: dict[str, Any]
    curves: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    masks: dict[str, torch.Tensor] | None
    ticket: dict[str, Any] | None = None  # what rebuilds the ticket beyond its seed and masks (`ticket_state`)


TARGET_TOLERANCE = 0.01  # most a cell's achieved sparsity may miss an exactly enforced target by


def build_pruner(cell: Cell, splits: Splits) -> Pruner:
    """Seed, build the model, attach the method. Model and mask initialisation use the cell's seed."""
    return build_ticket_pruner(cell, splits.num_classes, tuple(splits.input_shape))


def build_ticket_pruner(cell: Cell, num_classes: int, input_shape: tuple[int, ...]) -> Pruner:
    """`build_pruner` for a model of `num_classes` outputs on inputs of `input_shape` (export rebuilds a
    ticket with it: the same draws, in the same order)."""
    torch.manual_seed(cell.seed)
    model = build_model(cell.arch, num_classes, input_shape, cell.activation)
    return get_method(cell.method)(model, cell.target_sparsity, cell.granularity, cell.build_hparams(),
                                   exclude=cell.exclude, weight_init=cell.weight_init, regime=cell.regime)


def sanity_parent(cell: Cell) -> Cell:
    """The cell whose mask a sanity check ablates: the same cell without the ablation."""
    return cell.replace(sanity="none")


def run_cell(cell: Cell, splits: Splits, device: torch.device, progress: bool = True,
             checkpoints: str | Path | None = None, running: str | Path | None = None,
             compile: bool = False, share_search: bool = False, measure_latency: bool = False,
             on_epoch: Callable[[dict[str, Any]], None] | None = None, test: bool = True,
             passthrough: tuple[type[BaseException], ...] = ()) -> CellResult:
    """Run one cell and turn its outcome into rows. A failure inside the cell becomes a failed row, except
    exceptions of the `passthrough` types (a tuning trial pruned from `on_epoch`), which propagate.
    With a `checkpoints` folder the cell saves its state every epoch there and resumes from it; with a
    `running` folder it writes its progress to its marker there every epoch. `on_epoch` sees every epoch's
    curve row; `test=False` never touches the test set (tuning: test_acc is NaN).

    Sanity checks differ from their parent cell only after the search, so with `share_search` a parent
    publishes its end-of-search checkpoint (`search_snapshot`) and a sanity cell that finds it resumes from
    there instead of searching again: the same state, hence the same result, as its own search would
    give (row column ``search_from``: the parent's id). Without it (parent still running, another disk)
    the sanity cell runs its own search."""
    start = time.time()
    base = {"cell": cell.id, "experiment": cell.experiment, "method": cell.method,
            "role": get_method(cell.method).role(cell.sanity),
            "granularity": cell.granularity, "sanity": cell.sanity, "arch": cell.arch, "dataset": cell.dataset,
            "target_sparsity": cell.target_sparsity, "seed": cell.seed,
            **{name: getattr(cell, name) for name in CELL_SETTINGS},  # regime, epochs, batch size, ...
            "weight_init": cell.weight_init, "exclude": ";".join(cell.exclude), "tuned": cell.tuned or "default",
            **{f"hp_{k}": v for k, v in cell.hparams}}  # a failed row names its experiment too
    recipe = cell.recipe
    try:
        splits = splits.with_train_size(cell.train_size)
        pruner = build_pruner(cell, splits)
        marker = Path(running) / cell.id if running else None
        total = {"search": cell.epochs, "train": cell.train_epochs}

        def report_epoch(row: dict[str, Any]) -> None:
            if marker is not None:
                try:  # a Ray node without the driver's folder simply shows no progress
                    write_marker(marker, f"{row['phase']} {row['epoch']}/{total.get(row['phase'], '?')}")
                except OSError:
                    pass
            if on_epoch is not None:
                on_epoch(row)

        own = checkpoint_path(checkpoints, cell.id)
        if cell.sanity != "none" and own is not None and not own.exists():
            Checkpoint(search_snapshot(checkpoints, sanity_parent(cell).id)).copy_to(own)
        share = search_snapshot(checkpoints, cell.id) if share_search and cell.sanity == "none" else None
        result = train(pruner, splits, cell.epochs, cell.batch_size, device, cell.seed, progress,
                       on_epoch=report_epoch, test=test, train_epochs=cell.train_epochs, sanity=cell.sanity,
                       checkpoint=own, recipe=recipe, speed=Speed(amp=cell.amp, compile=compile),
                       share_search=share)
    except passthrough:
        raise
    except Exception as e:  # any failure inside a cell (NaN, CUDA OOM, a bug in a method) is a failed row
        run = {**base, "wall_s": round(time.time() - start, 2), **versions(device), "status": "failed",
               "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        return CellResult(run, [], [], None)
    report, masks = pruner.report(), pruner.masks()
    try:
        cost, layer_cost = ticket_cost(pruner, splits.input_shape, report, masks)
        if measure_latency:
            cost.update(latency(pruner, splits.input_shape))
    except Exception as e:  # a model the FLOP counter cannot run: the cell's result stands, its cost is unknown
        log(f"bench: cell {cell.id}: cost not measured ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        cost, layer_cost = {}, {}
    achieved = report.unit_sparsity if report.unit_sparsity is not None else report.sparsity
    status, error = "ok", ""
    if pruner.exact_target and abs(achieved - cell.target_sparsity) > TARGET_TOLERANCE:
        status, error = "failed", (f"achieved sparsity {achieved:.4f} misses the target {cell.target_sparsity} by "
                                   f"more than {TARGET_TOLERANCE} (a collapsed or diverged search?)")
    run = {
        **base,
        "sparsity": report.sparsity,
        "unit_sparsity": report.unit_sparsity,
        "test_acc": result.test_acc, "val_acc": result.val_acc, **result.projection,
        "num_classes": splits.num_classes, "prunable_weights": report.weights, "kept_weights": report.kept,
        "layer_collapse": len(report.collapsed), "collapsed_layers": ";".join(report.collapsed), **cost,
        "search_epochs": result.search_epochs, "search_s": result.search_s, "search_from": result.search_from,
        "train_epochs": result.train_epochs, "train_s": result.train_s,
        **({f"train_{k}": v for k, v in recipe.to_dict().items()} if uses_recipe(cell) else {}),
        "weight_init": pruner.weight_init, "train_size": cell.train_size or len(splits.train),
        "bn_recalibrated": result.bn_recalibrated, "compile": compile,
        "wall_s": round(time.time() - start + result.wall_before, 2), **versions(device),
        **{f"hp_{k}": v for k, v in pruner.record().items()}, **pruner.outcome(),
        "status": status, "error": error,
    }
    key = {"cell": cell.id, "method": cell.method, "granularity": cell.granularity, "regime": cell.regime,
           "sanity": cell.sanity, "target_sparsity": cell.target_sparsity, "seed": cell.seed}
    curves = [{**key, **row} for row in result.curves]
    layers = [{"cell": cell.id, "layer": layer.name, "shape": layer.shape, "weights": layer.weights,
               "kept": layer.kept, "sparsity": layer.sparsity, "units": layer.units, "units_kept": layer.units_kept,
               **layer_cost.get(layer.name, {})}
              for layer in report.layers]
    return CellResult(run, curves, layers, masks, ticket_state(cell, pruner, splits))


def uses_recipe(cell: Cell) -> bool:
    """Whether the cell trains weights with its recipe (after the search, during it, or before it)."""
    return cell.regime != "strong" or cell.train_epochs > 0


def ticket_state(cell: Cell, pruner: Pruner, splits: Splits) -> dict[str, Any]:
    """What `benchmarks.export` needs beyond the cell's settings, seed and masks to rebuild the ticket exactly:
    the model's shape arguments and the state the seed cannot regenerate: BatchNorm statistics in the strong
    regime (recomputed under the mask), every weight where weights were trained or redrawn (weak, joint,
    the reinit sanity check)."""
    buffers = {name for name, _ in pruner.model.named_buffers()}
    regenerable = cell.regime == "strong" and cell.sanity != "reinit"
    state = {k: v.cpu() for k, v in pruner.weight_state().items() if not regenerable or k in buffers}
    return {"state": state, "num_classes": splits.num_classes, "input_shape": tuple(splits.input_shape),
            "preprocessing": preprocessing(splits)}
