"""Datasets: MNIST from idx files, the fixed validation split, folders, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.data import batches, crop_flip, data_root, load_dataset
from benchmarks.errors import UserError


def test_mnist_splits_and_counts(mnist_data_root):
    s = load_dataset("mnist", mnist_data_root, download=False)
    assert (len(s.train), len(s.val), len(s.test)) == (54_000, 6_000, 10_000)
    assert s.test.tensors[1].bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = s.transform(s.train.tensors[0][:2000])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    again = load_dataset("mnist", mnist_data_root, download=False)
    assert torch.equal(again.val.tensors[1], s.val.tensors[1])  # the held-out split is fixed


def test_data_root_flag_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TICKETBENCH_DATA", str(tmp_path))
    assert data_root(None) == tmp_path
    assert str(data_root("elsewhere")) == "elsewhere"


def test_missing_cifar_names_the_folder(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


def test_imagenet_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(folder / f"{i}.png")
    s = load_dataset("imagenet", tmp_path, val_size=0.2)
    assert (len(s.train), len(s.val), len(s.test), s.num_classes) == (8, 2, 10, 2)
    xb, yb = next(batches(s.train, 4, torch.device("cpu")))
    assert xb.shape == (4, 3, 224, 224) and yb.shape == (4,)
    with pytest.raises(UserError, match="ImageNet not found"):
        load_dataset("imagenet", tmp_path / "nothing")
    assert s.to(torch.device("meta")).train is s.train  # folders stay where they are: a DataLoader reads them


def test_folder_datasets_are_decoded_by_worker_processes(tmp_path, monkeypatch):
    """A folder dataset is read by `loader_workers()` processes (one process cannot feed a GPU from JPEGs),
    in the same order, with the same augmentation, as any other run with the same generator."""
    from benchmarks import data

    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / "imagenet" / split / cls / f"{i}.png")
    s = load_dataset("imagenet", tmp_path, val_size=0.0)
    made = []
    monkeypatch.setattr(data, "DataLoader", lambda *a, **kw: made.append(kw) or torch.utils.data.DataLoader(*a, **kw))

    def epoch() -> list[torch.Tensor]:
        return [b for xb, yb in batches(s.train, 4, torch.device("cpu"), shuffle=True,
                                        generator=torch.Generator().manual_seed(3)) for b in (xb, yb)]

    first, again = epoch(), epoch()
    assert made[0]["num_workers"] == data.loader_workers() == min(16, torch.get_num_threads()) > 0
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_tensor_splits_are_put_on_the_device_once(monkeypatch):
    """`Splits.to` moves tensor datasets ("meta" stands in for a GPU here); a worker does it once per dataset."""
    from benchmarks import executors

    s = load_dataset("synthetic", Path("unused"))
    moved = s.to(torch.device("meta"))
    assert all(t.is_meta for ds in (moved.train, moved.val, moved.test) for t in ds.tensors)
    assert (len(moved.train), moved.num_classes, moved.transform) == (len(s.train), s.num_classes, s.transform)
    xb, _ = next(batches(moved.train, 8, torch.device("meta")))
    assert xb.is_meta and xb.shape == (8, *s.input_shape)
    calls = []
    monkeypatch.setattr(executors, "dataset", lambda *a: calls.append(a) or s)
    executors.dataset_on.cache_clear()
    first = executors.dataset_on(torch.device("meta"), "synthetic", None, False, 0.1)
    assert executors.dataset_on(torch.device("meta"), "synthetic", None, False, 0.1) is first and len(calls) == 1
    executors.dataset_on.cache_clear()


def test_crop_flip_is_a_padded_crop_maybe_flipped():
    x = torch.rand(16, 3, 8, 8)
    torch.manual_seed(0)
    y = crop_flip(x, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(y[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert matches, f"image {i} is not a crop of its padded input"
        flips += matches[0][2]
    assert 0 < flips < len(x)


def test_bench_list(capsys):
    for what, expected in (("methods", "crbg"), ("archs", "lenet300"), ("datasets", "mnist")):
        assert main(["list", what]) == 0
        assert expected in capsys.readouterr().out


def write_cifar(root, name: str, n_train: int = 100, n_test: int = 40) -> None:
    """A small dataset in torchvision's exact on-disk format: pickled batches of uint8 rows of 3072 values."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if name == "cifar10" else (["train"], ["test"])
    for names, n in ((files[0], n_train), (files[1], n_test)):
        for fname in names:
            batch = {"data": rng.integers(0, 256, (n // len(names), 3072), dtype=np.uint8),
                     key: rng.integers(0, classes, n // len(names)).tolist()}
            (folder / fname).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"c{i}" for i in range(10)]} if name == "cifar10" else \
        {"fine_label_names": [f"c{i}" for i in range(100)]}
    (folder / ("batches.meta" if name == "cifar10" else "meta")).write_bytes(pickle.dumps(meta))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_in_torchvision_format_runs_a_cell_end_to_end(tmp_path, name, monkeypatch, capsys):
    """The real loading path on files laid out as torchvision's archive extracts them (only the md5 check of
    the official files is bypassed, in this test)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    write_cifar(tmp_path / "data", name)
    s = load_dataset(name, tmp_path / "data", download=False)
    assert s.input_shape == (3, 32, 32) and s.num_classes == (10 if name == "cifar10" else 100)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 40)
    assert s.train.tensors[0].dtype == torch.uint8 and s.augment is not None
    import pickle

    folder = tmp_path / "data" / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    raw = pickle.loads((folder / ("test_batch" if name == "cifar10" else "test")).read_bytes())
    x, y = s.test.tensors  # rows of 1024 red, 1024 green, 1024 blue values: channels first, row-major
    assert torch.equal(x, torch.as_tensor(raw["data"]).view(-1, 3, 32, 32))
    assert y.tolist() == raw["labels" if name == "cifar10" else "fine_labels"]
    out = tmp_path / "res"
    assert main(["run", "--methods", "edgepopup", "--arch", "conv2", "--dataset", name, "--epochs", "1",
                 "--sparsity", "0.5", "--data-root", str(tmp_path / "data"), "--out", str(out), "--no-download",
                 "--no-progress"]) == 0, capsys.readouterr().err
    import pandas as pd

    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row["status"] == "ok" and row["dataset"] == name and abs(row["sparsity"] - 0.5) < 0.01


@pytest.mark.parametrize("arch", ["timm:vit_tiny_patch16_224",
                                  pytest.param("timm:swin_tiny_patch4_window7_224", marks=pytest.mark.slow)])
def test_imagenet_folder_runs_timm_transformers_at_their_input_size(tmp_path, arch, capsys):
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for c, cls in enumerate(("n01", "n02")):
            folder = tmp_path / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (64 + 8 * i, 48), (c * 200, i * 30, 0)).save(folder / f"{i}.JPEG")
    s = load_dataset("imagenet", tmp_path, download=False)
    assert s.num_classes == 2 and s.input_shape == (3, 224, 224) and (len(s.train) + len(s.val), len(s.test)) == (12, 4)
    x, y = s.test[0]
    assert tuple(x.shape) == (3, 224, 224) and y in (0, 1)
    out = tmp_path / "res"
    assert main(["run", "--methods", "edgepopup", "--arch", arch, "--dataset", "imagenet", "--epochs", "1",
                 "--batch-size", "4", "--sparsity", "0.5", "--data-root", str(tmp_path), "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    import pandas as pd

    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row["status"] == "ok" and abs(row["sparsity"] - 0.5) < 0.01 and 0 <= row["test_acc"] <= 100
