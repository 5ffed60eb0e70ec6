"""Where cells run: in this process, in a pool of local worker processes (``--workers N``), or as Ray
tasks on a cluster (``--executor ray``). Every executor yields (cell, result) pairs back to the driver,
which alone writes the CSVs, so results reach disk the same way whatever ran them."""

from __future__ import annotations

import dataclasses
import os
import socket
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
import multiprocessing as mp
from functools import lru_cache
from typing import Any, Callable, Collection, Iterator

import torch

from benchmarks.data import Splits, data_root, load_dataset
from benchmarks.errors import UserError
from benchmarks.spec import Cell
from benchmarks.cell import CellResult, run_cell, sanity_parent

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """What a worker needs besides the cell: where the data is and which device to use."""

    data_root: str | None
    device: str
    download: bool
    progress: bool = False
    checkpoints: str | None = None  # folder for per-epoch cell checkpoints (shared storage on a cluster)
    running: str | None = None  # folder of running-cell markers, updated every epoch (progress)
    compile: bool = False
    share_search: bool = False  # parents publish their end-of-search state for their sanity checks
    measure_latency: bool = False  # time the dense model and the ticket's deployable forms (`benchmarks.cost`)
    threads: int = 0  # torch CPU threads per cell; 0: the executor's share of the cores


@lru_cache(maxsize=4)
def dataset(name: str, root: str | None, download: bool, val_size: float) -> Splits:
    """A dataset loaded once per process."""
    return load_dataset(name, data_root(root), download=download, val_size=val_size)


@lru_cache(maxsize=4)
def dataset_on(device: torch.device, name: str, root: str | None, download: bool, val_size: float) -> Splits:
    """A dataset held on `device` (tensor datasets: MNIST, CIFAR), copied there once per process."""
    return dataset(name, root, download, val_size).to(device)


def run_job(cell: Cell, job: Job) -> CellResult:
    """Run one cell in this process (datasets are loaded, and put on the device, once per process)."""
    from benchmarks.plugins import load_plugins
    from benchmarks.trainer import resolve_device

    load_plugins()  # a worker process registers the user's methods, models and datasets too
    device = resolve_device(job.device)
    splits = dataset_on(device, cell.dataset, job.data_root, job.download, cell.val_size)
    before = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        return run_cell(cell, splits, device, job.progress, job.checkpoints, job.running, job.compile,
                        job.share_search, job.measure_latency)
    finally:  # this process (a sequential sweep's) keeps its own count
        torch.set_num_threads(before)


Started = Callable[[Cell], None]  # told when a cell is handed to a worker (running markers)
Finished = Iterator["tuple[Cell, CellResult] | None"]  # None: nothing finished this second (refresh progress)
TICK = 1.0


def hold_sanity_checks(cells: list[Cell], job: Job) -> tuple[list[Cell], dict[str, list[Cell]]]:
    """The cells to start now, and the sanity checks held back until their parent in this batch finishes
    (it publishes its search for them, `run_cell`), keyed by the parent's id. Cells keep their order."""
    ids = {c.id for c in cells}
    held: dict[str, list[Cell]] = {}
    now = []
    for cell in cells:
        parent = sanity_parent(cell).id if job.share_search and cell.sanity != "none" else None
        if parent in ids:
            held.setdefault(parent, []).append(cell)
        else:
            now.append(cell)
    return now, held


def dispatch(cells: list[Cell], job: Job, started: Started, submit: Callable[[Cell], Any],
             wait_done: Callable[[list[Any]], Collection[Any]], result: Callable[[Any], CellResult]) -> Finished:
    """Hand cells to an engine (`submit` returns a handle, `wait_done` the handles finished within a
    tick, `result` a handle's result), sanity checks only once their parent has finished."""
    now, held = hold_sanity_checks(cells, job)
    pending: dict[Any, Cell] = {}

    def start(batch: list[Cell]) -> None:
        for cell in batch:
            pending[submit(cell)] = cell
            started(cell)

    start(now)
    while pending:
        done = wait_done(list(pending))
        if not done:
            yield None
        for handle in done:
            cell = pending.pop(handle)
            start(held.pop(cell.id, []))
            yield cell, result(handle)


def run_sequential(cells: list[Cell], job: Job, started: Started) -> Finished:
    for cell in cells:
        started(cell)
        yield cell, run_job(cell, job)


_GPU: str | None = None


def _init_worker(threads: int, gpus: "mp.Queue | None") -> None:
    global _GPU
    torch.set_num_threads(threads)
    if gpus is not None:
        _GPU = f"cuda:{gpus.get()}"  # one GPU per worker process


def _pool_job(cell: Cell, job: Job) -> CellResult:
    if _GPU is not None and job.device in ("auto", "cuda"):
        job = dataclasses.replace(job, device=_GPU)
    return run_job(cell, job)


def run_pool(cells: list[Cell], job: Job, started: Started, workers: int) -> Finished:
    """N worker processes on this machine; with GPUs, one GPU per worker. Cells come back as they finish."""
    ctx = mp.get_context("spawn")
    use_gpus = job.device in ("auto", "cuda") and torch.cuda.is_available()
    gpus = None
    if use_gpus:
        gpus = ctx.Queue()
        for i in range(workers):
            gpus.put(i % torch.cuda.device_count())
    threads = job.threads or max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, gpus)) as pool:
        yield from dispatch(cells, job, started, lambda cell: pool.submit(_pool_job, cell, job),
                            lambda futures: wait(futures, timeout=TICK, return_when=FIRST_COMPLETED)[0],
                            lambda future: future.result())


def _threaded_job(cell: Cell, job: Job, threads: int) -> CellResult:
    """`run_job` with `threads` threads (a reused Ray worker keeps the thread count of its first task)."""
    torch.set_num_threads(threads)
    return run_job(cell, job)


def ray_task_resources(cluster: dict[str, float], device: str, gpus_per_cell: float = 1.0) -> tuple[int, float]:
    """(CPUs, GPUs) a cell's Ray task asks for: `gpus_per_cell` of a GPU (1: a whole one; 0.25: four cells share
    each GPU) and the cluster's CPUs divided among the cells that run at once, where there are GPUs (Ray gives
    a task as many threads as CPUs, and a GPU cell needs them to decode folder datasets), else one CPU."""
    gpus = int(cluster.get("GPU", 0)) if device in ("auto", "cuda") else 0
    if gpus == 0:
        return 1, 0
    at_once = max(1, round(gpus / gpus_per_cell))
    return max(1, int(cluster.get("CPU", 1)) // at_once), gpus_per_cell


RAY_CONNECT_TIMEOUT = 10.0  # seconds to reach a Ray cluster's address (ray.init itself retries for ever)


def reachable(address: str) -> None:
    """Refuse, in one line, a Ray `address` (host:port or ray://host:port) where nothing accepts a connection
    within `RAY_CONNECT_TIMEOUT` seconds; ``auto`` is left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as e:
        raise UserError(f"cannot reach Ray at {address} within {RAY_CONNECT_TIMEOUT:.0f} s ({e.strerror or e}): is "
                        f"a cluster running there (ray start --head)? Without --address a local one starts") from None


def run_ray(cells: list[Cell], job: Job, started: Started, address: str | None,
            retries: int = 3, gpus_per_cell: float = 1.0) -> Finished:
    """Each cell is a Ray task (1 CPU; with GPUs, 1 GPU and its share of CPUs); a task whose worker dies is
    retried up to `retries` times. Results flow back here, to the driver."""
    try:
        import ray
    except ImportError:
        raise UserError('--executor ray needs Ray: pip install -e ".[ray]"') from None
    if not ray.is_initialized():
        try:
            local = {} if address else {"_node_ip_address": "127.0.0.1"}  # a new local cluster stays on loopback
            ray.init(address=address, log_to_driver=False, include_dashboard=False, **local)
        except Exception as e:
            raise UserError(f"cannot connect to Ray at {address or 'a new local cluster'}: "
                            f"{str(e).splitlines()[0]}") from None
    cpus, gpus = ray_task_resources(ray.cluster_resources(), job.device, gpus_per_cell)
    cpus = job.threads or cpus
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries)(_threaded_job)
    yield from dispatch(cells, job, started, lambda cell: remote.remote(cell, job, cpus),
                        lambda refs: ray.wait(refs, num_returns=1, timeout=TICK)[0], ray.get)
