"""Prints the search-step / dense-step ratio table after a perf run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

MEDIANS: dict[tuple[str, int, str], tuple[float, float]] = {}  # (arch, batch, method) -> (s/step, paired dense s/step)
MEMORY: dict[tuple[str, int, str], dict[str, float]] = {}  # (arch, batch, method) -> state_mb, peak_mb


@pytest.fixture(scope="session")
def medians() -> dict[tuple[str, int, str], tuple[float, float]]:
    return MEDIANS


@pytest.fixture(scope="session")
def medians_memory() -> dict[tuple[str, int, str], dict[str, float]]:
    return MEMORY


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not MEDIANS:
        return
    if os.environ.get("PERF_TABLE_JSON"):  # for `benchmarks.perf.gpu_check`
        Path(os.environ["PERF_TABLE_JSON"]).write_text(json.dumps(
            [{"arch": a, "batch": b, "method": m, "ms": s * 1e3, "dense_ms": d * 1e3, "ratio": s / d}
             for (a, b, m), (s, d) in sorted(MEDIANS.items())]))
    tr = terminalreporter
    tr.section("search step / dense step (paired medians of wall time; training-state memory)")
    tr.write_line(f"{'arch':<10} {'batch':>5} {'method':<10} {'ms':>9} {'dense ms':>9} {'ratio':>7} "
                  f"{'state MB':>9} {'mem ratio':>9} {'peak MB':>8}")
    for key, (median, dense) in sorted(MEDIANS.items()):
        arch, batch, method = key
        mem, dense_mem = MEMORY.get(key, {}), MEMORY.get((arch, batch, "dense"), {})
        state = mem.get("state_mb", float("nan"))
        mem_ratio = state / dense_mem["state_mb"] if dense_mem.get("state_mb") else float("nan")
        peak = mem.get("peak_mb")
        tr.write_line(f"{arch:<10} {batch:>5} {method:<10} {median * 1e3:9.2f} {dense * 1e3:9.2f} "
                      f"{median / dense:7.2f} {state:9.1f} {mem_ratio:9.2f} {peak if peak is not None else '-':>8}")
