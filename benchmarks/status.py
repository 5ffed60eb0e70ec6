"""`bench status`: how far a sweep folder has come."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.paths import PLAN, RUNNING, RUNS, read_marker
from benchmarks.results import check_readable, read_rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(out: Path, every_cell: bool = False) -> str:
    """Cells by state: done, failed, running (a live process holds its marker), remaining; then one line
    per running or failed cell (`every_cell`: per cell)."""
    if not out.is_dir():
        raise UserError(f"{out}: no such folder")
    if not (out / PLAN).exists():
        raise UserError(f"{out}: no {PLAN}; not a folder written by bench run")
    check_readable(out)
    plan = json.loads((out / PLAN).read_text())
    rows = {row["cell"]: row for row in read_rows(out / RUNS)}
    running: dict[str, str] = {}
    for marker in (out / RUNNING).glob("*") if (out / RUNNING).is_dir() else []:
        pid, where = read_marker(marker)
        if pid is not None and _alive(pid) and rows.get(marker.name, {}).get("status") != "ok":
            running[marker.name] = f" ({where.replace(' ', ' epoch ')})" if where else ""
    states: dict[str, list[str]] = {"done": [], "failed": [], "running": [], "remaining": []}
    for cell in plan:
        status = rows.get(cell, {}).get("status")
        state = "running" if cell in running else {"ok": "done", "failed": "failed"}.get(status, "remaining")
        states[state].append(cell)
    lines = [f"{out}: {len(plan)} cells: {len(states['done'])} done, {len(states['running'])} running, "
             f"{len(states['failed'])} failed, {len(states['remaining'])} remaining"]
    for state in ("running", "failed", *(("done", "remaining") if every_cell else ())):
        for cell in states[state]:
            c = plan[cell]
            extra = f": {rows[cell].get('error', '')}" if state == "failed" else running.get(cell, "")
            lines.append(f"  {state:<8} {cell} {c['method']} {c['granularity']} {c['arch']} {c['dataset']} "
                         f"target {c['target_sparsity']} seed {c['seed']}{extra}")
    return "\n".join(lines)
