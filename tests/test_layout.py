"""The code's shape: no import cycle among the project's modules (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "methods", "reports")


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file."""
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts): p
               for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "perf" not in p.parts}
    modules = {m.removesuffix(".__init__"): p for m, p in modules.items()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = edges
    return graph


def test_no_import_cycle():
    graph = project_imports()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert "benchmarks.cell" in graph["benchmarks.executors"] and "benchmarks.executors" in graph["benchmarks.sweep"]


ONE_CONCEPT = {"benchmarks.trainer": "the epoch loops of one cell", "benchmarks.spec": "a sweep's settings and cells"}


def test_modules_stay_small_unless_one_concept():
    """No module above about 300 lines except the few that are one concept each (named here)."""
    sizes = {".".join(p.relative_to(REPO).with_suffix("").parts): len(p.read_text().splitlines())
             for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "perf" not in p.parts}
    large = {m: n for m, n in sizes.items() if n > 320 and m not in ONE_CONCEPT}
    assert not large, f"split by concern (or name the one concept in ONE_CONCEPT): {large}"
    assert sizes["methods.base"] <= 320  # the Pruner alone; masks, accounting and hparams have their own modules
