"""The code's shape, checked: no import cycles between our modules, no module past the size anyone can read,
and the runtime client never imports the emulator (issue 15, "a destination split along the row's intent").

Imports are read from the source (ast), so the check sees what a reader sees; imports under `if TYPE_CHECKING:`
are left out (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bento_api", "bento_destination", "bento_source", "pipelines")
#: lines a module may have; past it, split the module along what its parts do
MAX_MODULE_LINES = 420


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs: module level, inside functions and classes; not under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> our modules it imports (a `from package import name` counts the submodule when one is named so)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = _resolve(module, path, node)
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            targets.update(name for name in names if name in modules and name != module)
        graph[module] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        trail.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*trail[trail.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        trail.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_between_our_modules() -> None:
    """Imports inside functions count too: moving an import into a function hides a cycle, it does not end it."""
    cycle = _cycle(_imports(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_runtime_client_never_imports_the_emulator() -> None:
    modules = _modules()
    graph = _imports(modules)
    runtime = [m for m in modules if m.startswith(("bento_api", "bento_destination", "bento_source"))
               and not m.startswith("bento_api.emulator")]
    reached: dict[str, str] = {}
    for start in runtime:
        stack, seen = [start], {start}
        while stack:
            module = stack.pop()
            for target in graph.get(module, ()):
                if target.startswith("bento_api.emulator"):
                    reached[start] = target
                if target not in seen and not target.startswith("pipelines"):
                    seen.add(target)
                    stack.append(target)
    assert not reached, f"runtime modules reaching the emulator: {reached}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_past_the_size_anyone_can_read(package: str) -> None:
    long = {
        name: lines for name, path in _modules().items() if name.split(".")[0] == package
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
