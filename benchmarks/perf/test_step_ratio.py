"""Cost of one mask-search step relative to one dense training step of the same model.

Run with ``pytest benchmarks/perf`` (not part of the default test run); ``--benchmark-save NAME`` and
``--benchmark-compare`` compare runs. The search step is the trainer's own `search_step`; the dense step
is a plain forward/backward/SGD-momentum step with every weight trainable.

The ratio is paired: each benchmark round first times a block of dense steps, then pytest-benchmark times
a block of search steps, so both medians come from the same stretch of machine time (on a shared machine
the speed drifts by tens of per cent from minute to minute; unpaired ratios inherit that drift). Each
row's extra info carries ``dense_ms`` and ``ratio_to_dense``, and a table of ratios closes the run.

Memory: each row also records the training state (parameters, gradients, optimiser state) in MB and its
ratio to the dense step's, and on CUDA the step's peak allocated memory (activations included).
One-shot baselines (random, magnitude, SNIP, GraSP, SynFlow) have no search step and are not timed.
`PERF_AMP=1` runs every step under bf16 autocast; `PERF_ARCHS=lenet300,conv4` narrows the architectures;
`PERF_BATCHES=32,128,512` sets the batch sizes (default 128). On CUDA, conv nets run channels_last with
cudnn.benchmark, as the trainer runs them.

Each step fails when its ratio exceeds its architecture's budget (`RATIO_BUDGET`, about 1.3x the worst
ratio measured on 2 CPU cores at batch 128: LeNet-300's small layers leave CRBG's fixed per-step noise
draw at about 3x a dense step; conv nets stay near 1.2); `PERF_MAX_RATIO=x` replaces every budget.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import pytest
import torch
from torch import nn

from benchmarks.trainer import cuda_layout, resolve_device, search_step
from benchmarks.zoo import build_model
from methods import METHODS, get_method

ARCHS = {"lenet300": (1, 28, 28), "conv4": (3, 32, 32), "resnet18": (3, 32, 32)}
RATIO_BUDGET = {"lenet300": 4.0, "conv4": 1.6, "resnet18": 1.6}  # search step / dense step, at most


def env_list(name: str, default: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """A comma-separated environment variable; an unknown entry is an error that names it."""
    values = [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]
    bad = [v for v in values if (v not in allowed if allowed else not v.isdigit() or int(v) < 1)]
    if bad or not values:
        raise ValueError(f"{name}: unknown or invalid entries {bad or values!r}; "
                         f"expected {', '.join(allowed) if allowed else 'positive batch sizes'}")
    return values


SELECTED = env_list("PERF_ARCHS", ",".join(ARCHS), tuple(ARCHS))
BATCHES = tuple(int(b) for b in env_list("PERF_BATCHES", "128"))
SPARSITY = 0.9
DEVICE = resolve_device("auto")
AMP = os.environ.get("PERF_AMP") == "1"
SEARCHING = sorted(name for name, cls in METHODS.items() if cls.searches)


def plan(arch: str) -> tuple[int, int]:
    """(rounds, steps per block): enough steps per block that a block is well above timer noise."""
    if DEVICE.type == "cuda":
        return 30, 10
    return {"lenet300": (15, 50), "conv4": (10, 1)}.get(arch, (5, 1))


def state_mb(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Parameters, their gradients and the optimiser's per-parameter state, in MB."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_step(arch: str, method: str, batch: int) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    shape = ARCHS[arch]
    model = build_model(arch, 10, shape).to(DEVICE).train()
    x = torch.randn(batch, *shape, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    pruner = None if method == "dense" else get_method(method)(model, SPARSITY, regime=get_method(method).regimes[0])
    model.to(DEVICE)
    if cuda_layout(model, DEVICE):  # as the trainer runs conv nets on CUDA (masks included)
        x = x.contiguous(memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss()
    if pruner is None:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AMP):
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
    else:
        opt, sched = pruner.optimizer(10_000)
        counter = iter(range(10**9))

        def step() -> None:
            search_step(model, pruner, opt, sched, criterion, x, y, next(counter), amp=AMP)
            sync()
    return step, model, opt


def measure_memory(step: Callable[[], None], model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, float]:
    memory = {"state_mb": state_mb(model, opt)}
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        memory["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return memory


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("method", ["dense", *SEARCHING])
@pytest.mark.parametrize("arch", [a for a in ARCHS if a in SELECTED])
def test_step(benchmark, medians, medians_memory, arch: str, method: str, batch: int) -> None:
    rounds, block = plan(arch)
    step, model, opt = make_step(arch, method, batch)
    dense_step, dense_model, dense_opt = step, model, opt
    if method != "dense":
        dense_step, dense_model, dense_opt = make_step(arch, "dense", batch)
    for _ in range(3):  # warm-up: allocator, cudnn autotuning, lazy init
        step()
        dense_step()
    memory = measure_memory(step, model, opt)
    dense_memory = measure_memory(dense_step, dense_model, dense_opt)
    medians_memory[(arch, batch, method)] = memory
    medians_memory[(arch, batch, "dense")] = dense_memory
    dense_times: list[float] = []

    def time_dense_block() -> None:  # pytest-benchmark's untimed setup before each timed round
        start = time.perf_counter()
        for _ in range(block):
            dense_step()
        dense_times.append((time.perf_counter() - start) / block)

    def block_of_steps() -> None:
        for _ in range(block):
            step()

    benchmark.group = f"{arch} batch {batch} ({DEVICE.type})"
    benchmark.pedantic(block_of_steps, setup=time_dense_block, rounds=rounds, iterations=1)
    median = benchmark.stats.stats.median / block
    dense = statistics.median(dense_times)
    medians[(arch, batch, method)] = (median, dense)
    benchmark.extra_info.update(memory, arch=arch, method=method, batch=batch, device=DEVICE.type,
                                sparsity=SPARSITY, amp=AMP, steps_per_round=block, ms_per_step=median * 1e3,
                                dense_ms=dense * 1e3, ratio_to_dense=median / dense,
                                state_ratio_to_dense=memory["state_mb"] / dense_memory["state_mb"])
    budget = float(os.environ.get("PERF_MAX_RATIO", RATIO_BUDGET[arch] if batch >= 128 else 2 * RATIO_BUDGET[arch]))
    assert median / dense <= budget, f"{method} on {arch} at batch {batch}: a search step costs {median / dense:.2f} " \
                                     f"dense steps, over the budget of {budget}"
