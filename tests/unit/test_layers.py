"""The import graph: no cycles among the project's modules, and migrations that import no app code.

The layer contracts themselves (gateway → storage → pricing → config) are import-linter's (`lint-imports`,
configured in pyproject.toml); this test adds what a layers contract cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "storage", "insights", "pricing", "config", "migrations")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _project_graph(*, type_checking: bool) -> dict[str, set[str]]:
    import_graph = grimp.build_graph(
        *PACKAGES,
        include_external_packages=False,
        exclude_type_checking_imports=not type_checking,
        cache_dir=None,  # never a stale graph
    )
    return {m: set(import_graph.find_modules_directly_imported_by(m)) for m in import_graph.modules}


def test_no_import_cycles_among_the_projects_modules() -> None:
    assert _cycles(_project_graph(type_checking=False)) == []


def test_no_import_cycles_even_through_type_checking_imports() -> None:
    assert _cycles(_project_graph(type_checking=True)) == []


def test_migrations_import_no_application_code() -> None:
    """Every revision and the Alembic environment: a migration behaves as it did when it was written."""
    offenders = []
    for path in sorted((REPO / "migrations").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("gateway", "storage", "pricing"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert path.name.endswith(".py") and offenders == []
