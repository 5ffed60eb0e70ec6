"""What a ticket costs: MACs counted by PyTorch's FLOP counter and scaled by each layer's kept fraction, and
the bytes to store it (seed + compressed mask in the strong regime)."""

from __future__ import annotations

import lzma

import numpy as np
import pytest
import torch

from benchmarks.cost import deployable_forms, ticket_cost
from benchmarks.zoo import build_model
from methods import get_method


def pruner(method, arch, shape, target, regime="strong", granularity="unstructured"):
    torch.manual_seed(0)
    p = get_method(method)(build_model(arch, 10, shape), target, granularity, regime=regime)
    p.finalize()
    return p


def test_linear_ticket_costs_one_mac_per_kept_weight_and_compresses_its_mask():
    p = pruner("edgepopup", "lenet300", (1, 28, 28), 0.9)
    cost, layers = ticket_cost(p, (1, 28, 28), p.report(), p.masks())
    n = 784 * 300 + 300 * 100 + 100 * 10
    assert cost["flops_dense"] == n and cost["flops"] == p.report().kept == pytest.approx(0.1 * n, abs=3)
    assert layers["fc2"] == {"flops": 3000, "flops_dense": 30000}
    assert cost["bytes_dense"] == 4 * n and cost["bytes_mask_raw"] == -(-n // 8)
    bits = np.concatenate([m.flatten().numpy() for m in p.masks().values()]).astype(np.uint8)
    assert cost["bytes_ticket"] == 8 + len(lzma.compress(np.packbits(bits).tobytes(), preset=9 | lzma.PRESET_EXTREME))
    # a 10 % mask holds about 0.47 bits of entropy per weight: the stored ticket is far below 1 bit per weight
    assert cost["bytes_ticket"] < 0.7 * cost["bytes_mask_raw"] and cost["bytes_ticket"] < cost["bytes_dense"] / 45


def test_weak_ticket_stores_its_kept_weights_and_conv_macs_follow_the_counter():
    p = pruner("magnitude", "lenet300", (1, 28, 28), 0.5, regime="weak")
    p.prepare(None)
    cost, _ = ticket_cost(p, (1, 28, 28), p.report(), p.masks())
    bits = np.concatenate([m.flatten().numpy() for m in p.masks().values()]).astype(np.uint8)
    packed = len(lzma.compress(np.packbits(bits).tobytes(), preset=9 | lzma.PRESET_EXTREME))
    unmasked = sum(t.numel() for n, t in p.model.named_parameters() if "parametrizations" not in n)  # lenet300: 0
    assert cost["bytes_ticket"] == 4 * p.report().kept + packed + 4 * unmasked  # kept weights, not all of them
    r = pruner("random", "resnet20", (3, 32, 32), 0.5)
    r.prepare(None)
    cost, layers = ticket_cost(r, (3, 32, 32), r.report(), r.masks())
    assert cost["flops_dense"] == 40_813_184  # resnet20 at 32 x 32: 40.8 M MACs
    assert layers["conv1"]["flops_dense"] == 16 * 3 * 9 * 32 * 32
    assert cost["flops"] == pytest.approx(0.5 * cost["flops_dense"], rel=0.05)  # every layer at about half


def test_structured_ticket_counts_the_columns_of_removed_units():
    p = pruner("crbg", "lenet300", (1, 28, 28), 0.5, granularity="structured")
    p.project_global(0.5)
    cost, layers = ticket_cost(p, (1, 28, 28), p.report(), p.masks())
    rep = {layer.name: layer for layer in p.report().layers}
    assert layers["fc2"]["flops"] == rep["fc2"].kept < 0.5 * 30000  # rows and columns both removed
    assert cost["flops"] == sum(layer.kept for layer in rep.values())


def test_deployable_forms_compute_the_ticket_and_leave_the_pruner_intact():
    p = pruner("edgepopup", "lenet300", (1, 28, 28), 0.9)
    forms = deployable_forms(p, (1, 28, 28))
    assert "slim" not in forms  # unstructured: nothing to cut out
    x = torch.randn(5, 1, 28, 28)
    p.model.eval()
    with torch.no_grad():
        expected = p.model(x)
        assert torch.allclose(forms["masked"](x), expected) and torch.allclose(forms["csr"](x), expected, atol=1e-5)
        assert not torch.allclose(forms["dense"](x), expected)
    assert all(isinstance(m, torch.nn.Linear) and not hasattr(m, "parametrizations")
               for n, m in forms["masked"].named_modules() if n.startswith("fc"))
    assert p.model.fc1.weight.shape == (300, 784)  # the pruner's parametrized model still works
    assert int((p.model.fc1.weight != 0).sum()) == int(p.masks()["fc1"].sum())


def test_latency_is_the_median_of_the_timed_repeats_after_three_warm_ups(monkeypatch):
    """Each form at each batch size: three warm-up passes (the clock read once, nothing kept), then 30 timed
    passes whose median, in ms, is the column."""
    import statistics

    import benchmarks.cost as cost

    p = pruner("edgepopup", "lenet300", (1, 28, 28), 0.9)
    forms = len(deployable_forms(p, (1, 28, 28)))
    reads, timed = [], []
    real_clock, real_median = cost.time.perf_counter, statistics.median

    def clock():
        reads.append(1)
        return real_clock()

    def median(values):
        timed.append(list(values))
        return real_median(values)
    monkeypatch.setattr(cost.time, "perf_counter", clock)
    monkeypatch.setattr(cost.statistics, "median", median)
    out = cost.latency(p, (1, 28, 28), batches=(1, 4))
    assert len(reads) == 2 * forms * (3 + 2 * 30)  # two batch sizes; warm-ups read the clock once, timed twice
    assert len(timed) == 2 * forms and all(len(t) == 30 for t in timed)
    columns = [out[f"latency_ms_{name}_b{b}"] for b in (1, 4) for name in ("dense", "masked", "csr")]
    assert columns == [round(1e3 * real_median(t), 4) for t in timed]


def test_measure_latency_fills_its_columns(tmp_path, mnist_data_root):
    from benchmarks.cli import main
    import pandas as pd

    out = tmp_path / "o"
    assert main(["run", "--methods", "edgepopup", "--sparsity", "0.9", "--epochs", "1", "--train-size", "300",
                 "--measure-latency", "--arch", "lenet300", "--dataset", "mnist", "--data-root", str(mnist_data_root),
                 "--out", str(out), "--no-progress"]) == 0
    row = pd.read_csv(out / "runs.csv").iloc[0]
    for form in ("dense", "masked", "csr"):
        for batch in (1, 64):
            assert 0 < row[f"latency_ms_{form}_b{batch}"] < 1000
    assert row.latency_threads >= 1 and row.flops < row.flops_dense


def test_a_structured_ticket_is_timed_slimmed_too(tmp_path, mnist_data_root):
    """A structured ticket that slims exactly gets a fourth timed form, `slim`, beside dense, masked and csr."""
    from benchmarks.cli import main
    import pandas as pd

    out = tmp_path / "o"
    assert main(["run", "--methods", "crbg", "--granularity", "structured", "--sparsity", "0.5", "--epochs", "1",
                 "--train-size", "300", "--measure-latency", "--arch", "lenet300", "--dataset", "mnist",
                 "--data-root", str(mnist_data_root), "--out", str(out), "--no-progress"]) == 0
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert 0 < row.latency_ms_slim_b1 < 1000 and 0 < row.latency_ms_slim_b64 < 1000
    p = pruner("crbg", "lenet300", (1, 28, 28), 0.5, granularity="structured")
    p.project_global(0.5)
    forms = deployable_forms(p, (1, 28, 28))
    count = {name: sum(t.numel() for t in m.parameters()) for name, m in forms.items()}
    assert count["slim"] < 0.6 * count["masked"] and count["masked"] == count["dense"]  # the units are gone
