"""Integration cost: counting workflow code, the declarations of every adapter, the table."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from harness import integration, registry
from harness.analysis.integration import summarize
from harness.contract import Workload
from harness.report.integration import rows, section

PY = '''"""Module docstring: not code."""

import os  # a comment after code counts as code


# a comment line
def step(x):
    """Docstring."""
    return x + 1


@decorator
def workflow(
    a,
    b,
):
    return step(a)


class Other:
    pass
'''

GO = """package main

// a comment
func Workflow(ctx Context) error {
	// inside
	return nil
}

func (a *steps) Step(i int) int { return i }

func other() {
	x := 1
}
"""


def test_python_lines_skip_blanks_comments_and_docstrings() -> None:
    assert integration.count_python(PY) == 11
    assert integration.count_python(PY, ["step"]) == 2
    assert integration.count_python(PY, ["workflow"]) == 6  # the decorator and the wrapped signature count
    assert integration.count_python(PY, ["step", "Other"]) == 4
    with pytest.raises(ValueError, match="nosuch"):
        integration.count_python(PY, ["nosuch"])


def test_go_lines_by_func_and_method_name() -> None:
    assert integration.count_go(GO) == 8
    assert integration.count_go(GO, ["Workflow"]) == 3
    assert integration.count_go(GO, ["Step"]) == 1  # a one-line method
    assert integration.count_go(GO, ["Workflow", "other"]) == 6
    with pytest.raises(ValueError, match="Missing"):
        integration.count_go(GO, ["Missing"])


@pytest.mark.parametrize("name", registry.names())
def test_every_adapter_declares_countable_code_and_known_settings(name: str) -> None:
    engine = registry.load(name)
    settings = engine.default_settings(Workload(3, 0.1, 128), 2)
    block = integration.describe(engine, settings)  # raises on a file, definition or setting that does not exist
    assert block["services"] == list(engine.services)
    if name != "memory":
        assert block["workflow_lines"] and all(n > 0 for n in block["workflow_code"].values())
    for key, change in block["changed_defaults"].items():
        assert change["value"] == settings[key] != change["default"]


def test_unchanged_defaults_are_not_reported() -> None:
    class Fake:
        services = ("postgres",)
        changed_defaults: ClassVar[dict[str, Any]] = {"poll_s": 1.0, "lease_s": 30}

    changed = integration.changed_defaults(Fake(), {"poll_s": 1.0, "lease_s": 5})
    assert changed == {"lease_s": {"default": 30, "value": 5}}
    with pytest.raises(ValueError, match="unknown settings"):
        integration.changed_defaults(Fake(), {"poll_s": 1.0})


def test_summary_block_and_report_table() -> None:
    info = {"integration": {
        "workflow_code": {"engines/x/wf.py": 12}, "workflow_lines": 12, "services": ["postgres", "restate"],
        "changed_defaults": {"lease_s": {"default": 30, "value": 5}},
        "services_idle": {"postgres": {"cpu_percent": 0.5, "rss_bytes": 100 * 2**20, "pss_bytes": 1, "procs": 7,
                                       "window_s": 2.0},
                          "restate": {"cpu_percent": 2.5, "rss_bytes": 200 * 2**20, "pss_bytes": 1, "procs": 1,
                                      "window_s": 2.0}}}}
    block = summarize(info)
    assert block is not None
    assert block["services_idle_cpu_percent"] == 3.0 and block["services_idle_rss_bytes"] == 300 * 2**20
    assert block["changed_defaults_count"] == 1
    assert summarize({}) is None
    table = rows({"x": block, "old-run": None})
    assert table[1] == ["x", "12", "postgres (0.5%, 100 MB), restate (2.5%, 200 MB)", "1: lease_s 30->5"]
    assert len(table) == 2
    assert rows({"x": block}, values=False)[1][3] == "1: lease_s"
    text = "\n".join(section({"engines": {"x": {"integration": block}}}))
    assert "## Integration cost" in text and "| x | 12 |" in text
    assert section({"engines": {"x": {"integration": None}}}) == []
