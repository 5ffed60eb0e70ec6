"""Run a sweep: cells -> trainer(pruner(model)) -> rows -> CSVs, skipping cells already finished."""

from __future__ import annotations

import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from benchmarks.console import log
from benchmarks.data import Splits
from benchmarks.errors import UserError
from benchmarks.paths import (CHECKPOINTS, CURVES, LAYERS, PLAN, RUNNING, RUNS, TICKETS, checkpoint_path, read_marker,
                              search_snapshot, write_marker)
from benchmarks.results import (OK_RUN_COLUMNS, RUN_COLUMNS, FolderLock, append_rows, check_readable,
                                check_rows, drop_duplicates, prepare_out, purge_orphans, repair_tail,
                                save_masks)
from benchmarks import executors
from benchmarks.cell import CellResult, sanity_parent
from benchmarks.estimate import warn_long_cpu_cells
from benchmarks.spec import Cell, SweepSpec
from benchmarks.trainer import resolve_device
from benchmarks.zoo import MODELS, build_model
from methods.mask import prunable_modules


def write_cell(out: Path, result: CellResult, replace: bool = False) -> None:
    """Masks, curves and layers first; the runs.csv row last marks the cell finished. With `replace`
    (a rerun), the cell's earlier rows are dropped so every cell appears once."""
    cell = result.run["cell"]
    if result.masks is not None:
        save_masks(out, cell, result.masks)
    if result.ticket is not None:
        save_masks(out, cell, result.ticket, TICKETS)
    append_rows(out / CURVES, result.curves, replace=cell if replace else None)
    append_rows(out / LAYERS, result.layers, replace=cell if replace else None)
    append_rows(out / RUNS, [result.run], replace=cell if replace else None)


def record_plan(out: Path, cells: list[Cell]) -> None:
    """Add the sweep's cells to ``plan.json`` (what `bench status` counts as the whole sweep)."""
    path = out / PLAN
    plan = json.loads(path.read_text()) if path.exists() else {}
    plan.update({c.id: {**c.to_dict(), "hparams": dict(c.hparams)} for c in cells})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan, indent=1, default=str))
    os.replace(tmp, path)


def mark_running(out: Path, cell: Cell, running: bool) -> None:
    marker = out / RUNNING / cell.id
    if running:
        marker.parent.mkdir(exist_ok=True)
        write_marker(marker)
    else:
        marker.unlink(missing_ok=True)


def check_spec(spec: SweepSpec, device: torch.device) -> None:
    """Fail before any work on names and devices that cannot run."""
    for arch in spec.arch:
        if arch.startswith("timm:"):
            import timm

            if arch.removeprefix("timm:") not in timm.list_models():
                raise UserError(f"unknown timm model {arch!r} (see timm.list_models())")
        elif arch not in MODELS:
            raise UserError(f"unknown arch {arch!r}; available: {', '.join(sorted(MODELS))}, or timm:<name>")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")


def check_exclude(patterns: list[str], arch: str, splits: Splits) -> None:
    """Every --exclude pattern must match a prunable module of `arch` (a typo would silently mask everything)."""
    names = [name for name, _ in prunable_modules(build_model(arch, splits.num_classes, splits.input_shape))]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UserError(f"--exclude {pattern!r} matches no prunable module of {arch} (its modules: {shown})")
    if all(any(fnmatch.fnmatchcase(name, p) for p in patterns) for name in names):
        raise UserError(f"--exclude {','.join(patterns)} excludes every prunable module of {arch} ({shown}): "
                        f"nothing would be masked")


def output_dir(spec: SweepSpec) -> Path:
    return Path(spec.out) if spec.out else Path("results") / spec.run_name


def run_sweep(spec: SweepSpec, progress: bool = True, download: bool = True, rerun_failed: bool = False,
              force: bool = False, workers: int = 1, executor: str = "local",
              address: str | None = None, notes: list[str] = (),
              gpus_per_cell: float = 1.0) -> tuple[Path, list[dict[str, Any]]]:
    """Run every cell of `spec` not already finished in the output folder (failed ones too with
    `rerun_failed`, every one with `force`) on the chosen executor; return the folder and the new rows.
    `notes` are logged once the input has been checked (e.g. which defaults the command line filled in)."""
    try:
        device = resolve_device(spec.device)
    except RuntimeError as e:
        raise UserError(f"bad device {spec.device!r}: {e}") from None
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if executor not in executors.EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose from {', '.join(executors.EXECUTORS)}")
    if not 0 < gpus_per_cell <= 1:
        raise UserError(f"--gpus-per-cell must be in (0, 1], got {gpus_per_cell:g} (a cell runs on one GPU)")
    if gpus_per_cell != 1 and executor != "ray":
        raise UserError("--gpus-per-cell is for --executor ray; on one machine --workers N shares the GPUs "
                        "round-robin when N exceeds them")
    check_spec(spec, device)
    if executor == "ray" and address:  # ray.init would retry an unreachable address for ever
        executors.reachable(address)
    cells = spec.cells()
    if executor == "local":  # missing data fails here, before any file is written (a Ray cluster has its own disks)
        for name in dict.fromkeys(c.dataset for c in cells):
            splits = executors.dataset(name, spec.data_root, download, spec.val_size).with_train_size(spec.train_size)
            if len(splits.train) == 0 or (len(splits.val) == 0 and spec.val_size > 0):
                raise UserError(f"--val-size {spec.val_size} leaves {len(splits.train)} training and "
                                f"{len(splits.val)} validation examples of {name}: both need at least one "
                                f"(--val-size 0: no validation split)")
            if spec.exclude:
                for arch in spec.arch:
                    check_exclude(spec.exclude, arch, splits)
    if spec.val_size == 0:
        log("bench: --val-size 0: every training example trains and none validates; val_acc and the projection's "
            "val_acc_before/after_projection stay empty (sparsity_before_projection is still measured)")
    out = output_dir(spec)
    prepare_out(out)
    for note in notes:
        log(f"bench: {note}")
    with FolderLock(out):
        rows = _run_locked(spec, cells, out, progress, download, rerun_failed, force, workers, executor, address,
                           device, gpus_per_cell)
    return out, rows


def _run_locked(spec: SweepSpec, cells: list[Cell], out: Path, progress: bool, download: bool, rerun_failed: bool,
                force: bool, workers: int, executor: str, address: str | None,
                device: torch.device, gpus_per_cell: float) -> list[dict[str, Any]]:
    """`run_sweep` once this process holds the output folder: plan, run the cells, write their rows."""
    check_readable(out)  # nothing below rewrites a file it could not read
    for name in (RUNS, CURVES, LAYERS):  # a run killed mid-write may have left a partial last line
        if (out / name).exists():
            repair_tail(out / name)
    duplicates, existing = drop_duplicates(out)
    if duplicates:
        log(f"bench: {out / RUNS} held several rows for {len(duplicates)} cell(s) ({', '.join(duplicates[:5])}"
            f"{', ...' if len(duplicates) > 5 else ''}), left by concurrent runs; kept the last row of each")
    check_rows(out / RUNS, existing, RUN_COLUMNS)
    check_rows(out / RUNS, existing, OK_RUN_COLUMNS, only_ok=True)
    status = {row["cell"]: row["status"] for row in existing}  # the last recorded status of every cell
    purge_orphans(out, set(status))
    done = [c for c in cells if status.get(c.id) == "ok"]
    failed = [c for c in cells if status.get(c.id) == "failed"]
    todo = [c for c in cells if force or c.id not in status or (rerun_failed and status[c.id] == "failed")]
    record_plan(out, cells)
    checkpoints = out / CHECKPOINTS
    for cell in todo:  # a recomputed cell starts afresh; an interrupted one resumes from its checkpoint
        if cell.id in status:
            checkpoint_path(checkpoints, cell.id).unlink(missing_ok=True)
            search_snapshot(checkpoints, cell.id).unlink(missing_ok=True)
    snapshots = SnapshotKeeper(checkpoints, cells, status)
    job = executors.Job(spec.data_root, spec.device, download, progress=progress and workers == 1,
                        checkpoints=str(checkpoints), running=str(out / RUNNING), compile=spec.compile,
                        share_search=spec.sanity, measure_latency=spec.measure_latency, threads=spec.threads)
    skipped_failed = "" if rerun_failed or force or not failed else \
        f", {len(failed)} failed before (--rerun-failed retries them)"
    where = f"ray at {address or 'a local cluster'}" if executor == "ray" else f"{workers} worker(s)"
    log(f"bench: {len(cells)} cells, {len(done)} already done{skipped_failed}, {len(todo)} to run on {where} -> {out}")
    if device.type == "cpu" and executor == "local" and todo:
        warn_long_cpu_cells(todo, lambda c: executors.dataset(c.dataset, spec.data_root, download, c.val_size)
                            .with_train_size(c.train_size))
    if spec.tuned:
        default = sorted({c.method for c in cells if not c.tuned})
        log(f"bench: {sum(1 for c in cells if c.tuned)} of {len(cells)} cells use a tuned configuration from "
            f"{spec.tuned}" + (f"; defaults for {', '.join(default)} (no study for their cells)" if default else ""))

    def started(cell: Cell) -> None:
        mark_running(out, cell, True)

    if executor == "ray":
        results = executors.run_ray(todo, job, started, address, gpus_per_cell=gpus_per_cell)
    elif workers > 1:
        results = executors.run_pool(todo, job, started, workers)
    else:
        results = executors.run_sequential(todo, job, started)
    rows = []
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=not progress)
    cell_bars = RunningBars(out / RUNNING, todo, enabled=progress and (workers > 1 or executor == "ray"))
    i = 0
    for item in results:
        cell_bars.refresh()
        if item is None:
            continue
        i += 1
        cell, result = item
        write_cell(out, result, replace=cell.id in status)
        mark_running(out, cell, False)
        checkpoint_path(checkpoints, cell.id).unlink(missing_ok=True)
        snapshots.finished(cell)
        rows.append(result.run)
        bar.update()
        r = result.run
        msg = (f"test {r['test_acc']:.2f}% sparsity {r['sparsity']:.4f}" if r["status"] == "ok"
               else f"FAILED {r['error']}")
        eta = (time.time() - t0) / i * (len(todo) - i)
        sanity = f" sanity {cell.sanity}" if cell.sanity != "none" else ""
        log(f"[{i}/{len(todo)}] {cell.method} {cell.granularity} {cell.regime} {cell.arch} {cell.dataset} "
            f"target {cell.target_sparsity} seed {cell.seed}{sanity}: {msg} ({r['wall_s']:.0f}s, ETA {eta:.0f}s)")
    bar.close()
    cell_bars.close()
    return rows


class SnapshotKeeper:
    """Deletes a parent's end-of-search snapshot once every sanity check of it has a row (a killed sweep
    keeps it, so the checks resume from it)."""

    def __init__(self, checkpoints: Path, cells: list[Cell], status: dict[str, str]) -> None:
        self.parent_of: dict[str, str] = {}  # check id -> parent id
        self.waiting: dict[str, set[str]] = {}  # parent id -> its checks without a row yet
        self.snapshot: dict[str, Path] = {}  # parent id -> its snapshot file
        for cell in cells:
            if cell.sanity == "none":
                continue
            parent = sanity_parent(cell)
            self.parent_of[cell.id] = parent.id
            self.snapshot[parent.id] = search_snapshot(checkpoints, parent.id)
            waiting = self.waiting.setdefault(parent.id, set())
            if cell.id not in status:
                waiting.add(cell.id)
        for parent_id in self.waiting:
            self._release(parent_id)

    def finished(self, cell: Cell) -> None:
        parent_id = self.parent_of.get(cell.id, cell.id)
        self.waiting.get(parent_id, set()).discard(cell.id)
        self._release(parent_id)

    def _release(self, parent_id: str) -> None:
        if parent_id in self.waiting and not self.waiting[parent_id]:
            self.snapshot[parent_id].unlink(missing_ok=True)


class RunningBars:
    """One progress bar per running cell in parallel sweeps, read from the markers the workers update
    every epoch (``running/<cell>``: pid, then ``phase epoch/total``)."""

    def __init__(self, folder: Path, cells: list[Cell], enabled: bool) -> None:
        self.folder, self.enabled = folder, enabled
        self.names = {c.id: f"{c.method} {c.target_sparsity} s{c.seed}" for c in cells}
        self.bars: dict[str, tqdm] = {}

    def refresh(self) -> None:
        if not self.enabled:
            return
        live = set()
        for marker in self.folder.glob("*"):
            _, where = read_marker(marker)
            if marker.name not in self.names or "/" not in where:
                continue
            phase, frac = where.split(" ", 1)
            done, total = frac.split("/")
            live.add(marker.name)
            bar = self.bars.get(marker.name)
            if bar is None or bar.desc != f"  {self.names[marker.name]} {phase}":
                if bar is not None:
                    bar.close()
                bar = self.bars[marker.name] = tqdm(total=int(total) if total.isdigit() else None, unit="epoch",
                                                    desc=f"  {self.names[marker.name]} {phase}", leave=False)
            bar.n = int(done)
            bar.refresh()
        for name in set(self.bars) - live:
            self.bars.pop(name).close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
