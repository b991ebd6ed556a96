"""Servers durabench did not start: their version and durability settings are read from the servers
themselves (a Valkey and a Temporal dev server that the test starts separately stand in for the user's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ServiceError
from harness.run import services

pytestmark = pytest.mark.real


def test_redis_and_temporal_settings_are_read_from_the_servers(tmp_path: Path) -> None:
    with services.running(["redis", "temporal"], tmp_path, "relaxed") as theirs:
        redis = services.external("redis", theirs.endpoints["redis"])
        assert redis.settings["appendfsync"] == "everysec" and redis.settings["appendonly"] == "yes"
        assert redis.version.split()[0] in ("valkey", "redis") and redis.version.split()[1][0].isdigit()
        temporal = services.external("temporal", theirs.endpoints["temporal"])
        assert temporal.version.startswith("Temporal server 1.")
        for svc in (redis, temporal):
            assert svc.external and svc.proc is None and svc.describe()["profile"] == "external"
            svc.start()  # nothing to start: it is theirs
            with pytest.raises(ServiceError, match="external server"):
                svc.restart()
            svc.stop()
        own = theirs.services["redis"].proc
        assert own is not None and own.poll() is None  # their server still runs


def test_an_unreachable_external_server_is_one_clear_error() -> None:
    with pytest.raises(ServiceError, match=r"external postgres at postgresql://bench:\*\*\*@127.0.0.1:1/x did not"):
        services.external("postgres", "postgresql://bench:secret@127.0.0.1:1/x")


def test_redact_hides_passwords_only() -> None:
    assert services.redact("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert services.redact("postgresql://u@h:5/d") == "postgresql://u@h:5/d"
    assert services.redact("127.0.0.1:7233") == "127.0.0.1:7233"
