"""A cell's row and mask do not depend on the number of CPU threads it runs with (what makes sequential,
``--workers N`` and Ray runs agree): every searching method in every regime it runs in, on real MNIST, a few
hundred steps, at 1 and at 2 threads, masks compared exactly.

The methods' own reductions are made invariant (`methods.reduce`); PyTorch's CPU matrix products are
invariant only in MKL's strict reproducibility mode (`benchmarks/__init__.py` sets it), so where this
machine's are not (a probe of LeNet-300's forward and backward: another BLAS), the test is skipped with that
reason; `bench run --threads N` then pins the count for every executor."""

from __future__ import annotations

import pytest
import torch

from benchmarks.cell import run_cell
from benchmarks.data import load_dataset
from benchmarks.spec import SweepSpec
from methods import METHODS
from methods.reduce import total

ROW = ("sparsity", "kept_weights", "test_acc", "val_acc", "sparsity_before_projection", "val_acc_before_projection",
       "status")


def at_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_total_is_the_same_at_any_thread_count():
    x = torch.rand(1_000_003, generator=torch.Generator().manual_seed(0))
    sums = {at_threads(n, lambda: total(x).item()) for n in (1, 2, 3, 4)}
    assert len(sums) == 1
    assert abs(sums.pop() - x.double().sum().item()) < 1e-3 * x.numel() ** 0.5
    assert total(torch.ones(5)).item() == 5.0  # below one block


def kernels_invariant() -> bool:
    """Whether this machine's LeNet-300 forward and backward give bit-equal results at 1 and 2 threads."""
    def step():
        g = torch.Generator().manual_seed(0)
        x, w1, w2 = torch.randn(128, 784, generator=g), torch.randn(300, 784, generator=g), torch.randn(100, 300, generator=g)
        w1.requires_grad_(True), w2.requires_grad_(True)
        out = torch.relu(x @ w1.T) @ w2.T
        out.square().mean().backward()
        return out.detach(), w1.grad, w2.grad  # w2's: a small product over the batch, split by thread
    a, b = at_threads(1, step), at_threads(2, step)
    return all(torch.equal(p, q) for p, q in zip(a, b))


def cells():
    specs = [SweepSpec(methods=sorted(m for m, c in METHODS.items() if c.searches and regime in c.regimes),
                       regime=regime, sparsity=[0.9], epochs=regime_epochs, batch_size=64, train_size=4000)
             for regime, regime_epochs in (("strong", 4), ("weak", 1), ("joint", 2))]
    return [c for spec in specs for c in spec.cells()]


@pytest.mark.parametrize("cell", cells(), ids=lambda c: f"{c.method}-{c.regime}")
def test_a_cell_gives_the_same_row_and_mask_at_one_and_two_threads(cell, mnist_data_root):
    if not kernels_invariant():
        pytest.skip("PyTorch's matmul kernels on this CPU depend on the thread count (bench run --threads pins it)")
    splits = load_dataset("mnist", mnist_data_root)
    one, two = (at_threads(n, lambda: run_cell(cell, splits, torch.device("cpu"), progress=False)) for n in (1, 2))
    assert one.run["status"] == "ok", one.run.get("error")
    assert {k: one.run.get(k) for k in ROW} == {k: two.run.get(k) for k in ROW}
    assert one.masks.keys() == two.masks.keys()
    assert all(torch.equal(one.masks[k], two.masks[k]) for k in one.masks)
