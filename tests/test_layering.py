"""The package's layering: no import cycles, and importing the library leaves the user's matplotlib alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module ``path`` imports, at the top or inside functions (``if TYPE_CHECKING`` left out)."""
    tree = ast.parse(path.read_text())
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != this}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_it_is_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 50 and "resnet.engine.trainer" in graph["resnet.commands"] | {
        m for deps in graph.values() for m in deps}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.slow
def test_importing_the_library_and_the_engine_leaves_the_matplotlib_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import resnet, resnet.engine.trainer, resnet.experiments.suite; "
            "resnet.create_model('resnet20'); print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "svg"


# docs/design.md's layers, bottom up: a package imports its own layer and the ones below, never one above (lazy
# imports inside functions included). A new package must be placed here.
LAYERS: dict[str, int] = {
    "resnet.errors": 0, "resnet.config": 0, "resnet.printable": 0, "resnet.fsutil": 0, "resnet.paper": 0,
    "resnet.recipes": 0, "resnet.limits": 0,
    "resnet.cliargs": 1, "resnet.data": 1, "resnet.models": 1, "resnet.analysis": 1,
    "resnet.engine": 2,
    "resnet.classify": 3, "resnet.detection": 3, "resnet.transfer": 3, "resnet.experiments": 3, "resnet.bench": 3,
    "resnet.inference": 3, "resnet.export": 3, "resnet.launch": 3,
    "resnet.commands": 4, "resnet.cli": 4, "resnet.__main__": 4, "resnet": 4,
}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer's package into a higher one's, as ``a -> b (layer i -> j)``."""
    out = []
    for module, deps in sorted(graph.items()):
        mine = LAYERS[_package(module)]
        for dep in sorted(deps):
            theirs = LAYERS[_package(dep)]
            if theirs > mine:
                out.append(f"{module} -> {dep} (layer {mine} -> {theirs})")
    return out


def test_the_layer_check_finds_an_import_that_reaches_up():
    assert layer_violations({"resnet.config": {"resnet.models.registry"}, "resnet.models.registry": set()}) == [
        "resnet.config -> resnet.models.registry (layer 0 -> 1)"]


def test_every_package_sits_in_a_layer_and_imports_none_above_it():
    graph = import_graph()
    unplaced = sorted({_package(m) for m in graph} - set(LAYERS))
    assert not unplaced, f"place these packages in LAYERS (and docs/design.md): {unplaced}"
    assert layer_violations(graph) == []
