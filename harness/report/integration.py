"""The integration-cost table: in report.md and in ``durabench engines --cost``."""

from __future__ import annotations

from typing import Any

from harness.report.tables import md_table

HEADER = ["engine", "workflow lines", "services (idle CPU %, RSS MB)", "defaults changed"]


def _services(block: dict[str, Any]) -> str:
    idle = block.get("services_idle", {})
    parts = []
    for name in block.get("services", []):
        s = idle.get(name)
        parts.append(f"{name} ({s['cpu_percent']:.1f}%, {s['rss_bytes'] / 2**20:.0f} MB)" if s else name)
    return ", ".join(parts) or "-"


def _defaults(block: dict[str, Any], values: bool) -> str:
    changed = block.get("changed_defaults", {})
    if not changed:
        return "0"
    if not values:
        return f"{len(changed)}: " + ", ".join(changed)
    return f"{len(changed)}: " + ", ".join(f"{k} {c['default']}->{c['value']}" for k, c in changed.items())


def rows(blocks: dict[str, dict[str, Any] | None], values: bool = True) -> list[list[str]]:
    """One row per engine from its ``integration`` block (summary.json); ``values``: show default->used."""
    out = [HEADER]
    for name, block in blocks.items():
        if block is None:
            continue
        lines = block.get("workflow_lines")
        out.append([name, "-" if lines is None else str(lines), _services(block), _defaults(block, values)])
    return out


def section(summary: dict[str, Any]) -> list[str]:
    """The report's "Integration cost" section (empty for a run recorded without it)."""
    table = rows({name: e.get("integration") for name, e in summary["engines"].items()})
    if len(table) == 1:
        return []
    return [
        "## Integration cost", "",
        "What adopting each engine takes: the lines of workflow code a user writes (non-blank, non-comment "
        "lines of the files each adapter declares, harness/integration.py), the servers a user must operate "
        "with their CPU and resident memory while idle (measured before the workers started), and the "
        "settings the adapter had to move away from the engine's defaults (default->used; sources in each "
        "adapter's README).", "",
        md_table(table), "",
    ]
