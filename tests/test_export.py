"""`bench export` then `load_ticket`: a finished cell's ticket leaves the results folder as one file and
reproduces its row's test accuracy exactly, in both regimes and both formats."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from benchmarks import load_ticket
from benchmarks.cli import main
from benchmarks.data import load_dataset
from benchmarks.errors import UserError
from benchmarks.trainer import evaluate
from tests.conftest import mnist_root


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    mnist_data_root = mnist_root()
    if mnist_data_root is None:
        pytest.skip("MNIST not found: set TICKETBENCH_DATA to a folder with MNIST/raw")
    out = tmp_path_factory.mktemp("export") / "o"
    assert main(["run", "--methods", "edgepopup,crbg", "--sparsity", "0.9", "--epochs", "1", "--train-size", "600",
                 "--arch", "lenet300", "--dataset", "mnist", "--data-root", str(mnist_data_root), "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["run", "--methods", "magnitude", "--regime", "weak", "--sparsity", "0.5", "--epochs", "1",
                 "--train-size", "600", "--arch", "lenet300", "--dataset", "mnist", "--data-root",
                 str(mnist_data_root), "--out", str(out), "--no-progress"]) == 0
    return out, pd.read_csv(out / "runs.csv"), load_dataset("mnist", mnist_data_root, download=False)


@pytest.mark.parametrize("method", ["edgepopup", "crbg", "magnitude"])
@pytest.mark.parametrize("fmt", ["pt", "torchscript"])
def test_exported_ticket_reproduces_its_rows_accuracy(finished, method, fmt, tmp_path, capsys):
    out, runs, splits = finished
    row = runs[runs.method == method].iloc[0]
    path = tmp_path / f"t.{'ts' if fmt == 'torchscript' else 'pt'}"
    assert main(["export", str(out), "--cell", row.cell[:8], "--format", fmt, "--out", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    model = load_ticket(path)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert evaluate(model, splits, "test", 256, torch.device("cpu")) == row.test_acc
    meta = model.ticket_metadata
    assert (meta["cell"], meta["method"], meta["settings"]["seed"]) == (row.cell, method, 0)
    assert float(meta["test_acc"]) == row.test_acc
    if fmt == "pt":  # a plain module with the mask baked in: its zeros are the mask's
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        kept = sum(int((w != 0).sum()) for w in weights)
        assert kept == row.kept_weights and not any(hasattr(m, "parametrizations") for m in model.modules())


@pytest.mark.parametrize("method", ["edgepopup", "magnitude"])
def test_onnx_export_runs_in_onnxruntime_as_the_ticket_does(finished, method, tmp_path, capsys):
    """The ONNX file, run by onnxruntime on real test images at two batch sizes, gives the PyTorch ticket's
    logits (strong: frozen weights redrawn from the seed; weak: trained weights), and carries the metadata."""
    import json

    import numpy as np
    import onnx
    import onnxruntime

    out, runs, splits = finished
    row = runs[runs.method == method].iloc[0]
    pt, path = tmp_path / "t.pt", tmp_path / "t.onnx"
    assert main(["export", str(out), "--cell", row.cell, "--out", str(pt)]) == 0
    assert main(["export", str(out), "--cell", row.cell, "--format", "onnx", "--out", str(path)]) == 0
    model = load_ticket(pt)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = splits.transform(splits.test.tensors[0][:300])
    for batch in (x[:1], x):
        (got,) = session.run(["logits"], {"input": batch.numpy()})
        with torch.no_grad():
            want = model(batch).numpy()
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["ticketbench"])
    assert meta["cell"] == row.cell and float(meta["test_acc"]) == row.test_acc
    with pytest.raises(UserError, match="ONNX graph"):
        load_ticket(path)


def test_slimmed_structured_ticket_is_smaller_and_computes_the_same(mnist_data_root, tmp_path, capsys):
    """`bench export --slim` end to end: a structured CRBG ticket of lenet300 loses its gated-off units
    physically (fewer parameters, narrower layers) and gives the masked ticket's outputs (max abs difference
    1e-5) and its row's accuracy (conv, residual and transformer nets: the direct test below)."""
    out = tmp_path / "o"
    for arch in ("lenet300",):
        assert main(["run", "--methods", "crbg", "--granularity", "structured", "--sparsity", "0.5", "--epochs", "1",
                     "--train-size", "600", "--arch", arch, "--dataset", "mnist", "--data-root", str(mnist_data_root),
                     "--out", str(out), "--no-progress"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    splits = load_dataset("mnist", mnist_data_root, download=False)
    x = splits.transform(splits.test.tensors[0][:256])
    for row in runs.itertuples():
        masked, slimmed = tmp_path / f"{row.arch}.pt", tmp_path / f"{row.arch}.slim.pt"
        assert main(["export", str(out), "--cell", row.cell, "--out", str(masked)]) == 0
        assert main(["export", str(out), "--cell", row.cell, "--slim", "--out", str(slimmed)]) == 0
        a, b = load_ticket(masked), load_ticket(slimmed)
        meta = b.ticket_metadata
        assert meta["slimmed"] and meta["parameters_slim"] < meta["parameters"] * 0.75, row.arch
        first = next(m for m in b.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
        assert first.weight.shape[0] < next(m for m in a.modules() if isinstance(m, type(first))).weight.shape[0]
        with torch.no_grad():
            assert (a(x) - b(x)).abs().max() <= 1e-5
        assert evaluate(b, splits, "test", 256, torch.device("cpu")) == row.test_acc
    capsys.readouterr()


@pytest.mark.parametrize("arch,shape", [("lenet300", (1, 28, 28)), ("conv4", (3, 32, 32)), ("resnet20", (3, 32, 32)),
                                        ("resnet50", (3, 32, 32)), ("timm:vit_tiny_patch16_224", (3, 32, 32))])
def test_structured_crbg_tickets_slim_exactly_on_every_architecture(arch, shape):
    """A structured CRBG ticket (half of every gated layer's units off, strong regime, BatchNorm recalibrated
    under the mask) loses units physically on plain, residual and transformer nets, and the slimmed model gives
    the masked one's outputs within 1e-5: residual channels go only where every layer writing into the sum
    zeroed them, ViT attention and LayerNorm'd channels stay whole, its MLP's hidden units go."""
    from benchmarks.slim import in_float64, slim
    from benchmarks.zoo import build_model
    from methods import get_method

    torch.manual_seed(0)
    pruner = get_method("crbg")(build_model(arch, 10, shape), 0.5, "structured")
    gen = torch.Generator().manual_seed(1)
    for mask in pruner.gated():
        n = mask.mask_shape[0]
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[: n // 2]] = True
        mask.freeze(keep)
    x = torch.randn(8, *shape, generator=gen)
    model = pruner.bake()
    with torch.no_grad():
        model.train()
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
            bn.reset_running_stats(), setattr(bn, "momentum", None)
        model(torch.randn(32, *shape, generator=gen))  # statistics under the final mask, as a finished cell has
        model.eval()
    masked = in_float64(model, x)
    before = sum(p.numel() for p in model.parameters())
    meta = {"cell": "c", "arch": arch, "input_shape": list(shape)}
    slimmed = slim(model, meta)
    assert meta["parameters_slim"] < 0.9 * before
    assert (in_float64(slimmed, x) - masked).abs().max() <= 1e-5  # float64: the surgery, not fp32 rounding


def test_slim_folds_a_removed_units_constant_into_linear_readers_only(tmp_path):
    """A removed channel whose BatchNorm shift still sends a constant on: into a Linear reader (through Flatten)
    the constant is folded into the reader's bias and the channel goes; into a convolution (zero padding makes
    it vary at the borders) the channel stays. Either way the outputs are the masked model's. A ViT whose MLP
    biases were trained (weak regime) loses its dead hidden units with their GELU(bias) folded the same way."""
    from benchmarks.slim import in_float64, slim
    from benchmarks.zoo import build_model

    def shifted(head: list) -> torch.nn.Sequential:
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                    *head).eval()
        with torch.no_grad():
            model[0].weight[1] = 0
            model[1].running_mean.fill_(-1.0)  # the dead channel becomes (0 + 1) / std: a constant, not zero
        return model

    x = torch.randn(3, 1, 28, 28)
    meta = {"cell": "c", "arch": "a", "input_shape": [1, 28, 28]}
    into_linear = shifted([torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10, bias=False)])
    expected = in_float64(into_linear, x)
    out = slim(into_linear, dict(meta))
    assert out[0].weight.shape[0] == 3 and out[4].bias is not None
    assert (in_float64(out, x) - expected).abs().max() <= 1e-5
    into_conv = shifted([torch.nn.Conv2d(4, 2, 3, padding=1, bias=False), torch.nn.Flatten(),
                         torch.nn.Linear(2 * 26 * 26, 10, bias=False)])
    expected = in_float64(into_conv, x)
    out = slim(into_conv, dict(meta))
    assert out[0].weight.shape[0] == 4 and (in_float64(out, x) - expected).abs().max() <= 1e-5

    torch.manual_seed(0)
    vit = build_model("timm:vit_tiny_patch16_224", 10, (3, 32, 32)).eval()
    with torch.no_grad():
        for block in vit.blocks:
            block.mlp.fc1.weight[::2] = 0  # half of the hidden units removed ...
            block.mlp.fc1.bias.normal_()  # ... with trained, nonzero biases
    x = torch.randn(2, 3, 32, 32)
    expected, before = in_float64(vit, x), sum(p.numel() for p in vit.parameters())
    vit_meta = {"cell": "c", "arch": "vit", "input_shape": [3, 32, 32]}
    out = slim(vit, vit_meta)
    assert vit_meta["parameters_slim"] < 0.8 * before and out.blocks[0].mlp.fc1.out_features == 384
    assert (in_float64(out, x) - expected).abs().max() <= 1e-5


def test_export_errors_are_one_line(finished, capsys):
    out, _, _ = finished
    assert main(["export", str(out), "--cell", "zzzz"]) == 2
    assert "no cell id starts with 'zzzz'" in capsys.readouterr().err
    assert main(["export", str(out.parent), "--cell", "a"]) == 2
    assert "no plan.json" in capsys.readouterr().err
