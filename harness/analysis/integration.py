"""Integration cost in summary.json: what a user writes, operates and tunes, per engine.

From the manifest only (the runner recorded harness/integration.py's description and the servers'
idle cost measured by harness/run/idle.py); pure, rebuilt by ``durabench analyze``.
"""

from __future__ import annotations

from typing import Any


def summarize(info: dict[str, Any]) -> dict[str, Any] | None:
    """The ``integration`` block of one engine's summary, or None for a run recorded without it."""
    raw = info.get("integration")
    if raw is None:
        return None
    idle = raw.get("services_idle", {})
    return {
        "workflow_lines": raw.get("workflow_lines"),
        "workflow_code": raw.get("workflow_code", {}),
        "services": raw.get("services", []),
        "services_idle": idle,
        "services_idle_cpu_percent": round(sum(s["cpu_percent"] for s in idle.values()), 2) if idle else None,
        "services_idle_rss_bytes": sum(s["rss_bytes"] for s in idle.values()) if idle else None,
        "changed_defaults": raw.get("changed_defaults", {}),
        "changed_defaults_count": len(raw.get("changed_defaults", {})),
    }
