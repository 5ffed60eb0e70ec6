"""Datasets by name, with a held-out validation split and a fast on-device path for small data.

Built-ins: ``mnist``, ``cifar10``, ``cifar100`` (held as uint8 tensors, batched and augmented on the
device), ``imagenet`` (an ImageFolder root, through a DataLoader) and ``synthetic``. Register your own
with `register_dataset`. The data root comes from ``--data-root`` or ``$TICKETBENCH_DATA``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmarks.errors import UserError

DEFAULT_ROOT = "data"
VAL_SPLIT_SEED = 0  # fixed, so every cell of every sweep sees the same validation split
TRAIN_SUBSET_SEED = 0  # fixed, so every cell with the same --train-size trains on the same examples


def data_root(flag: str | None) -> Path:
    return Path(flag or os.environ.get("TICKETBENCH_DATA") or DEFAULT_ROOT)


@dataclass
class Splits:
    """A dataset ready for training: train/val/test, the number of classes and one input's shape.

    Tensor datasets hold raw inputs (uint8 images allowed); `transform` turns a batch on the device
    into normalised float inputs, with `augment` applied to training batches only.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    transform: Callable[[Tensor], Tensor] = lambda x: x.float()
    augment: Callable[[Tensor], Tensor] | None = None

    def to(self, device: torch.device) -> Splits:
        """These splits with their tensor datasets held on `device` (copied once, not every epoch); other
        datasets stay where they are and are read through a DataLoader."""
        def move(ds: Dataset) -> Dataset:
            return TensorDataset(*(t.to(device) for t in ds.tensors)) if isinstance(ds, TensorDataset) else ds

        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test))

    def with_train_size(self, n: int) -> Splits:
        """These splits with the training set cut to a fixed random subset of `n` examples (0: all of it);
        validation and test are untouched. The subset depends on `n` and the dataset alone, never the seed."""
        if n == 0:
            return self
        total = len(self.train)
        if not 0 < n <= total:
            raise UserError(f"--train-size {n} is outside 1..{total} (the training split's size)")
        keep = torch.randperm(total, generator=torch.Generator().manual_seed(TRAIN_SUBSET_SEED))[:n]
        if isinstance(self.train, TensorDataset):
            train: Dataset = TensorDataset(*(t[keep.to(t.device)] for t in self.train.tensors))
        else:
            train = torch.utils.data.Subset(self.train, keep.tolist())
        return replace(self, train=train)


DatasetFn = Callable[..., Splits]
DATASETS: dict[str, DatasetFn] = {}


def register_dataset(name: str) -> Callable[[DatasetFn], DatasetFn]:
    """Decorator: ``@register_dataset("mine")`` on ``fn(root: Path, download: bool, val_size: float) -> Splits``
    makes ``bench run --dataset mine`` work."""

    if name in DATASETS:  # two datasets under one name would share cell ids
        raise ValueError(f"dataset {name!r} is already registered; give yours another name")

    def deco(fn: DatasetFn) -> DatasetFn:
        DATASETS[name] = fn
        return fn

    return deco


def load_dataset(name: str, root: Path, download: bool = True, val_size: float = 0.1) -> Splits:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root=root, download=download, val_size=val_size)


def split_train_val(x: Tensor, y: Tensor, val_size: float) -> tuple[TensorDataset, TensorDataset]:
    """Hold out a fixed random `val_size` fraction of the training set for validation."""
    n_val = int(round(val_size * len(x)))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    val, train = perm[:n_val], perm[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def normalizer(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    """uint8 images to normalised floats. The statistics are copied to each device once: a copy per batch
    from pageable host memory would make every CUDA step wait for the device."""
    stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def transform(x: Tensor) -> Tensor:
        if x.device not in stats:
            stats[x.device] = (torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255.0,
                               torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255.0)
        m, s = stats[x.device]
        return (x.float() - m) / s

    transform.preprocessing = {"input": "uint8 pixels, N x C x H x W", "formula": "(x / 255 - mean) / std",
                               "mean": list(mean), "std": list(std)}
    return transform


def preprocessing(splits: Splits) -> dict[str, Any]:
    """What a model trained on `splits` expects of its inputs (an exported ticket's metadata)."""
    return getattr(splits.transform, "preprocessing", {
        "input": "what the dataset yields (its own transforms, benchmarks/data.py), as floats", "formula": "x"})


def crop_flip(x: Tensor, pad: int = 4) -> Tensor:
    """Random `pad`-pixel padded crop and horizontal flip, per image, on the batch's device."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[idx_n, idx_c, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# -- MNIST ------------------------------------------------------------------------------------------
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file of unsigned bytes, plain or gzipped (`path` without the .gz suffix); a damaged file is a
    one-line `UserError` naming it."""
    gz = path.with_name(path.name + ".gz")
    source = path if path.exists() else gz
    if not source.exists():
        raise FileNotFoundError(path)
    try:
        raw = path.read_bytes() if source == path else gzip.decompress(gz.read_bytes())
    except (EOFError, OSError, zlib.error) as e:  # truncated or not gzip at all (gzip.BadGzipFile is an OSError)
        raise UserError(f"{source}: unreadable ({type(e).__name__}: {e}); delete it and download or copy it again") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{source}: not an idx file of unsigned bytes (bad magic number); delete it and download "
                        f"or copy it again")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=min(len(raw), 4 + 4 * ndim))
    if data.size != int(np.prod(dims)):
        raise UserError(f"{source}: truncated idx file ({data.size} values, header says {dims})")
    return data.reshape(dims)


def _mnist_arrays(root: Path, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    needed = [raw / f for pair in MNIST_FILES.values() for f in pair]
    files = ", ".join(f"{f}.gz" for pair in MNIST_FILES.values() for f in pair)
    where = f"pass --data-root DIR or set $TICKETBENCH_DATA to a folder with MNIST/raw/ in it, or put {files} in {raw}"
    if not all(p.exists() or p.with_name(p.name + ".gz").exists() for p in needed):
        if not download:
            raise UserError(f"MNIST not found under {raw}; {where}")
        created = next((p for p in reversed([raw, *raw.parents]) if not p.exists()), None)
        try:
            import torchvision

            torchvision.datasets.MNIST(str(root), train=True, download=True)
            torchvision.datasets.MNIST(str(root), train=False, download=True)
        except Exception as e:  # no network, read-only root, ...
            if created is not None and created.exists() and not any(p.is_file() for p in created.rglob("*")):
                shutil.rmtree(created, ignore_errors=True)  # leave no empty folder tree behind
            raise UserError(f"MNIST not found under {raw} and the download failed ({type(e).__name__}: no network?); "
                            f"{where}") from None
    return {split: (read_idx(raw / xi), read_idx(raw / yi)) for split, (xi, yi) in MNIST_FILES.items()}


@register_dataset("mnist")
def mnist(root: Path, download: bool = True, val_size: float = 0.1) -> Splits:
    """MNIST from root/MNIST/raw (idx files, plain or .gz), 28x28 grey, 10 classes."""
    arrays = _mnist_arrays(root, download)
    x, y = (torch.from_numpy(a.copy()) for a in arrays["train"])
    xt, yt = (torch.from_numpy(a.copy()) for a in arrays["test"])
    train, val = split_train_val(x.unsqueeze(1), y.long(), val_size)
    return Splits(train, val, TensorDataset(xt.unsqueeze(1), yt.long()), 10, (1, 28, 28),
                  transform=normalizer((0.1307,), (0.3081,)))


# -- CIFAR ------------------------------------------------------------------------------------------
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar(name: str, root: Path, download: bool, val_size: float) -> Splits:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    try:
        train_set = cls(str(root), train=True, download=download)
        test_set = cls(str(root), train=False, download=download)
    except Exception as e:
        raise UserError(f"{name} not found under {root / folder} and could not be downloaded "
                        f"({type(e).__name__}: no network?); pass --data-root DIR or set $TICKETBENCH_DATA to a "
                        f"folder holding {folder}/ (the extracted python-version archive)") from None

    def as_tensors(ds) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    train, val = split_train_val(*as_tensors(train_set), val_size)
    classes = 10 if name == "cifar10" else 100
    return Splits(train, val, TensorDataset(*as_tensors(test_set)), classes, (3, 32, 32),
                  transform=normalizer(*CIFAR_STATS[name]), augment=crop_flip)


@register_dataset("cifar10")
def cifar10(root: Path, download: bool = True, val_size: float = 0.1) -> Splits:
    """CIFAR-10 through torchvision (root/cifar-10-batches-py), crop+flip augmentation on the device."""
    return _cifar("cifar10", root, download, val_size)


@register_dataset("cifar100")
def cifar100(root: Path, download: bool = True, val_size: float = 0.1) -> Splits:
    """CIFAR-100 through torchvision (root/cifar-100-python), crop+flip augmentation on the device."""
    return _cifar("cifar100", root, download, val_size)


# -- ImageNet (folder) ------------------------------------------------------------------------------
@register_dataset("imagenet")
def imagenet(root: Path, download: bool = False, val_size: float = 0.01) -> Splits:
    """ImageFolder at ``root/imagenet/{train,val}``; the official val set is the test set."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    base = root / "imagenet"
    if not (base / "train").is_dir() or not (base / "val").is_dir():
        raise UserError(f"ImageNet not found: expected class folders under {base}/train and {base}/val")
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    full = ImageFolder(str(base / "train"), train_tf)
    held = ImageFolder(str(base / "train"), eval_tf)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED)).tolist()
    n_val = int(round(val_size * len(full)))
    return Splits(torch.utils.data.Subset(full, perm[n_val:]), torch.utils.data.Subset(held, perm[:n_val]),
                  ImageFolder(str(base / "val"), eval_tf), len(full.classes), (3, 224, 224))


# -- synthetic --------------------------------------------------------------------------------------
SYNTHETIC_SHAPE = (3, 32, 32)


@register_dataset("synthetic")
def synthetic(root: Path, download: bool = False, val_size: float = 0.1, shape: tuple[int, ...] = SYNTHETIC_SHAPE,
              n: int = 512, num_classes: int = 10) -> Splits:
    """Random Gaussian inputs with labels from a fixed random linear teacher (learnable, for smoke tests)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n + n // 4, *shape, generator=g)
    teacher = torch.randn(int(np.prod(shape)), num_classes, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    train, val = split_train_val(x[:n], y[:n], val_size)
    return Splits(train, val, TensorDataset(x[n:], y[n:]), num_classes, shape)


# -- batching ---------------------------------------------------------------------------------------
MAX_LOADER_WORKERS = 16


def loader_workers() -> int:
    """Processes that decode a folder dataset: this process's share of the cores (the threads a worker of
    `bench run --workers N` gets), at most 16. The main process alone cannot feed a GPU from JPEGs."""
    return min(MAX_LOADER_WORKERS, torch.get_num_threads())


def batches(ds: Dataset, batch_size: int, device: torch.device, shuffle: bool = False,
            generator: torch.Generator | None = None, workers: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (inputs, labels) on `device`. Tensor datasets are sliced where they are held (`Splits.to`
    puts them on the device once; a copy is made here otherwise); other datasets go through a DataLoader
    with `workers` processes (default `loader_workers()`; the order and the augmentation draws follow
    `generator` for a given count), pinned memory and non-blocking copies."""
    if isinstance(ds, TensorDataset):
        x, y = (t.to(device) for t in ds.tensors)
        order = torch.randperm(len(x), generator=generator).to(device) if shuffle else None
        for i in range(0, len(x), batch_size):
            if order is None:
                yield x[i:i + batch_size], y[i:i + batch_size]
            else:
                idx = order[i:i + batch_size]
                yield x[idx], y[idx]
        return
    loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=loader_workers() if workers is None else workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
