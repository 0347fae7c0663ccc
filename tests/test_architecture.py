"""The import rules of docs/architecture.md, checked on the source with ``ast`` (no module is imported).

Every module under ``repgeo/`` is parsed; its ``import`` statements are resolved to repgeo modules (relative
imports included; ``from package import name`` points at ``package.name`` when that is a module, else at the
package). A *unit* is a top-level package (``repgeo.metrics``) or a root module (``repgeo.assets``).

Rules:

(a) no module imports a private ``_name`` (module or symbol) of another unit; the shared root helper modules
    ``repgeo._files`` and ``repgeo._validation`` may be imported from anywhere (their own ``_names`` may not);
(b) no import cycle between modules, counting imports at module level and inside functions alike: a
    function-level import cannot break a load, but one that closes a loop still ties the two modules together
    (the loops issue #15 lists are of that kind); only imports under ``if TYPE_CHECKING:`` are skipped (they
    never run);
(c) ``repgeo.metrics`` imports nothing else of repgeo (the root ``_validation`` excepted);
(d) ``repgeo.probe`` imports nothing of metrics, audit, distill, demo, recipes or cli (it knows models, not
    metrics);
(e) the architecture page's table names exactly the units that exist, and every unit imports (at any level)
    only the units its row allows;
(f) no function is longer than 80 lines (``def`` line to last line).

``KNOWN_VIOLATIONS`` (empty) would list accepted exceptions; any other violation fails, and so does a listed one
that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repgeo"
PAGE = ROOT / "docs" / "architecture.md"
SHARED_PRIVATE = {"repgeo._files", "repgeo._validation"}
MAX_FUNCTION_LINES = 80

# Accepted violations (a stale entry fails the test, so the set only shrinks). Empty since the redesign landed:
# keep it so -- fix a violation rather than list it.
KNOWN_VIOLATIONS: set[str] = set()


@dataclass(frozen=True)
class Import:
    """One import statement of ``module``: the repgeo module it loads, the names it takes, where it sits."""

    module: str
    target: str
    names: tuple[str, ...]
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs


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


def _walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below ``node`` with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, type_only
                yield from _walk(stmt, type_only)
        else:
            yield child, type_only
            yield from _walk(child, type_only)


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The repgeo imports of module ``name`` (file ``path``) among ``modules``."""
    top = name.split(".")[0]
    is_package = path.name == "__init__.py"
    out = []
    for node, type_only in _walk(ast.parse(path.read_text(), str(path)), False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    out.append(Import(name, alias.name, (), node.lineno, type_only))
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
                out.append(Import(name, f"{source}.{n}", (), node.lineno, type_only))
            rest = tuple(n for n in names if n not in submodules)
            if rest or not submodules:
                out.append(Import(name, source, rest, node.lineno, type_only))
    return out


def unit_of(module: str) -> str:
    """The unit of a module: ``repgeo.metrics.cka`` -> ``repgeo.metrics``; a root module is its own unit."""
    return ".".join(module.split(".")[:2])


def all_imports(root: Path) -> list[Import]:
    """Every repgeo import of every module of the package at ``root``."""
    modules = module_names(root)
    return [imp for name, path in modules.items() for imp in imports(name, path, modules)]


def private_imports(found: list[Import], shared: set[str] = SHARED_PRIVATE) -> list[str]:
    """Rule (a): ``private: module -> target[.name]`` for every private name of another unit that is imported
    (the modules in ``shared`` may be imported; their own private names may not)."""
    out = []
    for imp in found:
        if unit_of(imp.target) == unit_of(imp.module):
            continue
        private = [] if imp.target in shared else [
            p for p in imp.target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
        names = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private:
            out.append(f"private: {imp.module} -> {imp.target}")
        out += [f"private: {imp.module} -> {imp.target}.{n}" for n in names]
    return out


def cycles(found: list[Import]) -> list[str]:
    """Rule (b): every strongly connected component of more than one module (or a module importing itself) in
    the graph of imports that run (module level and inside functions), as ``cycle: a -> b -> ...`` (sorted)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.module, set())
        if not imp.type_only:
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


# ------------------------------------------------------------------------------------------ the page's table


@dataclass(frozen=True)
class Row:
    unit: str
    floor: int
    may_import: frozenset[str]


def _unit_name(cell: str, package: str = "repgeo") -> str:
    name = cell.strip().strip("`")
    return package if name == "__init__" else f"{package}.{name}"


def page_table(text: str, package: str = "repgeo") -> dict[str, Row]:
    """The rows of the page's "Unit | Floor | May import | Job" table, by dotted unit name."""
    rows = {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*Unit\s*\|\s*Floor\s*\|\s*May import", line))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        unit, floor, may, _job = (c.strip() for c in line.strip().strip("|").split("|", 3))
        allowed = frozenset(_unit_name(n, package) for n in re.findall(r"`([^`]+)`", may))
        rows[_unit_name(unit, package)] = Row(_unit_name(unit, package), int(floor), allowed)
    return rows


def units(root: Path) -> set[str]:
    """The units under ``root``: its packages and its root modules (``__init__`` is the package itself)."""
    return {unit_of(name) for name in module_names(root)}


def page_violations(rows: dict[str, Row], found: list[Import], present: set[str]) -> list[str]:
    """Rule (e): units the page names that do not exist, units that exist and are not on the page, and every
    import of a unit that its row does not allow."""
    out = [f"page names a missing unit: {u}" for u in sorted(set(rows) - present)]
    out += [f"unit not on the page: {u}" for u in sorted(present - set(rows))]
    for unit, targets in sorted(unit_edges(found).items()):
        if unit in rows:
            out += [f"not allowed: {unit} -> {t}" for t in sorted(targets - rows[unit].may_import)]
    return out


def all_violations(root: Path = PACKAGE, page: Path = PAGE) -> set[str]:
    found = all_imports(root)
    return set(private_imports(found) + cycles(found) + long_functions(root)
               + page_violations(page_table(page.read_text()), found, units(root)))


# ------------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def found() -> list[Import]:
    return all_imports(PACKAGE)


PAGE_KINDS = ("page names a missing unit:", "unit not on the page:", "not allowed:")


def _check(violations: list[str], kind: str | tuple[str, ...]) -> None:
    """No violation of ``kind`` beyond the allowlisted ones, and every allowlisted one of that kind still real."""
    known = {v for v in KNOWN_VIOLATIONS if v.startswith(kind)}
    new = sorted(set(violations) - known)
    gone = sorted(known - set(violations))
    assert not new, "new violations of docs/architecture.md:\n" + "\n".join(new)
    assert not gone, "fixed; remove from KNOWN_VIOLATIONS:\n" + "\n".join(gone)


def test_no_private_name_crosses_a_unit(found):
    _check(private_imports(found), "private:")


def test_no_import_cycles(found):
    _check(cycles(found), "cycle:")


def test_no_function_over_80_lines():
    _check(long_functions(PACKAGE), "long:")


def test_metrics_imports_nothing_else_of_repgeo(found):
    imported = {imp.target for imp in found if unit_of(imp.module) == "repgeo.metrics"}
    outside = {t for t in imported if unit_of(t) not in ("repgeo.metrics", "repgeo._validation")}
    assert not outside, sorted(outside)
    assert imported, "no import of the metrics package was seen: the checker is broken"


def test_probe_knows_no_consumer(found):
    banned = {"repgeo.audit", "repgeo.distill", "repgeo.demo", "repgeo.recipes", "repgeo.cli", "repgeo.metrics"}
    hits = sorted(f"{imp.module} -> {imp.target}" for imp in found
                  if unit_of(imp.module) == "repgeo.probe" and unit_of(imp.target) in banned)
    assert not hits, hits


def test_the_page_names_every_unit_and_allows_every_import(found):
    rows = page_table(PAGE.read_text())
    _check(page_violations(rows, found, units(PACKAGE)), PAGE_KINDS)


def test_the_page_is_layered():
    """Every unit the table allows sits on a lower floor (so the allowed graph has no loop), and the table keeps
    rules (c) and (d): metrics may import only _validation, probe none of its consumers."""
    rows = page_table(PAGE.read_text())
    assert len(rows) >= 10
    upward = [f"{r.unit} (floor {r.floor}) -> {t}" for r in rows.values() for t in r.may_import
              if t not in rows or rows[t].floor >= r.floor]
    assert not upward, upward
    assert rows["repgeo.metrics"].may_import <= {"repgeo._validation"}
    assert not rows["repgeo.probe"].may_import & {"repgeo.metrics", "repgeo.audit", "repgeo.distill",
                                                  "repgeo.demo", "repgeo.recipes", "repgeo.cli"}


def test_known_violations_are_all_real_kinds():
    kinds = ("private:", "cycle:", "long:", *PAGE_KINDS)
    assert all(v.startswith(kinds) for v in KNOWN_VIOLATIONS)


# ------------------------------------------------------------------------------- the checker can fail


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_catches_loops_private_imports_long_functions_and_page_drift(tmp_path):
    long_body = "".join(f"    x{i} = {i}\n" for i in range(79))
    _write(tmp_path, {
        "pkg/__init__.py": "from .metrics import f\n",
        "pkg/_files.py": "def write():\n    pass\n",
        "pkg/metrics/__init__.py": "from .core import f\nfrom . import _hidden\n",
        "pkg/metrics/_hidden.py": "x = 1\n",
        "pkg/metrics/core.py": "def f():\n    from pkg.probe import g\n    return g\n",
        "pkg/probe/__init__.py": "from .a import g\n",
        "pkg/probe/a.py": "from .b import h\n\n\ndef g():\n    return h\n",
        "pkg/probe/b.py": "def h():\n    from .a import g\n    return g\n",  # a loop closed inside a function
        "pkg/audit/__init__.py": "from pkg.metrics._hidden import x\nfrom pkg.metrics import _secret, f\n"
                                 "from pkg._files import write, _inner\nimport pkg.probe\n",
        "pkg/audit/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .typed2 import T\n",
        "pkg/audit/typed2.py": "from .typed import TYPE_CHECKING\n",  # no loop: the other side never runs
        "pkg/audit/long.py": f"def too_long():\n{long_body}    return 0\n\n\ndef just_fits():\n{long_body}",
    })
    page = ("| Unit | Floor | May import | Job |\n|---|---|---|---|\n| `metrics` | 1 | — | m |\n"
            "| `probe` | 1 | — | p |\n| `audit` | 2 | `metrics`, `_files` | a |\n| `ghost` | 1 | — | g |\n"
            "| `__init__` | 3 | `metrics` | i |\n")
    found = all_imports(tmp_path / "pkg")
    assert set(private_imports(found, {"pkg._files"})) == {
        "private: pkg.audit -> pkg.metrics._hidden", "private: pkg.audit -> pkg.metrics._secret",
        "private: pkg.audit -> pkg._files._inner"}
    assert cycles(found) == ["cycle: pkg.probe.a -> pkg.probe.b"]
    assert long_functions(tmp_path / "pkg") == ["long: pkg.audit.long.too_long"]
    assert set(page_violations(page_table(page, "pkg"), found, units(tmp_path / "pkg"))) == {
        "page names a missing unit: pkg.ghost", "unit not on the page: pkg._files",
        "not allowed: pkg.metrics -> pkg.probe", "not allowed: pkg.audit -> pkg.probe"}
    assert unit_edges(found)["pkg.metrics"] == {"pkg.probe"}


def test_the_checker_reads_this_repository():
    """Known edges of the real package are seen, so a silent parser (no imports found) cannot pass the rules."""
    edges = unit_edges(all_imports(PACKAGE))
    assert {"repgeo.metrics", "repgeo.probe"} <= edges["repgeo.audit"]
    assert "repgeo.metrics" in edges["repgeo.counterexamples"]
    assert "repgeo.counterexamples" in edges["repgeo.cli"]
