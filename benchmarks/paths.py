"""The layout of a results folder, in one place: every file name, and the running-marker format.

    <out>/runs.csv  curves.csv  layers.csv      tidy rows (`benchmarks.results`)
    <out>/masks/<cell>.pt                       final masks, {layer name: bool tensor}
    <out>/tickets/<cell>.pt                     what rebuilds the ticket beyond seed and mask (`benchmarks.export`)
    <out>/exports/<cell>.pt, .ts                `bench export` output
    <out>/plan.json                             every cell a `bench run` asked for (`bench status`)
    <out>/running/<cell>                        marker of a running cell: "pid\\nphase epoch/total\\n"
    <out>/checkpoints/<cell>.pt                 per-epoch state of a running cell
    <out>/checkpoints/<cell>.search.pt          a parent's end-of-search state, for its sanity checks
    <out>/.lock                                 held by the one `bench run` writing the folder

No torch here: `bench status` reads folders without importing it.
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS, CURVES, LAYERS, MASKS, TICKETS, LOCK = "runs.csv", "curves.csv", "layers.csv", "masks", "tickets", ".lock"
PLAN, RUNNING, CHECKPOINTS = "plan.json", "running", "checkpoints"


def checkpoint_path(checkpoints: str | Path | None, cell_id: str) -> Path | None:
    return Path(checkpoints) / f"{cell_id}.pt" if checkpoints else None


def search_snapshot(checkpoints: str | Path | None, cell_id: str) -> Path | None:
    """Where a cell publishes its checkpoint at the end of its search, for its sanity checks to resume from."""
    return Path(checkpoints) / f"{cell_id}.search.pt" if checkpoints else None


def write_marker(marker: Path, where: str = "") -> None:
    """A running cell's marker: this process's pid, then (updated every epoch) ``phase epoch/total``."""
    marker.write_text(f"{os.getpid()}\n{where}\n" if where else f"{os.getpid()}\n")


def read_marker(marker: Path) -> tuple[int | None, str]:
    """(pid, "phase epoch/total" or "") of a marker; pid None when the marker is unreadable or malformed."""
    try:
        pid, _, where = marker.read_text().strip().partition("\n")
    except OSError:
        return None, ""
    return (int(pid) if pid.isdigit() else None), where.strip()
