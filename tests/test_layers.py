"""The packages of ``kizuna`` depend only downward: no import cycle between them.

Each package (``kizuna.store``, ``kizuna.ngsild``, ...) and each top-level module
(``kizuna.errors``, ``kizuna.app``, ...) is one unit; every import between units, at module
level, inside a function or under ``TYPE_CHECKING``, is an edge. A cycle means two units that
cannot be read, tested or replaced one without the other, so any cycle fails the test, named
with the modules whose imports close it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import kizuna

ROOT = Path(kizuna.__file__).parent


def unit_of(module: str) -> str | None:
    """``kizuna.store.sqlite`` -> ``store``; ``kizuna.errors`` -> ``errors``; None outside."""
    parts = module.split(".")
    if parts[0] != "kizuna" or len(parts) == 1:
        return None
    return parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every ``kizuna.*`` module ``path`` imports, relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            # ``from kizuna import store`` imports the package ``store``
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("kizuna.")}


def unit_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> unit it imports -> the importing modules."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    known = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    for path in ROOT.rglob("*.py"):
        source = unit_of(module_name(path))
        for imported in imports_of(path):
            target = unit_of(imported)
            if source and target and target != source and target in known:
                graph[source][target].add(module_name(path))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in on_stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def test_the_walk_sees_the_imports_it_must() -> None:
    graph = unit_graph()
    assert "kizuna.app" in graph["app"]["store"]  # app wires the store
    assert graph["ngsild"]["store"]  # the services read and write through it


def test_no_import_cycle_between_packages() -> None:
    graph = unit_graph()
    problems = []
    for component in cycles(graph):
        members = set(component)
        edges = [
            f"  {source} -> {target}: {', '.join(sorted(graph[source][target]))}"
            for source in component
            for target in sorted(graph[source])
            if target in members
        ]
        problems.append(f"{' <-> '.join(component)}\n" + "\n".join(edges))
    assert not problems, "import cycles between packages:\n" + "\n".join(problems)


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = {
        "a": {"b": {"kizuna.a.x"}},
        "b": {"c": {"kizuna.b.y"}},
        "c": {"a": {"kizuna.c.z"}},
        "d": {"a": set()},
    }
    assert cycles(graph) == [["a", "b", "c"]]
