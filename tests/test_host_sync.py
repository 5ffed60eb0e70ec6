"""No host-device synchronisation inside a step, checked on the CPU.

On CUDA a value read back to the host (``.item()``, ``float(t)``, ``if t:``) or an op whose output size
depends on the data (``nonzero``, boolean indexing) waits for every queued kernel. `tests/test_cuda.py`
checks this with the CUDA sync debugger where there is a GPU; here the same calls are caught as aten ops
by a dispatch mode, so every machine checks it. Edge-Popup's band around last step's threshold is a
CPU-only path (it counts on the host); it is switched off here, as it is on CUDA.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import TensorDataset

from benchmarks.data import CIFAR_STATS, Splits, crop_flip, load_dataset, normalizer
from benchmarks.recipe import Recipe
from benchmarks.phases import train
from benchmarks.trainer import CellRun, search_step
from benchmarks.zoo import build_model
from methods import METHODS, get_method
from methods.edgepopup import BandedThreshold

SEARCHING = sorted(name for name, cls in METHODS.items() if cls.searches)
HOST_READS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "aten::nonzero_static",
              "aten::masked_select", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
              "aten::repeat_interleave"}


class HostToDevice(TorchDispatchMode):
    """Counts copies from host memory to another device (a pageable copy makes a CUDA stream wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        src, dst = (args[1], args[0]) if name == "aten::copy_" else (args[0], out)
        if name in ("aten::copy_", "aten::_to_copy") and src.device.type == "cpu" and dst.device.type != "cpu":
            self.copies += 1
        return out


class HostReads(TorchDispatchMode):
    """Counts the aten ops that would make the host wait for the device on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in HOST_READS:
            self.seen[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


REAL_BANDED = BandedThreshold.banded  # before the fixture pins it


@pytest.fixture(autouse=True)
def gpu_selection(monkeypatch):
    monkeypatch.setattr(BandedThreshold, "banded", staticmethod(lambda x: False))


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("arch,shape", [("lenet300", (1, 28, 28)), ("conv2", (3, 32, 32))])
@pytest.mark.parametrize("method", SEARCHING)
def test_search_step_reads_nothing_back(method, arch, shape, amp):
    torch.manual_seed(0)
    model = build_model(arch, 10, shape).train()
    pruner = get_method(method)(model, 0.9, regime=get_method(method).regimes[0])
    opt, sched = pruner.optimizer(100)
    x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    for step in range(2):  # lazy state (optimiser moments) first
        search_step(model, pruner, opt, sched, nn.CrossEntropyLoss(), x, y, step, amp=amp)
    with HostReads() as reads:
        for step in range(2, 5):
            search_step(model, pruner, opt, sched, nn.CrossEntropyLoss(), x, y, step, amp=amp)
    assert not reads.seen, f"{method} reads values back to the host inside a step: {dict(reads.seen)}"


class UnfusedAdam(torch.optim.Adam):
    """Adam without the fused kernel, which the meta device lacks (same arithmetic)."""

    def __init__(self, params, *args, fused=None, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)


@pytest.mark.parametrize("method", SEARCHING)
def test_search_step_reads_no_value_on_a_device(method, monkeypatch):
    """The whole search step (`search_step`: loss, penalty, backward, optimiser, schedule, dual updates, rounds)
    on the meta device, where tensors have no values: any read to the host, `.item()`, `.tolist()`, `.cpu()`,
    `.numpy()`, `float()`, `if tensor:`, fails there, so this sees what the aten-op check above cannot."""
    import contextlib

    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())  # no meta autocast
    monkeypatch.setattr(torch.optim, "Adam", UnfusedAdam)
    torch.manual_seed(0)
    meta = torch.device("meta")
    model = build_model("conv2", 10, (3, 32, 32)).train()
    pruner = get_method(method)(model, 0.9, regime=get_method(method).regimes[0])
    model.to(meta)
    opt, sched = pruner.optimizer(6)
    x, y = torch.randn(8, 3, 32, 32, device=meta), torch.randint(0, 10, (8,), device=meta)
    for step in range(6):  # imp: a round ends at step 3 (prune, rewind, restart)
        loss = search_step(model, pruner, opt, sched, nn.CrossEntropyLoss(), x, y, step)
    assert loss.is_meta


def test_the_banded_threshold_is_off_on_cuda_tensors():
    """The fixture above pins the band off, as it is on a GPU; here the predicate itself: the band (which
    counts on the host) is tried only off CUDA."""
    assert REAL_BANDED(SimpleNamespace(is_cuda=True)) is False
    assert REAL_BANDED(torch.zeros(3)) is True


def cifar_like(n_train: int) -> Splits:
    """uint8 images, normalised and crop-flip augmented on the device, like CIFAR-10; val and test fixed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + 64, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n_train + 64,), generator=g)
    held = TensorDataset(x[n_train:], y[n_train:])
    return Splits(TensorDataset(x[:n_train], y[:n_train]), held, held, 10, (3, 32, 32),
                  transform=normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), augment=crop_flip)


def reads_in_cell(method: str, n_train: int) -> Counter[str]:
    torch.manual_seed(0)
    sparsity = 0.0 if method == "dense" else 0.8
    pruner = get_method(method)(build_model("conv2", 10, (3, 32, 32)), sparsity, regime="weak")
    with HostReads() as reads:
        train(pruner, cifar_like(n_train), epochs=1, batch_size=16, device=torch.device("cpu"), seed=0,
              progress=False, train_epochs=1, recipe=Recipe().for_arch("conv2"))
    return reads.seen


@pytest.mark.parametrize("method", [*SEARCHING, "dense"])
def test_a_cell_reads_back_per_epoch_not_per_step(method):
    """A whole weak-regime cell (pre-training where the method has it, search, weight training, data on
    the device with augmentation, validation, test): twice the steps, the same host reads."""
    few, many = reads_in_cell(method, 64), reads_in_cell(method, 128)
    assert few == many, f"{method}: host reads grow with the number of steps: {dict(few)} vs {dict(many)}"


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_input_pipeline_copies_from_the_host_once_per_epoch(dataset, mnist_data_root):
    """A training epoch of held data through the trainer's loop (batching, augmentation, normalisation) on a
    device ("meta" stands in for a GPU): one host-to-device copy (the epoch's shuffled order), however many
    batches."""
    if dataset == "mnist":
        splits = load_dataset("mnist", mnist_data_root)
    else:  # CIFAR-10's own pipeline on CIFAR-shaped uint8 images (no CIFAR files here)
        splits = replace(cifar_like(512), transform=normalizer(*CIFAR_STATS["cifar10"]))
    meta = torch.device("meta")
    held = splits.to(meta)
    # the trainer's own epoch loop (`CellRun.epoch_batches`) on a stand-in for the run's state
    run = SimpleNamespace(splits=held, batch_size=64, device=meta, shuffle=torch.Generator().manual_seed(0),
                          channels_last=False)
    with HostToDevice() as h2d:
        n = 0
        for x, _ in CellRun.epoch_batches(run, augment=True):
            n += 1
    assert x.is_meta and x.dtype == torch.float32 and n > 5
    assert h2d.copies == 1, f"{dataset}: {h2d.copies} host-to-device copies in an epoch of {n} batches"
