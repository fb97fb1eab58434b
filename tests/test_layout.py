"""The house rules a test can check: no import cycles between the packages of hubertlab, nor
between the modules of one package (lazy imports inside functions count too; `if
TYPE_CHECKING:` blocks do not)."""

from __future__ import annotations

import ast
import sys
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


def function_level_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, imported module, the line and the one above) of every import inside a
    function or method of hubertlab."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for func in ast.walk(ast.parse(text)):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                context = "\n".join(lines[max(node.lineno - 2, 0) : node.lineno])
                rel = str(path.relative_to(SRC.parent))
                found += [(rel, node.lineno, name, context) for name in names]
    return found


def test_imports_inside_functions_say_why():
    """Imports sit at the top of a module. One inside a function is lazy for a reason (an
    optional or slow third-party package, a command's `--help` kept free of torch) that a
    `# lazy:` comment on its line or the line above gives; the standard library never is."""
    imports = function_level_imports()
    assert any(name == "matplotlib" for _, _, name, _ in imports)  # the walk finds them
    stdlib = sorted(
        f"{file}:{line} {name}"
        for file, line, name, _ in imports
        if name.split(".")[0] in sys.stdlib_module_names
    )
    assert not stdlib, stdlib
    unexplained = sorted(
        f"{file}:{line} {name}" for file, line, name, context in imports if "# lazy:" not in context
    )
    assert not unexplained, unexplained
