"""Epoch time and images/s of one search epoch in the harness against a plain PyTorch training loop.

    python -m benchmarks.perf.epoch --arch resnet18 --method edgepopup --batch 256 [--amp] [--compile]

Both sides see the same CIFAR-shaped data (random uint8 images, `--images` of them, held on the device
and augmented there, as the harness does for CIFAR-10), the same model and batch size. The plain loop is
what a user would write: dense model, SGD with momentum, channels_last and cudnn.benchmark on CUDA,
the same autocast. The harness side is `CellRun.search`: the method's mask search with the trainer's
data path, loss bookkeeping and end-of-epoch validation (on a small validation split). One warm-up epoch
on each side is not timed (cudnn autotuning, torch.compile).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.data import CIFAR_STATS, Splits, batches, crop_flip, normalizer
from benchmarks.trainer import CellRun, Recipe, Speed, cuda_layout, resolve_device
from benchmarks.zoo import build_model
from methods import get_method


def cifar_shaped(images: int, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    val = TensorDataset(x[:256], y[:256])
    return Splits(TensorDataset(x, y), val, val, 10, (3, 32, 32), transform=normalizer(*CIFAR_STATS["cifar10"]),
                  augment=crop_flip)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_epoch_s(arch: str, splits: Splits, batch: int, device: torch.device, speed: Speed) -> float:
    """One epoch of a hand-written dense training loop (the reference), after one untimed epoch."""
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32)).to(device).train()
    conv = cuda_layout(model, device)
    forward = torch.compile(model) if speed.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)

    def epoch() -> None:
        for xb, yb in batches(splits.train, batch, device, shuffle=True, generator=gen):
            xb = splits.transform(splits.augment(xb))
            if conv:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed.amp):
                loss = criterion(forward(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)

    epoch()
    start = time.perf_counter()
    epoch()
    return time.perf_counter() - start


def harness_epoch_s(arch: str, method: str, splits: Splits, batch: int, device: torch.device, speed: Speed) -> float:
    """One search epoch through the trainer (`CellRun.search`), after one untimed epoch."""
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32))
    run = CellRun(get_method(method)(model, 0.9), splits, batch, device, seed=0, progress=False, on_epoch=None,
                  checkpoint=None, recipe=Recipe(), speed=speed)
    run.search(1)
    sync(device)
    start = time.perf_counter()
    run.search(1)
    sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--method", default="edgepopup")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=50_000, help="training images per epoch (CIFAR-10: 50000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on both sides")
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    speed = Speed(amp=args.amp, compile=args.compile)
    splits = cifar_shaped(args.images).to(device)  # held on the device, as a sweep holds CIFAR-10
    plain = plain_epoch_s(args.arch, splits, args.batch, device, speed)
    harness = harness_epoch_s(args.arch, args.method, splits, args.batch, device, speed)
    row = {"arch": args.arch, "method": args.method, "batch": args.batch, "images": args.images,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "amp": args.amp,
           "compile": args.compile, "plain_s": round(plain, 3), "plain_img_s": round(args.images / plain, 1),
           "harness_s": round(harness, 3), "harness_img_s": round(args.images / harness, 1),
           "harness_over_plain": round(harness / plain, 3)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
