"""Golden rows: a fixed set of cells (every method, both ticket regimes, the joint regime and the sanity checks)
gives exactly the stored ids and numbers. A refactoring that changes a result, or an id, fails here; a
deliberate change regenerates the file: ``TICKETBENCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py``, and the
commit says why. The numbers are exact for one torch build and thread count, so other builds skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks.cell import run_cell
from benchmarks.spec import SweepSpec
from methods import METHODS
from tests.conftest import tiny_splits

GOLDEN = Path(__file__).with_name("golden_rows.json")
FIELDS = ("test_acc", "val_acc", "sparsity", "kept_weights", "sparsity_before_projection", "search_epochs",
          "train_epochs", "flops", "bytes_ticket", "status")


def cells():
    searching = [m for m, cls in METHODS.items() if cls.searches and "joint" in cls.regimes]
    def runs_in(regime: str) -> list[str]:
        return sorted(m for m, cls in METHODS.items() if regime in cls.regimes)

    specs = [SweepSpec(methods=runs_in("strong"), sparsity=[0.8], epochs=1, batch_size=32),
             SweepSpec(methods=runs_in("weak"), sparsity=[0.8], epochs=1, batch_size=32, regime="weak"),
             SweepSpec(methods=searching, sparsity=[0.8], epochs=1, batch_size=32, regime="joint"),
             SweepSpec(methods=["crbg", "snip"], sparsity=[0.8], epochs=1, batch_size=32, sanity=True),
             SweepSpec(methods=["crbg"], granularity=["structured"], sparsity=[0.5], epochs=1, batch_size=32,
                       activation="prelu", hparams={"crbg": {"regularizer": "induce-decision"}})]
    out = {}
    for spec in specs:
        out.update({c.id: c for c in spec.cells()})
    return list(out.values())


def environment() -> dict[str, str]:
    return {"torch": torch.__version__, "threads": str(torch.get_num_threads())}


def current_rows() -> dict[str, dict]:
    splits, cpu = tiny_splits(n=96), torch.device("cpu")
    rows = {}
    for cell in cells():
        run = run_cell(cell, splits, cpu, progress=False).run
        rows[cell.id] = {"method": cell.method, "regime": cell.regime, "sanity": cell.sanity,
                         **{k: run.get(k) for k in FIELDS}}
    return rows


def test_fixed_cells_give_the_golden_rows():
    if os.environ.get("TICKETBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"environment": environment(), "rows": current_rows()}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    if golden["environment"] != environment():
        pytest.skip(f"golden rows were recorded with {golden['environment']}, this is {environment()}")
    rows = current_rows()
    assert sorted(rows) == sorted(golden["rows"]), "cell ids changed"
    for cell_id, row in rows.items():
        assert row == golden["rows"][cell_id], f"cell {cell_id} ({row['method']}, {row['regime']})"
