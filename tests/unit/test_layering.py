"""The package's imports point one way, with no loops and no imports hidden in functions.

Read with ``ast`` from the source (nothing is imported), so a loop that Python would
only trip over in some import order is still found. The layers, lowest first: a module
may import its own layer and the ones below it, never one above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "hexproxy"

# "" is the package itself (``hexproxy/__init__.py``: the version).
LAYERS: list[tuple[str, ...]] = [
    ("", "errors", "units"),  # the error tree, sizes and durations: leaf values
    ("registry",),  # the pure Hex protocol
    ("config",),  # the configuration value (checks names and keys with registry)
    ("store",),  # the cache on disk
    ("upstream",),  # the HTTP client, breaker, shared download
    ("installs",),  # installer CSVs and builds, pure
    ("cache",),  # the policy and its wiring
    ("hosted",),  # repositories hexproxy hosts and signs itself
    ("airgap", "orgs"),  # warm, resolve, lock files, bundles; hex.pm organizations
    ("web",),  # the HTTP layer and the server process
    ("cli",),  # the command line
    ("__main__",),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def _imported(
    name: str, node: ast.Import | ast.ImportFrom, known: set[str], is_pkg: bool
) -> set[str]:
    """The package's own modules one import statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    base = node.module or ""
    if node.level:
        package = name.split(".") if is_pkg else name.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    found = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.add(submodule if submodule in known else base)
    return found & known


def import_graph(root: Path) -> Graph:
    """Module -> the package's modules it imports (type-checking imports included)."""
    found = modules(root)
    known = set(found)
    graph: Graph = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _imported(name, node, known, is_pkg) - {name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: Graph) -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        if layer(module) not in RANK:
            problems.append(f"{module}: {layer(module)!r} has no place in LAYERS")
            continue
        for target in sorted(imports):
            if RANK.get(layer(target), len(LAYERS)) > RANK[layer(module)]:
                problems.append(f"{module} imports {target}, a layer above it")
    return problems


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _nested_imports(tree: ast.AST, inside: bool = False) -> Iterator[ast.stmt]:
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.Import | ast.ImportFrom) and inside:
            yield child
        nested = inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        yield from _nested_imports(child, nested)


def hidden_imports(root: Path) -> list[str]:
    """Imports inside a function or class: the way a loop gets dodged instead of fixed."""
    return [
        f"{name}:{node.lineno}"
        for name, path in modules(root).items()
        for node in _nested_imports(ast.parse(path.read_text(encoding="utf-8")))
    ]


# ----- the package -----


def test_every_import_points_down() -> None:
    assert upward_imports(import_graph(PACKAGE_ROOT)) == []


def test_no_import_loops() -> None:
    assert cycles(import_graph(PACKAGE_ROOT)) == []


def test_no_imports_inside_functions() -> None:
    assert hidden_imports(PACKAGE_ROOT) == []


def test_the_graph_sees_the_package() -> None:
    """Guard against a walk that finds nothing and so passes for the wrong reason."""
    graph = import_graph(PACKAGE_ROOT)
    assert "hexproxy.store.cachekey" in graph["hexproxy.cache.policy"]
    assert "hexproxy.store.inventory" in graph["hexproxy.store.eviction"]  # from . import x
    assert "hexproxy.errors" in graph["hexproxy.registry.naming"]  # absolute import
    assert {layer(m) for m in graph} == set(RANK)


# ----- the checks themselves, on a small package with the faults in it -----


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    root = tmp_path / "hexproxy"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "store/__init__.py": "",
        "store/disk.py": "from ..cache import policy\nfrom . import other\n",
        "store/other.py": "from .disk import thing\n",
        "cache/__init__.py": "",
        "cache/policy.py": "def lazy():\n    from .. import errors\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checks_find_an_upward_import_a_loop_and_a_hidden_import(faulty: Path) -> None:
    graph = import_graph(faulty)
    assert upward_imports(graph) == [
        "hexproxy.store.disk imports hexproxy.cache.policy, a layer above it"
    ]
    assert cycles(graph) == [["hexproxy.store.disk", "hexproxy.store.other"]]
    assert hidden_imports(faulty) == ["hexproxy.cache.policy:2"]
