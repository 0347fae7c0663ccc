"""The import rules of docs/architecture.md, checked on the source with ``ast`` (no module is imported).

Every module under ``repgeo/`` is parsed; its ``import`` statements are resolved to repgeo modules (relative
imports included; ``from package import name`` points at ``package.name`` when that is a module, else at the
package). A *unit* is a top-level package (``repgeo.metrics``) or a root module (``repgeo.assets``).

Rules:

(a) no module imports a private ``_name`` (module or symbol) of another unit, except the shared root helpers
    ``repgeo._files`` and ``repgeo._validation``;
(b) no import cycle between modules, counting module-level imports only: an import inside a function runs when
    the function is called, after every module has loaded, so it cannot deadlock a load (the CLI's commands
    import their packages that way on purpose); imports under ``if TYPE_CHECKING:`` never run and are skipped;
(c) ``repgeo.metrics`` imports nothing else of repgeo (the root ``_validation`` excepted);
(d) ``repgeo.probe`` imports nothing of audit, distill, demo, recipes or cli;
(e) the architecture page's table names exactly the units that exist, and every unit imports (at any level)
    only the units its row allows;
(f) no function is longer than 80 lines (``def`` line to last line).

Violations that other parts of the redesign are removing in parallel are listed in ``KNOWN_VIOLATIONS``; any
other violation fails, and so does an allowlisted one that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repgeo"
PAGE = ROOT / "docs" / "architecture.md"
SHARED_PRIVATE = {"repgeo._files", "repgeo._validation"}
MAX_FUNCTION_LINES = 80

# Today's violations outside the cli/counterexamples/architecture work, each removed by another part of the
# redesign issue (#15). Emptied by the redesign merge: the lead deletes each entry as its part lands.
KNOWN_VIOLATIONS: set[str] = set()


@dataclass(frozen=True)
class Import:
    """One import statement of ``module``: the repgeo module it loads, the names it takes, where it sits."""

    module: str
    target: str
    names: tuple[str, ...]
    line: int
    top_level: bool  # runs when the module loads (not inside a function, not under TYPE_CHECKING)


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``: dotted name -> file (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, top_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.body:
                yield stmt, False
                yield from _walk(stmt, False)
            for stmt in child.orelse:
                yield stmt, top_level
                yield from _walk(stmt, top_level)
        else:
            yield child, top_level
            yield from _walk(child, top_level)


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The repgeo imports of module ``name`` (file ``path``) among ``modules``."""
    top = name.split(".")[0]
    is_package = path.name == "__init__.py"
    out = []
    for node, top_level in _walk(ast.parse(path.read_text(), str(path)), True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    out.append(Import(name, alias.name, (), node.lineno, top_level))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != top:
                continue
            names = tuple(alias.name for alias in node.names)
            submodules = [n for n in names if f"{source}.{n}" in modules]
            for n in submodules:
                out.append(Import(name, f"{source}.{n}", (), node.lineno, top_level))
            rest = tuple(n for n in names if n not in submodules)
            if rest or not submodules:
                out.append(Import(name, source, rest, node.lineno, top_level))
    return out


def unit_of(module: str) -> str:
    """The unit of a module: ``repgeo.metrics.cka`` -> ``repgeo.metrics``; a root module is its own unit."""
    return ".".join(module.split(".")[:2])


def all_imports(root: Path) -> list[Import]:
    modules = module_names(root)
    return [imp for name, path in modules.items() for imp in imports(name, path, modules)]


def private_imports(found: list[Import]) -> list[str]:
    """Rule (a): ``module -> target[.name]`` for every private name of another unit that is imported."""
    out = []
    for imp in found:
        if unit_of(imp.target) == unit_of(imp.module) or imp.target in SHARED_PRIVATE:
            continue
        private = [p for p in imp.target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
        names = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private:
            out.append(f"private: {imp.module} -> {imp.target}")
        out += [f"private: {imp.module} -> {imp.target}.{n}" for n in names]
    return out


def cycles(found: list[Import]) -> list[str]:
    """Rule (b): every strongly connected component of more than one module (or a module importing itself) in
    the graph of module-level imports, as ``cycle: a -> b -> ...`` (sorted names)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.module, set())
        if imp.top_level:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(component) > 1 or v in graph.get(v, ()):
                out.append("cycle: " + " -> ".join(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def unit_edges(found: list[Import]) -> dict[str, set[str]]:
    """Which units each unit imports (any level), without itself."""
    edges: dict[str, set[str]] = {}
    for imp in found:
        a, b = unit_of(imp.module), unit_of(imp.target)
        edges.setdefault(a, set())
        if a != b:
            edges[a].add(b)
    return edges


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Rule (f): ``long: module.function (N lines)`` for every function longer than ``limit`` lines."""
    out = []
    for name, path in module_names(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"long: {name}.{node.name}")  # ({n} lines)
    return sorted(out)
