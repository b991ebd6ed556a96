"""Engine discovery through the entry-point group ``durabench.engines``."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from harness.contract import Engine, Workload, setting_keys
from harness.errors import UserError

GROUP = "durabench.engines"


def names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load(name: str) -> Engine:
    """An instance of the adapter registered as ``name``."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls: Any = ep.load()
            engine: Engine = cls()
            return engine
    raise UserError(f"unknown engine {name!r} (installed: {', '.join(names())}; see `durabench engines`)")


def check_names(requested: list[str]) -> None:
    known = names()
    for name in requested:
        if name not in known:
            raise UserError(f"unknown engine {name!r} (installed: {', '.join(known)})")


def check_settings(engine: Engine, given: dict[str, Any], workload: Workload, workers: int, where: str) -> None:
    """Refuse a setting name the adapter does not read (a typo would otherwise be silently ignored and
    the results would record a configuration that never applied)."""
    known = setting_keys(engine, workload, workers)
    for key in given:
        if key not in known:
            raise UserError(f"{where}.{key}: engine {engine.name!r} has no setting {key!r}; its settings are: "
                            f"{', '.join(known)} (each explained in the adapter's README)")
