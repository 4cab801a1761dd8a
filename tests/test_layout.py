"""The package's layout: one module a paper under papers/<area>/, plumbing below papers, no import cycles.

The import graph is read statically from the source (every `import` and `from ... import`, also those inside
functions), so a cycle hidden behind a lazy import still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import seminal
from seminal.syllabus import SYLLABUS

SRC = Path(seminal.__file__).resolve().parent.parent  # .../src


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = SRC / "seminal") -> dict[str, set[str]]:
    """module -> the seminal modules it imports (resolved to the longest existing module name)."""
    paths = {_module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                while t and t not in paths:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + ".") and not t.startswith(mod + "."):
                    graph[mod].add(t)
                    break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_seminal():
    found = cycles(import_graph())
    assert not found, f"modules that import each other in a circle: {found}"


def _is_plumbing(mod: str) -> bool:
    return mod.rpartition(".")[2].startswith("_")


def test_core_and_plumbing_never_import_papers():
    graph = import_graph()
    papers = {e.module_name for e in SYLLABUS if e.implemented}
    for mod, deps in graph.items():
        lower = mod.startswith(("seminal.core", "seminal.data", "seminal.syllabus")) or _is_plumbing(mod)
        if lower:
            assert not deps & papers, f"{mod} imports paper modules {sorted(deps & papers)}"


def test_paper_modules_import_only_core_their_area_plumbing_and_papers():
    graph = import_graph()
    for e in (e for e in SYLLABUS if e.implemented):
        for dep in graph[e.module_name]:
            if dep.startswith("seminal.papers.") and _is_plumbing(dep):
                assert dep.rpartition(".")[0] == e.package, f"{e.module_name} uses another area's plumbing {dep}"


@pytest.mark.parametrize("entry", [e for e in SYLLABUS if e.implemented], ids=lambda e: e.slug)
def test_each_paper_lives_in_its_area(entry):
    path = SRC.parent / entry.module_path
    assert path.is_file(), f"{entry.slug}: expected {entry.module_path}"
    assert path.parent.name == entry.area.replace("-", "_")
