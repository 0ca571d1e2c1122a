"""No package of the workspace imports itself in a circle.

A cycle between two modules (``ledger`` ↔ ``admitpath``, once) means neither can be read, tested or
moved without the other, and it is kept alive by imports hidden inside functions or under
``TYPE_CHECKING``. So every import counts here, wherever it stands: at the top, in a function, under
``if TYPE_CHECKING``. The graph is built from the source with :mod:`ast` (nothing is imported); an
edge goes to the module an import names — ``from .a import b`` to ``pkg.a.b`` when that is a module,
else to ``pkg.a``. A package's ``__init__`` importing its own submodules is an ordinary edge; a
submodule is not taken to import its parent package.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
#: Every import package under libs/*/src and services/*/src, with its directory.
PACKAGES: dict[str, Path] = {
    p.name: p for p in sorted(ROOT.glob("*/*/src/*")) if p.is_dir() and (p / "__init__.py").exists()
}


def module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package].parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules(package: str) -> dict[str, Path]:
    return {module_name(package, p): p for p in sorted(PACKAGES[package].rglob("*.py"))}


def _resolve(package: str, here: str, is_init: bool, node: ast.ImportFrom) -> list[str]:
    """The modules of ``package`` that a ``from … import …`` names."""
    if node.level:
        base = here.split(".") if is_init else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    known = modules(package)
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in known:
            out.append(sub)
        elif target in known:
            out.append(target)
    return out


@cache
def graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (anywhere in its source)."""
    known = modules(package)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_init = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    # ``import a.b.c`` runs a, a.b and a.b.c: the deepest that is ours is the edge
                    found = [".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in known]
                    edges[name].update(found[:1])
            elif isinstance(node, ast.ImportFrom):
                edges[name].update(_resolve(package, name, is_init, node))
        edges[name].discard(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_every_package_is_checked() -> None:
    assert {"billing", "catalog", "gateway", "runner", "contracts", "servicekit"} <= set(PACKAGES)


def test_the_graph_sees_imports_wherever_they_stand(tmp_path: Path) -> None:
    """The checker itself: a cycle through a function-level import and a TYPE_CHECKING one is found."""
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    (pkg / "c.py").write_text("import demo.a\n")
    PACKAGES["demo"] = pkg
    try:
        edges = graph("demo")
        assert edges["demo.a"] == {"demo.sub.b"} and edges["demo.sub.b"] == {"demo.a"}
        assert edges["demo.sub"] == {"demo.sub.b"} and edges["demo.c"] == {"demo.a"}
        assert cycles(edges) == [["demo.a", "demo.sub.b"]]
    finally:
        del PACKAGES["demo"]
        modules.cache_clear()
        graph.cache_clear()


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package: str) -> None:
    found = cycles(graph(package))
    assert not found, f"{package} has import cycles: {found}"
