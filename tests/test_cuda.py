"""The CUDA path (skipped without a GPU): a search step never waits on the host, with and without bf16
autocast, and a cell runs end to end on the device."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.trainer import cuda_layout, search_step
from benchmarks.zoo import build_model
from methods import METHODS, get_method

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SEARCHING = sorted(name for name, cls in METHODS.items() if cls.searches)


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("arch,shape", [("lenet300", (1, 28, 28)), ("conv2", (3, 32, 32))])
@pytest.mark.parametrize("method", SEARCHING)
def test_search_step_has_no_host_device_sync(method, arch, shape, amp):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(arch, 10, shape).to(device).train()
    pruner = get_method(method)(model, 0.9, regime=get_method(method).regimes[0])
    model.to(device)
    cuda_layout(model, device)  # the trainer's layout: conv nets (masks included) channels_last
    opt, sched = pruner.optimizer(100)
    x = torch.randn(32, *shape, device=device)
    y = torch.randint(0, 10, (32,), device=device)
    criterion = nn.CrossEntropyLoss()
    for step in range(3):  # lazy initialisation (optimiser state, cuBLAS handles) may sync once
        search_step(model, pruner, opt, sched, criterion, x, y, step, amp=amp)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call inside the steps raises
    try:
        for step in range(3, 6):
            loss = search_step(model, pruner, opt, sched, criterion, x, y, step, amp=amp)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


def test_cell_runs_on_the_device_with_amp(tmp_path, capsys):
    out = tmp_path / "cuda"
    assert main(["run", "--methods", "crbg,edgepopup", "--arch", "conv2", "--dataset", "synthetic", "--sparsity",
                 "0.8", "--epochs", "1", "--batch-size", "64", "--amp", "--device", "cuda", "--no-progress",
                 "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert (runs.status == "ok").all() and runs.amp.all()
    assert runs.device.str.startswith("cuda:").all()
