"""Each task is the only place that knows its name: outside tasks/ (which holds the name table,
hubertlab.tasks.TASKS) and models/ (which reads and writes each model kind's files), no code
decides anything by comparing a task name or model kind with a string. Callers look the task
up and ask it (`needs_units`, `predicts`, `exports_to`, `check_config`, `after_training`).

What the test flags, in the code (docstrings, comments and help text are prose, not code):
  - a comparison with a name: `x == "ctc"`, `x != "hubert"`, `x in ("vtc", "ctc")`;
  - a dict literal keyed by a name (a dispatch table, `{"spidr": ...}[kind]`);
  - a `Literal[...]` of names (the config's choices come from the registry).
What stays, and why:
  - a name as a value: a config the demo writes (`{"task": "vtc"}`), a CLI default, a key to
    read back the demo's own result records;
  - ALLOWED below: words that are not our task names although they are spelled like one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hubertlab"
NAMES = frozenset({"hubert", "spidr", "dinosr", "vtc", "ctc"})
OWNERS = ("tasks", "models")  # the packages that may know the names

# (file under src/hubertlab, name): why that comparison is not a task or model-kind test.
ALLOWED = {
    ("commands/export.py", "spidr"): "`--to spidr` names the spidr package's file format "
    "(what its loader reads), as `--to hf` names transformers'; the model class decides",
    ("commands/score.py", "vtc"): "`score vtc|asr` names a scoring of two files (RTTM against "
    "RTTM, transcripts against transcripts); it reads no checkpoint or config and looks up no "
    "task (`asr` is no task of ours)",
    ("features/transformers_layers.py", "hubert"): "a transformers config.json's `model_type` "
    "(the transformers family its folder holds), read as transformers spells it",
}


def _names_in(node: ast.AST) -> set[str]:
    """Task names among the string constants of `node` (a constant or a literal collection)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {n for elt in node.elts for n in _names_in(elt)}
    return set()


def name_tests(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, name, what) of every place `tree` decides by a task name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            ops = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
            if any(isinstance(op, ops) for op in node.ops):
                for side in (node.left, *node.comparators):
                    found += [(node.lineno, n, "comparison") for n in _names_in(side)]
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None:
                    found += [(node.lineno, n, "dict key") for n in _names_in(key)]
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            found += [(node.lineno, n, "Literal choice") for n in _names_in(node.slice)]
    return found


def test_the_grep_sees_each_form():
    code = """
a == "ctc"
"hubert" != b
c in ("vtc", "asr")
d = {"spidr": 1}
e: Literal["dinosr", "x"]
f = {"task": "vtc"}
g(default="hubert")
"""
    found = sorted((line, name) for line, name, _ in name_tests(ast.parse(code)))
    assert found == [(2, "ctc"), (3, "hubert"), (4, "vtc"), (5, "spidr"), (6, "dinosr")]


def test_no_task_name_is_tested_outside_tasks_and_models():
    offences = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.split("/")[0] in OWNERS:
            continue
        for line, name, what in name_tests(ast.parse(path.read_text(encoding="utf-8"))):
            if (rel, name) not in ALLOWED:
                offences.append(f"{rel}:{line}: {what} with {name!r}")
    assert not offences, "ask the task (hubertlab.tasks) instead:\n" + "\n".join(offences)


def test_every_allowance_is_still_needed():
    """An allowance whose comparison went away is removed, so the list stays the truth."""
    used = set()
    for rel, name in ALLOWED:
        tree = ast.parse((SRC / rel).read_text(encoding="utf-8"))
        if any(n == name for _, n, _ in name_tests(tree)):
            used.add((rel, name))
    assert used == set(ALLOWED)
