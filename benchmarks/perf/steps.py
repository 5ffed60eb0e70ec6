"""The two steps a step-ratio measurement compares, shared by the perf suite (`test_step_ratio`) and the CI
perf guard (`tests/test_perf_guard.py`): one mask-search step (the trainer's own `search_step`) and one
dense training step of the same model (forward, backward, SGD with momentum, every weight trainable)."""

from __future__ import annotations

import os
from typing import Callable

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
    opt = getattr(opt, "inner", opt)  # IMP: the optimiser of its current round
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


