"""The package's modules form layers: each imports only modules below it, never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import forge

PACKAGE = Path(forge.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every `forge.*` module each module imports, anywhere in it (lazy and TYPE_CHECKING too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_layers_no_module_imports_one_that_imports_it_back() -> None:
    graph = _imports()
    # A package's __init__ may re-export its submodules; a submodule importing the
    # package's shared helpers is the normal direction.
    for name in graph:
        if "." in name and name.count(".") == 1 and (PACKAGE / name.split(".")[1] / "__init__.py").exists():
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    assert _cycle(graph) is None


def test_layers_shared_state_sits_below_the_protocol_modules() -> None:
    graph = _imports()
    assert "forge.app" not in graph["forge.state"]
    for protocol in ("forge.gitserve", "forge.lfs", "forge.registry", "forge.control", "forge.seed"):
        assert "forge.app" not in graph[protocol], protocol


def test_layers_only_permissions_orders_roles() -> None:
    roles = {"NO_ACCESS", "MINIMAL", "GUEST", "REPORTER", "DEVELOPER", "MAINTAINER", "OWNER"}
    ordering = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE / "permissions":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, ordering) for op in node.ops) and any(
                    isinstance(side, ast.Attribute) and side.attr in roles
                    for side in (node.left, *node.comparators)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_layers_permissions_are_pure() -> None:
    """The rules import only each other and a few standard modules: no Flask, SQL,
    dulwich, clock or I/O (`datetime` is there for the values callers pass in)."""
    allowed = {"__future__", "enum", "fnmatch", "re", "dataclasses", "datetime"}
    found = set()
    for path in (PACKAGE / "permissions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    assert {name for name in found if not name.startswith("forge.permissions.")} <= allowed


def test_layers_every_reason_code_is_in_the_readme() -> None:
    """A test reads the decision log's `reason`: each one the rules can give is documented."""
    import re
    codes = set()
    for path in (PACKAGE / "permissions").glob("*.py"):
        codes |= set(re.findall(r'_(?:allow|deny|api_deny)\(\s*"([a-z_]+)"', path.read_text()))
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## What the forge decides, and why\n", 1)[1].split("\n## ", 1)[0]
    assert sorted(code for code in codes if f"`{code}`" not in section) == []
