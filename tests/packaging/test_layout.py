"""The layout shows the architecture (docs/architecture.md): no import cycle, clients that plan nothing, and no file
too long to hold one concern unless its docstring says why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"
EMULATOR = REPO / "emulator" / "src" / "iot_emulator"
PREFIX = "ansible_collections.fleet.azure_iot.plugins.module_utils."
MAX_LINES = 500
CLIENTS = ("_client", "_iothub", "_central", "_http", "_auth")
PLANNING = ("_plan", "_models", "_twin", "_topology", "_resource", "_diff", "_bulk", "_manifest", "_output")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imports(path: Path, root: Path, package: str) -> set:
    """Every module of the same package PATH imports, at any depth (a lazy import inside a function counts)."""
    out = set()
    here = module_name(path, root).split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative (the emulator)
                base = here[:len(here) - node.level]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
                out.update(n for n in names if n)
            elif node.module and node.module.startswith(package):
                out.add(node.module[len(package):])
    return out


def graph(root: Path, package: str) -> dict:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: {i for i in imports(p, root, package) if i in files and i != name} for name, p in files.items()}


def find_cycle(g: dict):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = "done"
        stack.pop()
        return None
    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


@pytest.mark.parametrize("root,package", [(MODULE_UTILS, PREFIX), (EMULATOR, "")], ids=["module_utils", "emulator"])
def test_no_import_cycle(root, package):
    g = graph(root, package)
    assert len(g) > 5 and find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_clients_import_no_planning():
    g = graph(MODULE_UTILS, PREFIX)
    for client in CLIENTS:
        planning = {m for m in g[client] if m.split(".")[0] in PLANNING}
        assert not planning, f"{client} imports {sorted(planning)}"


@pytest.mark.parametrize("root", [MODULE_UTILS, EMULATOR], ids=["module_utils", "emulator"])
def test_no_file_over_the_limit_without_a_reason(root):
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert "on purpose" in doc, f"{path.relative_to(REPO)}: {text.count(chr(10))} lines and no reason given"
