"""The end-of-run lookup asks again while the engine's client raises, then fails the engine run with
one line (a ServiceError the runner reports), never a traceback that ends the whole run."""

from __future__ import annotations

import asyncio

import pytest

from harness.contract import EngineRecord
from harness.errors import ServiceError
from harness.run import runner


class FlakyClient:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def lookup(self, ids: list[str]) -> dict[str, EngineRecord]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("shard status unknown")  # any class: a client library's own error
        return {wf: EngineRecord("completed", 1) for wf in ids}


def test_lookup_is_asked_again_until_it_answers() -> None:
    client = FlakyClient(failures=2)
    records = asyncio.run(runner._lookup(client, ["a", "b"], {"a", "b"}))
    assert client.calls == 3
    assert {wf: r.status for wf, r in records.items()} == {"a": "completed", "b": "completed"}


def test_lookup_that_keeps_failing_fails_the_engine_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "LOOKUP_RETRY_S", 0.5)
    client = FlakyClient(failures=10**6)
    with pytest.raises(ServiceError, match=r"lookup of 2 workflows still failed after 0.5s: "
                                           r"ConnectionError: shard status unknown"):
        asyncio.run(runner._lookup(client, ["a", "b"], set()))
    assert client.calls >= 2
