"""Tidy result files: ``runs.csv`` (one row per cell), ``curves.csv`` (per cell and epoch),
``layers.csv`` (per cell and layer) and ``masks/<cell>.pt``.

Rows are appended whole and flushed to disk; a cell's curves and layers are written before its
``runs.csv`` row, which is the record that the cell finished. Readers keep only the curves and layers
of cells that have a run row.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

from benchmarks.errors import UserError
from benchmarks.paths import CURVES, LAYERS, LOCK, MASKS, PLAN, RUNS

# The columns readers rely on: type, and for numbers the valid range (accuracies in %, sparsities as fractions).
Schema = dict[str, tuple[type, float | None, float | None]]
RUN_COLUMNS: Schema = {"cell": (str, None, None), "method": (str, None, None), "granularity": (str, None, None),
                       "regime": (str, None, None), "arch": (str, None, None), "dataset": (str, None, None),
                       "target_sparsity": (float, 0.0, 1.0), "seed": (int, None, None), "status": (str, None, None)}
OK_RUN_COLUMNS: Schema = {"sparsity": (float, 0.0, 1.0), "test_acc": (float, 0.0, 100.0), "val_acc": (float, 0.0, 100.0)}
CURVE_COLUMNS: Schema = {"cell": (str, None, None), "epoch": (int, 0, None), "val_acc": (float, 0.0, 100.0),
                         "sparsity": (float, 0.0, 1.0)}
LAYER_COLUMNS: Schema = {"cell": (str, None, None), "layer": (str, None, None), "weights": (int, 0, None),
                         "kept": (int, 0, None), "sparsity": (float, 0.0, 1.0)}
# columns an ok row leaves empty when its cell had nothing to measure them on (no validation split; curves
# rows do not carry val_size)
EMPTY_WITHOUT_VALIDATION = ("val_acc",)
ROW_KEYS = {RUNS: ("cell",), CURVES: ("cell", "phase", "epoch"), LAYERS: ("cell", "layer")}  # one row per key


def _fsync_write(path: Path, text: str, mode: str) -> None:
    with open(path, mode, newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rows_text(columns: list[str], rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell_text(v) for k, v in row.items()})
    return buf.getvalue()


def _cell_text(value: Any) -> Any:
    if isinstance(value, float):
        return "" if value != value else repr(value)  # NaN (nothing measured) is a gap
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value)) if all(isinstance(v, int) for v in value) else ";".join(map(str, value))
    return "" if value is None else value


def read_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def repair_tail(path: Path) -> None:
    """Cut a last line that a killed writer left without its newline (it never counted as written)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(0, size - 65536))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        f.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)
        f.flush()
        os.fsync(f.fileno())


def append_rows(path: Path, rows: list[dict[str, Any]], replace: str | None = None) -> None:
    """Append `rows` to the CSV at `path`. When new columns extend the header, or the rows of cell
    `replace` must go first, the file is rewritten to a temporary file and atomically moved into place."""
    if path.exists():
        repair_tail(path)
    if not rows and replace is None:
        return
    new_cols = list(dict.fromkeys(k for row in rows for k in row))
    if not path.exists() or path.stat().st_size == 0:
        if rows:
            _fsync_write(path, _rows_text(new_cols, rows, header=True), "w")
        return
    columns = read_header(path)
    missing = [c for c in new_cols if c not in columns]
    if not missing and replace is None:
        _fsync_write(path, _rows_text(columns, rows, header=False), "a")
        return
    columns += missing
    with open(path, newline="") as f:
        old = [row for row in csv.DictReader(f) if row.get("cell") != replace]
    _rewrite(path, columns, old + rows)


def _rewrite(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Replace the CSV at `path` whole: write a temporary file, then atomically move it into place."""
    tmp = path.with_suffix(".tmp")
    _fsync_write(tmp, _rows_text(columns, rows, header=True), "w")
    os.replace(tmp, path)


def purge_orphans(out: Path, finished: set[str]) -> None:
    """Drop curves/layers rows of cells without a runs.csv row: a killed cell left them half-written."""
    for name in (CURVES, LAYERS):
        path = out / name
        if not path.exists():
            continue
        repair_tail(path)
        rows = read_rows(path)
        kept = [r for r in rows if r["cell"] in finished]
        if len(kept) < len(rows):
            _rewrite(path, read_header(path), kept)


def _whole_rows(path: Path, reader: csv.DictReader) -> list[dict[str, str]]:
    """The rows of `reader`; a line with the wrong number of fields is an error naming it."""
    rows = []
    for row in reader:
        if None in row or None in row.values():
            raise UserError(f"{path}: line {reader.line_num}: wrong number of fields")
        rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return _whole_rows(path, csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a readable CSV ({type(e).__name__}); left as it is") from None


REQUIRED = {RUNS: tuple(RUN_COLUMNS), CURVES: ("cell", "epoch"), LAYERS: ("cell", "layer")}  # before any write


def check_readable(out: Path) -> None:
    """Refuse, in one line, a results folder holding a file the suite cannot read (not UTF-8 text, a header
    without the columns rows are keyed by, a line with the wrong number of fields, a plan.json that is not
    JSON), before anything reads on or writes there: bench never rewrites what it could not read. A last
    line without its newline, as a killed writer leaves it, is not checked (`repair_tail` cuts it)."""
    for name, columns in REQUIRED.items():
        path = out / name
        if not path.is_file() or path.stat().st_size == 0:
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text CSV (bytes that are not UTF-8); left as it is: move it away or "
                            f"restore it") from None
        complete = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(complete))
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: no column {', '.join(missing)} in its header; left as it is: move it away "
                            f"or restore it")
        _whole_rows(path, reader)
    plan = out / PLAN
    if plan.is_file():
        try:
            json.loads(plan.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise UserError(f"{plan}: not JSON ({type(e).__name__}); left as it is: move it away or restore "
                            f"it") from None


def check_rows(path: Path, rows: list[dict[str, str]], columns: Schema, only_ok: bool = False) -> None:
    """Check that `columns` exist, parse and lie in range (in ok rows only, with `only_ok`: failed rows have no
    numbers); a `UserError` names the file, line and value of the first bad one."""
    if rows and (not only_ok or any(row.get("status") == "ok" for row in rows)):
        missing = [c for c in columns if c not in rows[0]]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    for i, row in enumerate(rows):
        if only_ok and row.get("status") != "ok":
            continue
        for col, (typ, lo, hi) in columns.items():
            if row[col] == "" and col in EMPTY_WITHOUT_VALIDATION and float(row.get("val_size") or 0) == 0:
                continue
            try:
                value = typ(row[col])
            except ValueError:
                raise UserError(f"{path}: line {i + 2}: column {col!r} is not a {typ.__name__}: {row[col]!r}") from None
            if typ is not str and (value != value or (lo is not None and value < lo) or (hi is not None and value > hi)):
                span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise UserError(f"{path}: line {i + 2}: column {col!r} is {row[col]!r}, outside {span}")


def duplicate_cells(out: Path, rows: list[dict[str, str]] | None = None) -> list[str]:
    """Cells with more than one row in ``runs.csv`` (left by concurrent writers before folders were locked);
    `rows`: that file's rows when the caller has read them already."""
    seen: dict[str, int] = {}
    for row in read_rows(out / RUNS) if rows is None else rows:
        seen[row["cell"]] = seen.get(row["cell"], 0) + 1
    return [cell for cell, n in seen.items() if n > 1]


def drop_duplicates(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Keep the last row of every key in each CSV (`ROW_KEYS`); return the cells that had duplicate runs rows
    and the runs.csv rows as they are now (one read of each file)."""
    cells, runs = [], []
    for name, key in ROW_KEYS.items():
        path = out / name
        rows = read_rows(path)
        last = {tuple(row.get(k) for k in key): row for row in rows}
        if len(last) < len(rows):
            _rewrite(path, read_header(path), list(last.values()))
        if name == RUNS:
            cells, runs = duplicate_cells(out, rows), list(last.values())
    return cells, runs


class FolderLock:
    """One `bench run` at a time per results folder: an exclusive advisory lock on ``<out>/.lock``, released
    when the process ends however it ends. A second run on the same folder is refused in one line."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self.file = None

    def __enter__(self) -> "FolderLock":
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            owner = self.file.read().strip() or "?"
            self.file.close()
            raise UserError(f"{self.path.parent} is in use by another bench run (pid {owner}); wait for it to "
                            f"finish (bench status {self.path.parent}) or give this run its own --out") from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # closing releases the lock


def save_masks(out: Path, cell: str, masks: dict[str, Any], folder_name: str = MASKS) -> Path:
    """Save `masks` (or any torch-serialisable state) as ``<out>/<folder_name>/<cell>.pt``, atomically."""
    import torch  # here, so that reading a folder (`bench status`) does not import torch

    folder = out / folder_name
    folder.mkdir(exist_ok=True)
    path = folder / f"{cell}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(masks, tmp)
    os.replace(tmp, path)
    return path


def prepare_out(out: Path) -> None:
    """Create the output folder and check that it is writable."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output folder {out} is not writable ({e.strerror})") from None
