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

import pytest

from benchmarks.perf.steps import (AMP, ARCHS, BATCHES, DEVICE, RATIO_BUDGET, SEARCHING, SELECTED, SPARSITY,
                                   make_step, measure_memory, plan)


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
