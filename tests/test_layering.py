"""The package layout stays true: imports point one way between packages, and no module imports itself back.

Packages are ordered (docs/architecture.md): the core `moderation` at the bottom; `eval` and `serving` on it,
side by side; `training` above them; `operations` above that; the repository-only `benchmarks` at the top.
A package may import only from a package below it (or itself). Every `import` counts, also one inside a
function: a deferred import is still an arrow. Read with `ast` only, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Package -> layer. A package may import packages of a lower layer only.
LAYERS: dict[str, int] = {"moderation": 0, "eval": 1, "serving": 1, "training": 2, "operations": 3, "benchmarks": 4}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the layered packages, by dotted name."""
    return {module_name(p): p for pkg in LAYERS for p in sorted((REPO / pkg).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """The project modules `name` imports (anywhere in the file), with line numbers."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module: the deepest known one
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in LAYERS:
                found.append((target, node.lineno))
    return found


def import_graph() -> dict[str, list[tuple[str, int]]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def test_imports_point_down_the_layers():
    wrong = []
    for name, targets in import_graph().items():
        here = name.split(".")[0]
        for target, line in targets:
            there = target.split(".")[0]
            if there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{name}:{line} imports {target} ({here} may import only {sorted(p for p in LAYERS if LAYERS[p] < LAYERS[here])})")
    assert not wrong, "imports against the package order:\n" + "\n".join(wrong)


def find_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, []):
            if w == v:
                continue
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
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circles():
    graph = import_graph()
    # A package's __init__ importing its own submodules is how a package re-exports; only circles between
    # modules count (a submodule importing its package's __init__ that imports it back is one).
    cycles = find_cycles(graph)
    assert not cycles, "import circles (every import counts, also inside functions):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_walk_sees_imports():
    # Guards the test itself: a walk that found nothing would pass everything.
    graph = import_graph()
    assert ("moderation.schema", ) and any(t == "moderation.schema" for t, _ in graph["moderation.scorer"])
    assert find_cycles({"a": [("b", 1)], "b": [("a", 2)], "c": [("a", 3)]}) == [["a", "b"]]
