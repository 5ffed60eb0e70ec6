"""Prints the search-step / dense-step ratio table after a perf run."""

from __future__ import annotations

import pytest

MEDIANS: dict[tuple[str, int, str], float] = {}  # (arch, batch, method) -> median seconds per step


@pytest.fixture(scope="session")
def medians() -> dict[tuple[str, int, str], float]:
    return MEDIANS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not MEDIANS:
        return
    tr = terminalreporter
    tr.section("search step / dense step (median wall time)")
    tr.write_line(f"{'arch':<10} {'batch':>5} {'method':<10} {'ms':>9} {'ratio':>7}")
    for (arch, batch, method), median in sorted(MEDIANS.items()):
        dense = MEDIANS.get((arch, batch, "dense"))
        ratio = f"{median / dense:7.2f}" if dense else "      -"
        tr.write_line(f"{arch:<10} {batch:>5} {method:<10} {median * 1e3:9.2f} {ratio}")
