"""Take a ticket out of a results folder: `bench export` writes a standalone model file, `load_ticket` reads
it back as a plain ``nn.Module`` with the masks baked into its weights.

A cell is rebuilt from what its run saved: its settings (``plan.json``), its seed (the strong regime's
frozen weights are redrawn from it exactly as the run drew them), its masks (``masks/``) and the state the
seed cannot regenerate (``tickets/``: BatchNorm statistics, trained weights). Formats: ``pt`` (the pickled
module and its metadata; loading needs this package's dependencies, e.g. timm for timm models) and
``torchscript`` (traced; loads with torch alone) and ``onnx`` (torch.export's exporter, a dynamic batch
dimension; for ONNX runtimes, so `load_ticket` does not read it; needs the ``onnx`` extra). The metadata:
the cell's settings and its row's numbers (in ONNX, the model's ``metadata_props["ticketbench"]``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmarks.errors import UserError
from benchmarks.paths import MASKS, PLAN, RUNS, TICKETS
from benchmarks.results import read_rows
from benchmarks.slim import slim
from benchmarks.cell import build_ticket_pruner
from benchmarks.spec import Cell

FORMATS = ("pt", "torchscript", "onnx")
SUFFIX = {"pt": "pt", "torchscript": "ts", "onnx": "onnx"}
METADATA_KEYS = ("method", "arch", "dataset", "regime", "granularity", "target_sparsity", "sparsity",
                 "unit_sparsity", "seed", "test_acc", "val_acc", "flops", "bytes_ticket")


def cell_settings(folder: Path, cell_id: str) -> Cell:
    """The cell as its run recorded it in ``plan.json`` (its id is checked against its settings)."""
    try:
        plan = json.loads((folder / PLAN).read_text())
    except FileNotFoundError:
        raise UserError(f"{folder}: no {PLAN} (not a bench run folder)") from None
    matches = [k for k in plan if k.startswith(cell_id)]
    if len(matches) != 1:
        raise UserError(f"{folder}: {'no' if not matches else 'more than one'} cell id starts with {cell_id!r} "
                        f"(bench status {folder} --cells lists them)")
    try:
        cell = Cell.from_dict(plan[matches[0]])
    except TypeError as e:  # a setting this installation does not declare (a plugin not loaded?)
        raise UserError(f"{folder}/{PLAN}: cell {matches[0]}: {e}") from None
    if cell.id != matches[0]:
        raise UserError(f"{folder}/{PLAN}: cell {matches[0]} does not match its settings (written by another version?)")
    return cell


@torch.no_grad()
def rebuild(folder: Path, cell_id: str) -> tuple[nn.Module, dict[str, Any]]:
    """The finished cell's ticket as a plain module on the CPU (eval mode) and its metadata."""
    cell = cell_settings(folder, cell_id)
    row = next((r for r in reversed(read_rows(folder / RUNS)) if r["cell"] == cell.id), None)  # its last row
    if row is None:
        raise UserError(f"cell {cell.id} has not finished in {folder} (bench status {folder})")
    if row["status"] != "ok":
        raise UserError(f"cell {cell.id} failed ({row.get('error', '')}): it has no ticket; bench run --rerun-failed "
                        f"retries it")
    mask_file, ticket_file = folder / MASKS / f"{cell.id}.pt", folder / TICKETS / f"{cell.id}.pt"
    if not mask_file.exists() or not ticket_file.exists():
        raise UserError(f"cell {cell.id} has no finished result with its ticket in {folder} (cells run before "
                        f"tickets/ existed cannot be exported: rerun them with --force)")
    masks, saved = saved_file(mask_file, "masks"), saved_file(ticket_file, "ticket")
    try:
        num_classes, input_shape, state = int(saved["num_classes"]), tuple(saved["input_shape"]), dict(saved["state"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{ticket_file}: not a ticket file of this suite ({type(e).__name__}: {e}); rerun the "
                        f"cell with bench run --force") from None
    pruner = build_ticket_pruner(cell, num_classes, input_shape)
    model = pruner.model
    try:
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    except RuntimeError as e:
        raise UserError(f"{ticket_file}: its weights do not fit {cell.arch} ({str(e).splitlines()[-1].strip()})") from None
    if unexpected:
        raise UserError(f"{ticket_file}: {len(unexpected)} entries {cell.arch} does not have ({unexpected[0]}, ...)")
    for name, module in pruner.layers:
        mask = masks.get(name) if isinstance(masks, dict) else None
        shape = tuple(module.parametrizations.weight.original.shape)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
            found = "nothing" if mask is None else f"shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) \
                else type(mask).__name__
            raise UserError(f"{mask_file}: no mask of shape {shape} for layer {name} (found {found})")
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.mul_(mask.to(module.weight.dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    meta = {"cell": cell.id, **{k: number(row.get(k)) for k in METADATA_KEYS}, "settings": {
        k: (dict(v) if k in ("hparams", "train") else v) for k, v in cell.to_dict().items()},
        "input_shape": list(input_shape), "num_classes": num_classes,
        "preprocessing": saved.get("preprocessing", "not recorded (a ticket written before 2026-12): see the "
                                   "dataset in benchmarks/data.py")}
    return model.eval(), meta


def saved_file(path: Path, what: str) -> Any:
    """A results folder's saved tensors, or a one-line error naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage, or pickled objects weights_only refuses
        raise UserError(f"{path}: not a readable {what} file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        f"rerun the cell with bench run --force") from None


def number(text: Any) -> Any:
    """A row's value as it goes into metadata: a number where it is one, None where it is empty."""
    if text in (None, ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    return text


def output_path(out: str | Path | None, folder: Path, name: str) -> Path:
    """Where `bench export --out` writes: into a folder (an existing one, or a path ending in /, whose parent
    exists) under `name`; to a file path whose folder exists; by default to FOLDER/exports/`name`."""
    if out is None:
        return folder / "exports" / name
    text, path = str(out), Path(out)
    into = path.is_dir() or text.endswith(("/", os.sep))
    if not path.parent.is_dir() and not path.is_dir():
        raise UserError(f"--out {text}: the folder {path.parent} does not exist")
    return path / name if into else path


def export_ticket(folder: Path, cell_id: str, fmt: str = "pt", out: str | Path | None = None,
                  slimmed: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write the cell's ticket as one file (`FORMATS`), physically slimmed with `slimmed`; returns its path and
    metadata."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output_path(out, folder, "")  # a bad --out is one line before the ticket is rebuilt
    model, meta = rebuild(folder, cell_id)
    meta["parameters"] = sum(p.numel() for p in model.parameters())
    if slimmed:
        model = slim(model, meta)
    path = output_path(out, folder, f"{meta['cell']}{'.slim' if slimmed else ''}.{SUFFIX[fmt]}")
    path.parent.mkdir(exist_ok=True)  # FOLDER/exports, or the folder --out names
    if fmt == "pt":
        torch.save({"model": model, "metadata": meta}, path)
    elif fmt == "onnx":
        export_onnx(model, meta, path)
    else:
        example = torch.zeros(1, *meta["input_shape"])
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, still the portable file
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(meta, default=str)})
    return path, meta


def export_onnx(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    """The ticket as an ONNX graph with inputs ``input`` (any batch size) and outputs ``logits``."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError:
        raise UserError("--format onnx needs the onnx extra: pip install -e '.[onnx]'") from None
    import contextlib
    import io

    example = torch.zeros(2, *meta["input_shape"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.model.metadata_props["ticketbench"] = json.dumps(meta, default=str)
    program.save(str(path))


def load_ticket(path: str | Path) -> nn.Module:
    """An exported ticket as a module in eval mode; its metadata (cell settings, accuracy, sparsity) is in the
    module's ``ticket_metadata`` attribute."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no ticket file at {path}")
    if path.suffix == ".onnx":
        raise UserError(f"{path} is an ONNX graph: run it with an ONNX runtime (onnxruntime.InferenceSession)")
    if path.suffix == ".ts":
        files = {"metadata.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        meta = json.loads(files["metadata.json"])
    else:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        model, meta = blob["model"], blob["metadata"]
    model.ticket_metadata = meta
    return model.eval()
