"""The package layout shows the data's flow: base < run < analysis < report < cli.

Every import (module level or inside a function) points to a module of the same or an earlier
stage, and no import cycle exists between modules. The engine-facing modules keep their paths,
because third-party engine plugins import them (docs/engines.md)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "harness"
RANK = {"run": 1, "analysis": 2, "report": 3, "cli": 4}  # everything directly under harness/ is the base (0)
ENGINE_API = ("harness.contract", "harness.workload", "harness.ledger", "harness.errors", "harness.supervisor",
              "harness.procs", "harness.gobuild")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], 0) if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else 0


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The harness modules ``module`` imports anywhere in its body (TYPE_CHECKING blocks included)."""
    tree = ast.parse(MODULES[module].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("harness"):
                target = _resolve(name)
                if target and target != module and not module.startswith(target + "."):
                    out.add(target)
    return out


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_flow(module: str) -> None:
    upward = sorted(t for t in GRAPH[module] if _rank(t) > _rank(module))
    assert not upward, f"{module} (stage {_rank(module)}) imports later stages: {upward}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t):], t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_cycle_detector_finds_a_cycle() -> None:
    saved = dict(GRAPH)
    try:
        GRAPH["harness.contract"] = GRAPH["harness.contract"] | {"harness.errors"}
        GRAPH["harness.errors"] = GRAPH["harness.errors"] | {"harness.contract"}
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


@pytest.mark.parametrize("module", ENGINE_API)
def test_engine_api_keeps_its_path(module: str) -> None:
    assert importlib.import_module(module)
    assert _rank(module) == 0
