"""The shape the code promises (README, Architecture): SQL only behind registry/store/sql/, no
import cycle between files nor between packages (imports inside functions included), at most
20 modules at registry/'s top level, and a CLI that imports only the public ``registry`` package
and its own modules."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _package(path: Path, module: str) -> str:
    """The package relative imports in ``path`` (the module ``module``) start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _from(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a ``from ... import`` statement in ``package`` names."""
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
    return base


@cache
def _import_nodes(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``path``, at any depth of its code (parsed once per run)."""
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import | ast.ImportFrom)]


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (absolute names)."""
    found = set()
    package = _package(path, module)
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from(node, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


REGISTRY = _modules("registry")
CLI = _modules("cli")
MIGRATIONS = _modules("migrations")
TOP_LEVEL_LIMIT = 20


def _targets(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The known modules ``name`` imports, where ``from registry import clock`` is an edge to
    ``registry.clock`` alone: the package ``registry`` is only passed through."""
    package = _package(path, name)
    found = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from(node, package)
            subs = {f"{base}.{alias.name}" for alias in node.names} & known.keys()
            found.update(subs if len(subs) == len(node.names) else subs | {base})
    return (found & known.keys()) - {name}


def _node(module: str) -> str:
    """The node a module belongs to: each folder is one node (cli, migrations, registry/deploy,
    registry/store/sql, ...), and each module at registry's top level is one of its own."""
    path = {**REGISTRY, **CLI, **MIGRATIONS}[module]
    if path.parent == ROOT / "registry" and path.name != "__init__.py":
        return module
    return ".".join(path.parent.relative_to(ROOT).parts)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_only_the_store_and_migrations_import_sqlalchemy():
    offenders = [name for name, path in {**REGISTRY, **CLI}.items()
                 if not name.startswith("registry.store.sql")
                 and any(i == "sqlalchemy" or i.startswith("sqlalchemy.") for i in _imports(path, name))]
    assert offenders == []


def test_no_import_cycles():
    graph = {name: {i for i in _imports(path, name) if i in REGISTRY and i != name}
             for name, path in REGISTRY.items()}
    assert _cycles(graph) == []


def test_no_loops_between_packages():
    known = {**REGISTRY, **CLI, **MIGRATIONS}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges = graph.setdefault(_node(name), set())
        edges.update(_node(i) for i in _targets(path, name, known))
    for node, edges in graph.items():
        edges.discard(node)
    assert _cycles(graph) == []


def test_the_top_level_keeps_only_the_core():
    top = sorted(p.name for p in (ROOT / "registry").glob("*.py"))
    assert len(top) <= TOP_LEVEL_LIMIT, top


def test_the_cli_imports_only_the_public_registry_package():
    private = sorted({f"{name}: {i}" for name, path in CLI.items() for i in _imports(path, name)
                      if i in REGISTRY and i != "registry"})
    assert private == []


def test_every_export_resolves():
    import registry

    missing = [name for name in registry.__all__ if getattr(registry, name, None) is None]
    assert missing == []
