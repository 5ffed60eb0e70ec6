"""`bench status`: how far a sweep folder has come."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.results import RUNS, read_rows
from benchmarks.sweep import PLAN, RUNNING


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_status(out: Path) -> dict[str, list[str]]:
    """Cell ids by state: done, failed, running (a live process holds its marker), remaining."""
    if not (out / PLAN).exists():
        raise UserError(f"{out}: no {PLAN}; not a folder written by bench run")
    try:
        plan = json.loads((out / PLAN).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{out / PLAN}: malformed JSON at line {e.lineno}") from None
    last = {row["cell"]: row["status"] for row in read_rows(out / RUNS)}
    running = set()
    for marker in (out / RUNNING).glob("*") if (out / RUNNING).is_dir() else []:
        text = marker.read_text().strip()
        if text.isdigit() and _alive(int(text)) and last.get(marker.name) != "ok":
            running.add(marker.name)
    states: dict[str, list[str]] = {"done": [], "failed": [], "running": [], "remaining": []}
    for cell in plan:
        state = "running" if cell in running else {"ok": "done", "failed": "failed"}.get(last.get(cell), "remaining")
        states[state].append(cell)
    return states


def describe(out: Path) -> str:
    states = sweep_status(out)
    plan = json.loads((out / PLAN).read_text())
    total = sum(len(v) for v in states.values())
    lines = [f"{out}: {total} cells: {len(states['done'])} done, {len(states['running'])} running, "
             f"{len(states['failed'])} failed, {len(states['remaining'])} remaining"]
    errors = {row["cell"]: row.get("error", "") for row in read_rows(out / RUNS)}
    for state in ("running", "failed"):
        for cell in states[state]:
            c = plan[cell]
            extra = f": {errors.get(cell, '')}" if state == "failed" else ""
            lines.append(f"  {state:<8} {cell} {c['method']} {c['granularity']} {c['arch']} {c['dataset']} "
                         f"target {c['target_sparsity']} seed {c['seed']}{extra}")
    return "\n".join(lines)
