"""One command for a GPU machine, about 8 minutes, printing one table:

    python -m benchmarks.perf.gpu_check [--wheels .wheels]     # on the GPU machine
    python -m benchmarks.perf.gpu_check --prepare .wheels      # beforehand, where the package index is reachable

It runs, each as its own process with a time limit: the CUDA tests (`tests/test_cuda.py`: no host sync in
any search step, bf16 and channels_last paths), the step-ratio suite (`benchmarks/perf`, LeNet-300, conv4
and ResNet-18 at batch 128) in fp32 and under bf16 autocast, and `benchmarks.perf.epoch` (one search epoch
through the trainer against a plain PyTorch loop) for conv4 and ResNet-18.

Offline: it needs only torch, torchvision and timm beside this checkout (pandas, seaborn and onnx are not
used). What else it imports, pytest, pytest-benchmark, PyYAML and tqdm, is installed from wheels that
``--prepare DIR`` downloads here and ``--wheels DIR`` installs there (``pip install --no-index``), for any
that are missing; the checkout itself runs from its folder, uninstalled. ``--cpu`` runs the same on the
CPU with small sizes (the CUDA tests then skip), to check the command on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = {"pytest": "pytest>=8", "pytest_benchmark": "pytest-benchmark>=4", "yaml": "pyyaml>=6", "tqdm": "tqdm>=4.65"}
STAGES = (("cuda tests", 180), ("steps fp32", 150), ("steps bf16", 150), ("epoch conv4", 60), ("epoch resnet18", 90))


def prepare(folder: Path) -> None:
    """Download the wheels of `NEEDED` and their dependencies into `folder` (run where PyPI is reachable)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(folder),
                    *NEEDED.values()], check=True)


def install_missing(folder: Path | None) -> list[str]:
    """Install, from `folder` only, whichever of `NEEDED` this Python lacks; returns what was missing."""
    missing = [spec for module, spec in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        if folder is None or not folder.is_dir():
            raise SystemExit(f"gpu_check: missing {', '.join(missing)} and no --wheels folder (make one with "
                             f"--prepare where the package index is reachable)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder), *missing],
                       check=True)
    return missing


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and output (stdout and stderr) of `cmd` in the checkout; 124 when it ran past `timeout`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"ran past {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def step_ratios(amp: bool, archs: str, timeout: float) -> tuple[int, dict[tuple[str, str], float], str]:
    """The perf suite's paired (search step / dense step) ratio per (arch, method), read from its JSON table."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "ratios.json"
        code, out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/perf"], timeout,
                        {"PERF_AMP": "1" if amp else "0", "PERF_ARCHS": archs, "PERF_TABLE_JSON": str(table)})
        rows = json.loads(table.read_text()) if table.exists() else []
    return code, {(r["arch"], r["method"]): r["ratio"] for r in rows}, last_line(out)


def epoch_row(arch: str, images: int, device: str, timeout: float) -> tuple[int, dict, str]:
    code, out = run([sys.executable, "-m", "benchmarks.perf.epoch", "--arch", arch, "--method", "edgepopup",
                     "--batch", "256", "--images", str(images), "--device", device], timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, (rows[-1] if rows else {}), last_line(out)


def table(status: dict[str, tuple[int, str]], fp32: dict, bf16: dict, epochs: list[dict]) -> str:
    """The check's report as Markdown: each stage's outcome, the step ratios, the epoch times."""
    lines = ["| stage | exit | last line |", "|---|---|---|"]
    lines += [f"| {name} | {code} | {text[:100]} |" for name, (code, text) in status.items()]
    lines += ["", "| arch | method | step ratio fp32 | step ratio bf16 |", "|---|---|---|---|"]
    for arch, method in sorted(set(fp32) | set(bf16)):
        cells = [f"{d[(arch, method)]:.2f}" if (arch, method) in d else "–" for d in (fp32, bf16)]
        lines.append(f"| {arch} | {method} | {cells[0]} | {cells[1]} |")
    lines += ["", "| arch | device | plain s | harness s | harness / plain | harness img/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['device']} | {r['plain_s']} | {r['harness_s']} | {r['harness_over_plain']} | "
              f"{r['harness_img_s']} |" for r in epochs if r]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="download the wheels into DIR and stop")
    parser.add_argument("--wheels", type=Path, metavar="DIR", help="install missing dependencies from DIR")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU with small sizes (no GPU here)")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    install_missing(args.wheels)
    limits = {name: limit * (3 if args.cpu else 1) for name, limit in STAGES}  # 2 CPU cores are slow
    archs, images, device = ("lenet300,conv4", 512, "cpu") if args.cpu else ("lenet300,conv4,resnet18", 50_000, "cuda")
    status: dict[str, tuple[int, str]] = {}
    code, out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                    limits["cuda tests"])
    status["cuda tests"] = (code, last_line(out))
    ratios = {}
    for amp in (False, True):
        name = f"steps {'bf16' if amp else 'fp32'}"
        code, ratios[amp], text = step_ratios(amp, archs, limits[name])
        status[name] = (code, text)
    epochs = []
    for arch in ("conv4", "resnet18"):
        code, row, text = epoch_row(arch, images, device, limits[f"epoch {arch}"])
        status[f"epoch {arch}"] = (code, text if code else "ok")
        epochs.append(row)
    print(table(status, ratios[False], ratios[True], epochs))
    return 0 if all(code in (0, 1) if name.startswith("steps") else code == 0 for name, (code, _) in status.items()) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
