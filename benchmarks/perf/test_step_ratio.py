"""Cost of one mask-search step relative to one dense training step of the same model.

Run with ``pytest benchmarks/perf`` (not part of the default test run); ``--benchmark-save NAME`` and
``--benchmark-compare`` compare runs. Each method's row carries ``ratio_to_dense`` in its extra info, and
a table of ratios closes the run. The search step is the trainer's own `search_step`; the dense step is
a plain forward/backward/SGD-momentum step with every weight trainable.

Memory: each row also records the training state (parameters, gradients, optimiser state) in MB and its
ratio to the dense step's, and on CUDA the step's peak allocated memory (activations included).
One-shot baselines (random, magnitude, SNIP, GraSP, SynFlow) have no search step and are not timed.
`PERF_AMP=1` runs every step under bf16 autocast.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from benchmarks.trainer import resolve_device, search_step
from benchmarks.zoo import build_model
from methods import METHODS, get_method

ARCHS = {"lenet300": (1, 28, 28), "conv4": (3, 32, 32), "resnet18": (3, 32, 32)}
BATCHES = (128,)
SPARSITY = 0.9
DEVICE = resolve_device("auto")
AMP = os.environ.get("PERF_AMP") == "1"
SEARCHING = sorted(name for name, cls in METHODS.items() if cls.searches)


def state_mb(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Parameters, their gradients and the optimiser's per-parameter state, in MB."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_step(arch: str, method: str, batch: int):
    torch.manual_seed(0)
    shape = ARCHS[arch]
    model = build_model(arch, 10, shape).to(DEVICE).train()
    x = torch.randn(batch, *shape, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    criterion = nn.CrossEntropyLoss()
    if method == "dense":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AMP):
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
    else:
        pruner = get_method(method)(model, SPARSITY)
        model.to(DEVICE)
        opt, sched = pruner.optimizer(10_000)
        counter = iter(range(10**9))

        def step() -> None:
            search_step(model, pruner, opt, sched, criterion, x, y, next(counter), amp=AMP)
            sync()
    return step, model, opt


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("method", ["dense", *SEARCHING])  # dense first: the ratios need it
@pytest.mark.parametrize("arch", list(ARCHS))
def test_step(benchmark, medians, medians_memory, arch: str, method: str, batch: int) -> None:
    step, model, opt = make_step(arch, method, batch)
    for _ in range(3):  # warm-up: allocator, cudnn autotuning, lazy init
        step()
    memory = {"state_mb": state_mb(model, opt)}
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        memory["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    medians_memory[(arch, batch, method)] = memory
    benchmark.extra_info.update(memory)
    benchmark.group = f"{arch} batch {batch} ({DEVICE.type})"
    benchmark.extra_info.update(arch=arch, method=method, batch=batch, device=DEVICE.type, sparsity=SPARSITY, amp=AMP)
    benchmark.pedantic(step, rounds=10 if arch == "resnet18" else 30, warmup_rounds=1)
    median = benchmark.stats.stats.median
    medians[(arch, batch, method)] = median
    dense = medians.get((arch, batch, "dense"))
    if dense:
        benchmark.extra_info["ratio_to_dense"] = median / dense
