"""Engines shipped as their own distributions (plugins/): registered from outside, through the API only."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from harness import registry

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
# what docs/engines.md allows an adapter to import from the harness
ALLOWED = {"harness.contract", "harness.workload", "harness.ledger", "harness.errors", "harness.supervisor"}
PLUGIN_ENGINES = {"durabench-absurd": "absurd"}


def harness_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "harness" or n.startswith("harness.")}


@pytest.mark.parametrize("dist", sorted(PLUGIN_ENGINES))
def test_plugin_imports_only_the_engine_api(dist: str) -> None:
    sources = sorted((PLUGINS / dist).rglob("*.py"))
    assert sources
    for path in sources:
        assert harness_imports(path) <= ALLOWED, path


@pytest.mark.parametrize(("dist", "name"), sorted(PLUGIN_ENGINES.items()))
def test_plugin_registers_from_its_own_distribution(dist: str, name: str) -> None:
    (ep,) = [ep for ep in entry_points(group=registry.GROUP) if ep.name == name]
    assert ep.dist is not None and ep.dist.name == dist  # not from durabench's own pyproject
    assert name in registry.names()
    assert registry.load(name).name == name


def test_the_import_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.run import services\nimport harness.contract\n")
    assert harness_imports(bad) - ALLOWED == {"harness.run"}
