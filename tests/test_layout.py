"""The house rules a test can check: no import cycles between the packages of hubertlab, nor
between the modules of one package (lazy imports inside functions count too; `if
TYPE_CHECKING:` blocks do not)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hubertlab"


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports_by_module() -> dict[str, set[str]]:
    """module -> the hubertlab modules its code imports (`from package import module` names
    the module, not the package)."""
    modules = {module_name(path) for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tree.body = [
            node
            for node in tree.body
            if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test))
        ]
        imported = graph.setdefault(module_name(path), set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hubertlab."):
                submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
                imported |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("hubertlab.")}
    return graph


def imports_by_package() -> dict[str, set[str]]:
    """package -> the other hubertlab packages (or top-level modules) its code imports."""
    graph: dict[str, set[str]] = {}
    for module, imported in imports_by_module().items():
        for name in imported:
            if package_of(name) != package_of(module):
                graph.setdefault(package_of(module), set()).add(package_of(name))
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether `goal` can be reached from `start` by following imports."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_import_cycles_between_packages():
    graph = imports_by_package()
    assert "hubertlab.train" in graph and "hubertlab.tasks" in graph["hubertlab.train"]
    cycles = sorted(a for a in graph if reaches(graph, a, a))
    assert not cycles, {a: sorted(graph[a]) for a in cycles}


def test_no_import_cycles_between_modules_of_a_package():
    """Sibling modules (files of one package) import each other one way only: a circle means
    one of them holds what both need. A package's __init__ and its modules are parent and
    child, not siblings."""
    graph = imports_by_module()
    assert "hubertlab.models.safe_load" in graph["hubertlab.models.checkpoint"]

    def parent(module: str) -> str:
        return module.rsplit(".", 1)[0]

    siblings = {
        module: {name for name in imported if parent(name) == parent(module)}
        for module, imported in graph.items()
    }
    cycles = sorted(m for m in siblings if reaches(siblings, m, m))
    assert not cycles, {m: sorted(siblings[m] & set(cycles)) for m in cycles}
