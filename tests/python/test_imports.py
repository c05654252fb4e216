"""Imports only run downward, with no circles.

Read from the source with Python's ``ast`` (every import, at module level or
inside a function: an import hidden in a function is still a dependency):
no circle between modules; no module imports the package root (``import
modelbench`` or a name re-exported by ``modelbench/__init__.py``) except the
root itself, the CLI and the demo; and each layer imports only the layers
below it (docs/architecture.md draws them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "modelbench"

# Layers from the top; a package may import its own modules and any package
# of a later line, never one of an earlier line or of its own line.
LAYERS = [
    ["__main__"],
    ["cli", "demo"],
    ["server"],
    ["ui", "jobs", "bench", "cache"],
    ["eval"],
    ["config"],
    ["tasks", "gateway", "predict"],
    ["engine"],
    ["models", "db"],
    ["_core", "_build_info", "_version"],
]
MAY_IMPORT_ROOT = {"modelbench", "modelbench.__main__", "modelbench.demo"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module imported, line) for every import of our package in ``path``:
    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (alias.name, node.lineno)
                for alias in node.names
                if alias.name.split(".")[0] == "modelbench"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "modelbench":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return sorted(found, key=lambda item: item[1])


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods) | {"modelbench._core", "modelbench._build_info"}
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module
    that imports itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    edges = {m: {t for t, _ in targets} for m, targets in graph().items()}
    assert cycles(edges) == [], "modules that import each other (directly or around a circle)"


def test_nothing_imports_the_package_root() -> None:
    offenders = [
        f"{m}:{line}"
        for m, targets in graph().items()
        if m not in MAY_IMPORT_ROOT and not m.startswith("modelbench.cli")
        for target, line in targets
        if target == "modelbench"
    ]
    assert offenders == [], "import the module that defines the name, not the package root"


def test_imports_only_run_downward() -> None:
    upward = []
    for module, targets in graph().items():
        here = layer_of(module)
        if here is None:
            continue
        for target, line in targets:
            there = layer_of(target)
            same_package = target.split(".")[:2] == module.split(".")[:2]
            if there is not None and not same_package and there <= here:
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
    ],
)
def test_the_circle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_walk_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from modelbench.models import loader\nfrom . import config\n")
    known = {"modelbench.models.loader", "modelbench.config"}
    assert imports_of("modelbench.x", source, known) == [
        ("modelbench.models.loader", 2),
        ("modelbench.config", 3),
    ]
