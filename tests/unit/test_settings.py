"""Engine setting names (harness.contract.setting_keys): every adapter declares the names it reads, and
a name it does not have is refused before a run, listing the valid ones."""

from __future__ import annotations

import pytest

from harness import registry
from harness.contract import Workload, setting_keys
from harness.errors import UserError

WORKLOAD = Workload(3, 0.05, 256)


@pytest.mark.parametrize("name", registry.names())
def test_every_adapter_accepts_its_own_settings_and_refuses_a_typo(name: str) -> None:
    engine = registry.load(name)
    keys = setting_keys(engine, WORKLOAD, 2)
    assert keys and len(keys) == len(set(keys))
    registry.check_settings(engine, {k: None for k in keys}, WORKLOAD, 2, f"engine_settings.{name}")
    typo = keys[0] + "x"
    with pytest.raises(UserError) as info:
        registry.check_settings(engine, {typo: 1}, WORKLOAD, 2, f"engine_settings.{name}")
    text = str(info.value)
    assert f"engine_settings.{name}.{typo}: engine {name!r} has no setting {typo!r}" in text
    assert all(k in text for k in keys) and "\n" not in text


def test_optional_settings_are_valid_names_too() -> None:
    engine = registry.load("memory")

    class WithOptional(type(engine)):  # type: ignore[misc]  # a subclass of the adapter under test
        optional_settings = ("trace_file",)

    assert setting_keys(WithOptional(), WORKLOAD, 2) == ["durable", "trace_file"]
    registry.check_settings(WithOptional(), {"trace_file": "x"}, WORKLOAD, 2, "engine_settings.memory")


def test_activity_heartbeats_are_a_setting_of_temporal_only() -> None:
    """Local activities never heartbeat to the server: temporal-local refuses the setting instead of ignoring it."""
    workload = Workload(1, 60.0, 16)
    registry.check_settings(registry.load("temporal"), {"activity_heartbeat_timeout_s": 5}, workload, 2, "t")
    with pytest.raises(UserError, match="has no setting 'activity_heartbeat_timeout_s'"):
        registry.check_settings(registry.load("temporal-local"), {"activity_heartbeat_timeout_s": 5}, workload, 2, "t")
