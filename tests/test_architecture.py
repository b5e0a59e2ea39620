"""The package's shape stays readable: no import cycle in ``audit/``, no function over 60 lines,
no class over 200 lines. Both are read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AUDIT = Path(__file__).resolve().parents[1] / "audit"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 200


def module_name(path: Path) -> str:
    parts = path.relative_to(AUDIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``audit`` modules a module imports, wherever the import statement sits (functions
    included: a lazy import is still a dependency); ``if TYPE_CHECKING:`` blocks are left out."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # "from audit.x import y": y may be a module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in AUDIT.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(ast.parse(path.read_text(encoding="utf-8")), name,
                                   path.name == "__init__.py", known)
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_from_functions_and_relative_forms_but_not_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\nimport audit.b\nfrom . import c\nif TYPE_CHECKING:\n    "
        "from audit import d\ndef f():\n    from audit.e import thing\n"
    )
    known = {"audit.a", "audit.b", "audit.c", "audit.d", "audit.e"}
    assert imported_modules(
        ast.parse(source), "audit.a", False, known) == {"audit.b", "audit.c", "audit.e"}


def test_no_import_cycle_in_audit() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "audit.run.stages" in graph
    found = cycles(graph)
    assert not found, ("import cycles in audit/ (break each by moving the shared piece down a "
                       "layer):\n") + "\n".join(
        " ⇄ ".join(c) for c in found
    )


def oversized(
        limit_function: int = MAX_FUNCTION_LINES, limit_class: int = MAX_CLASS_LINES) -> list[str]:
    rows = []
    for path in sorted(AUDIT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = (limit_function if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     else
                     limit_class if isinstance(node, ast.ClassDef) else None)
            if limit is None:
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > limit:
                rows.append(f"{path.relative_to(AUDIT.parent)}:{node.lineno} {node.name}: {length} "
                            f"lines > {limit}")
    return rows


def test_the_size_check_sees_a_long_function(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n",
                                      encoding="utf-8")
    monkeypatch.setitem(globals(), "AUDIT", tmp_path)
    assert [r.split(" ", 1)[1] for r in oversized()] == ["long: 62 lines > 60"]


def test_no_function_over_60_lines_and_no_class_over_200_in_audit() -> None:
    rows = oversized()
    assert not rows, "split these into named steps a reader can follow:\n" + "\n".join(rows)
