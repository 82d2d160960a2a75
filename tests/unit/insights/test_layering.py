"""`insights` is pure: it may import `pricing` and `config`, never `gateway` or `storage`."""

from __future__ import annotations

import ast
from pathlib import Path

import insights

FORBIDDEN = ("gateway", "storage")


def test_insights_never_imports_gateway_or_storage() -> None:
    root = Path(insights.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
