"""How long a sweep's cells will take on the CPU, estimated before it starts, and the warning for long ones.

A cell's time is the examples it will really process (every epoch of every phase its method runs: dense
pre-training, the search with IMP's rounds, weight training) times the seconds one dense training step
takes per example, timed on this machine (the fastest of three small batches, so a busy moment does not
inflate it). A search step costs about as much as a dense one (`benchmarks/perf`)."""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable

import torch

from benchmarks.cell import build_ticket_pruner
from benchmarks.console import log
from benchmarks.data import Splits
from benchmarks.spec import Cell
from benchmarks.zoo import build_model

LONG_CPU_CELL_S = 1800.0  # a cell expected to take longer than this on the CPU gets a warning before the sweep
TIMED_BATCH = 32  # examples in the batch that is timed


def seconds_per_example(arch: str, num_classes: int, input_shape: tuple[int, ...], batch_size: int) -> float:
    """Wall seconds per example of one dense training step (forward and backward) of `arch` on the CPU."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes, input_shape)
    n = max(1, min(batch_size, TIMED_BATCH))
    x, y = torch.randn(n, *input_shape), torch.randint(0, num_classes, (n,))
    times = []
    for _ in range(4):  # the first is a warm-up
        t0 = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        times.append(time.perf_counter() - t0)
    return min(times[1:]) / n


def cell_epochs(cell: Cell, num_classes: int, input_shape: tuple[int, ...]) -> int:
    """Passes over the training data the cell makes: its method's pre-training, search and training epochs."""
    pruner = build_ticket_pruner(cell, num_classes, input_shape)
    phases = pruner.phases()
    return (pruner.pretrain_epochs() * ("pretrain" in phases) + pruner.search_epochs(cell.epochs) * ("search" in phases)
            + cell.train_epochs * ("train" in phases))


def warn_long_cpu_cells(cells: list[Cell], splits_of: Callable[[Cell], Splits]) -> None:
    """Warn where a cell would take longer than `LONG_CPU_CELL_S` on the CPU, suggesting a GPU or a smaller
    run. `splits_of(cell)` gives the cell's data splits (its train size applied)."""
    for (arch, dataset), group in itertools.groupby(sorted(cells, key=lambda c: (c.arch, c.dataset)),
                                                    key=lambda c: (c.arch, c.dataset)):
        group = list(group)
        longest: dict[str, Cell] = {}  # per method, its cell of most epochs: one pruner built per method
        for c in sorted(group, key=lambda c: c.epochs + c.train_epochs):
            longest[c.method] = c
        estimates = []
        for c in longest.values():
            splits = splits_of(c)
            estimates.append((len(splits.train) * cell_epochs(c, splits.num_classes, splits.input_shape), c, splits))
        examples, cell, splits = max(estimates, key=lambda e: e[0])
        seconds = examples * seconds_per_example(arch, splits.num_classes, splits.input_shape, cell.batch_size)
        if seconds > LONG_CPU_CELL_S:
            batch = min(cell.batch_size, len(splits.train))
            steps = math.ceil(len(splits.train) / batch) * (examples // len(splits.train))
            log(f"bench: warning: on the CPU one {cell.method} cell of {arch} on {dataset} ({steps} steps of batch {batch}) "
                f"takes about {seconds / 3600:.1f} h ({len(group)} cells of {arch} on {dataset} in this sweep). Use a "
                f"GPU (--device cuda), a smaller --arch (bench list archs), fewer --epochs or --train-size N")
