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
    # the refusal: a slimmed model whose outputs moved is never written (here the check is made to see a move)
    import benchmarks.slim as slim_module

    real, seen = slim_module.in_float64, []

    def moved(model, x):
        seen.append(1)
        return real(model, x) + (1.0 if len(seen) > 1 else 0.0)
    slim_module.in_float64 = moved
    try:
        refused = tmp_path / "refused.pt"
        assert main(["export", str(out), "--cell", runs.cell.iloc[0], "--slim", "--out", str(refused)]) == 2
    finally:
        slim_module.in_float64 = real
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be slimmed exactly: outputs move by 1" in err[0] and not refused.exists()


@pytest.mark.parametrize("arch,shape,remain", [("lenet300", (1, 28, 28), 0.47), ("conv4", (3, 32, 32), 0.25),
                                               ("resnet20", (3, 32, 32), 0.47), ("resnet50", (3, 32, 32), 0.42),
                                               ("timm:vit_tiny_patch16_224", (3, 32, 32), 0.68)])
def test_structured_crbg_tickets_slim_exactly_on_every_architecture(arch, shape, remain):
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
    assert meta["parameters_slim"] / before == pytest.approx(remain, abs=0.02)  # the README's figures
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


def one_line(err: str, *parts: str) -> None:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


def test_export_errors_are_one_line(finished, capsys):
    out, _, _ = finished
    assert main(["export", str(out), "--cell", "zzzz"]) == 2
    one_line(capsys.readouterr().err, "no cell id starts with 'zzzz'")
    assert main(["export", str(out.parent), "--cell", "a"]) == 2
    one_line(capsys.readouterr().err, "no plan.json")


def corrupt_cases():
    ones = torch.ones(300, 784, dtype=torch.bool)
    return {
        "masks-garbage": ("masks", b"V\x00\x01garbage", "not a readable masks file"),
        "masks-wrong-keys": ("masks", {"layer1": ones}, "no mask of shape (300, 784) for layer fc1 (found nothing)"),
        "masks-wrong-shape": ("masks", {"fc1": ones[:, :10], "fc2": ones, "fc3": ones},
                              "no mask of shape (300, 784) for layer fc1 (found shape (300, 10))"),
        "ticket-garbage": ("tickets", b"\x80\x02}q", "not a readable ticket file"),
        "ticket-wrong-keys": ("tickets", {"weights": {}}, "not a ticket file of this suite"),
        "ticket-wrong-shape": ("tickets", {"state": {"fc1.parametrizations.weight.original": torch.zeros(3, 3)},
                                           "num_classes": 10, "input_shape": (1, 28, 28)}, "do not fit lenet300"),
        "ticket-unknown-entry": ("tickets", {"state": {"conv9.weight": torch.zeros(3)}, "num_classes": 10,
                                             "input_shape": (1, 28, 28)}, "entries lenet300 does not have (conv9.weight"),
    }


@pytest.mark.parametrize("case", list(corrupt_cases()))
def test_a_corrupt_mask_or_ticket_file_is_one_line_and_left_untouched(finished, case, tmp_path, capsys):
    """Issue 28, point 8: garbage, wrong keys or wrong shapes in masks/<cell>.pt or tickets/<cell>.pt give a
    line naming the file (they gave `Unsupported operand 86`, `KeyError: 'fc1'`, a size mismatch)."""
    import shutil

    out, runs, _ = finished
    folder = tmp_path / "o"
    shutil.copytree(out, folder)
    kind, content, message = corrupt_cases()[case]
    cell = runs[runs.method == "magnitude"].iloc[0].cell
    path = folder / kind / f"{cell}.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    before = path.read_bytes()
    assert main(["export", str(folder), "--cell", cell[:8]]) == 2
    one_line(capsys.readouterr().err, str(path), message)
    assert path.read_bytes() == before and not (folder / "exports").exists()


def test_ticket_metadata_states_its_preprocessing_and_numbers(finished, tmp_path):
    """Issue 28, point 17: MNIST tickets expect (x / 255 - 0.1307) / 0.3081 on uint8 pixels, and applying it
    to raw test images reproduces the row's accuracy; numeric metadata are numbers, empty ones None."""
    out, runs, splits = finished
    row = runs[runs.method == "edgepopup"].iloc[0]
    path = tmp_path / "t.pt"
    assert main(["export", str(out), "--cell", row.cell[:8], "--out", str(path)]) == 0
    model = load_ticket(path)
    meta = model.ticket_metadata
    pre = meta["preprocessing"]
    assert pre["formula"] == "(x / 255 - mean) / std" and pre["mean"] == [0.1307] and pre["std"] == [0.3081]
    assert isinstance(meta["test_acc"], float) and meta["test_acc"] == row.test_acc
    assert isinstance(meta["seed"], int) and meta["unit_sparsity"] is None
    x, y = splits.test.tensors
    mean, std = torch.tensor(pre["mean"]).view(1, -1, 1, 1), torch.tensor(pre["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        acc = 100.0 * float((model((x.float() / 255 - mean) / std).argmax(1) == y).float().mean())
    assert acc == pytest.approx(row.test_acc, abs=0.011)
