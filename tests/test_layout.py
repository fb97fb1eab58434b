"""The house rules a test can check: no import cycles between the packages of hubertlab (lazy
imports inside functions count too; `if TYPE_CHECKING:` blocks do not)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hubertlab"


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def imports_by_package() -> dict[str, set[str]]:
    """package -> the other hubertlab packages (or top-level modules) its code imports."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        module = ".".join(p for p in parts if p != "__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tree.body = [
            node
            for node in tree.body
            if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test))
        ]
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hubertlab."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("hubertlab.")]
            for name in names:
                if package_of(name) != package_of(module):
                    graph.setdefault(package_of(module), set()).add(package_of(name))
    return graph


def test_no_import_cycles_between_packages():
    graph = imports_by_package()
    assert "hubertlab.train" in graph and "hubertlab.tasks" in graph["hubertlab.train"]

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in graph if reaches(a, a, {a}))
    assert not cycles, {a: sorted(graph[a]) for a in cycles}
