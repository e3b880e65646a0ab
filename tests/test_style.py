"""Linters and the type checker, so the README's one test command checks everything."""

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.parametrize("cmd", [
    ["ruff", "check", "src", "tests", "bench"],
    ["mypy"],
    ["snakefmt", "--check", "Snakefile", "workflow"],
], ids=["ruff", "mypy", "snakefmt"])
def test_tool_is_clean(cmd):
    res = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def _imports_of_package(root):
    """{module: modules of the package it imports}, module-level and function-level imports alike."""
    import ast

    pkg = root.name
    graph = {}
    for path in root.rglob("*.py"):
        name = ".".join((pkg, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(pkg) and not node.level:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith(pkg))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_the_package_has_no_import_cycle():
    graph = _imports_of_package(ROOT / "src" / "phase_energy")
    assert len(graph) > 30 and graph["phase_energy.measure.job"]  # the walk found the package's imports
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path[path.index(d):], d])
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
