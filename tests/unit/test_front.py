"""The front door's ASGI app (with fake engine clients in addition to the real-engine e2e tests), and
the open-loop plan Locust workers split between them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from harness import ledger
from harness.contract import EngineRecord
from harness.errors import SubmitRejected
from harness.run.driver import arrival_offsets
from harness.run.front import MAX_BODY_BYTES, FrontDoor
from harness.run.openloop import Plan
from harness.scenario import LoadSpec


class _Client:
    """Answers by workflow id: ``*-reject`` is refused, ``*-boom`` raises, ``*-hang`` never answers."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.closed = False

    async def submit(self, workflow_id: str) -> None:
        self.submitted.append(workflow_id)
        if workflow_id.endswith("reject"):
            raise SubmitRejected("queue full")
        if workflow_id.endswith("boom"):
            raise ConnectionError("connection reset by peer")
        if workflow_id.endswith("hang"):
            await asyncio.sleep(60)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        return {}

    async def close(self) -> None:
        self.closed = True


async def _call(app: FrontDoor, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path}, receive, send)
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(sent[1]["body"])


async def _lifespan(app: FrontDoor, kind: str) -> str:
    out: list[str] = []
    queue = [{"type": f"lifespan.{kind}"}]

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message["type"])

    if kind == "startup":  # the app loops until shutdown: run startup, then let it see shutdown
        await app({"type": "lifespan"}, receive, send)
        return out[0]
    await app({"type": "lifespan"}, receive, send)
    return out[-1]


def _app(tmp_path: Path, timeout_s: float = 5.0) -> tuple[FrontDoor, _Client]:
    client = _Client()

    async def open_client() -> _Client:
        return client

    return FrontDoor(open_client, ledger.Ledger(tmp_path, "front:0"), timeout_s), client


def _post(wf: Any = "wf-1", intended: Any = 1_700_000_000_000_000_000, **extra: Any) -> bytes:
    return json.dumps({"id": wf, "intended_ns": intended, **extra}).encode()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    [
        ("POST", "/workflows", b"not json", 400, "not JSON"),
        ("POST", "/workflows", b"[1, 2]", 400, "JSON object"),
        ("POST", "/workflows", _post(wf=""), 400, "id must be"),
        ("POST", "/workflows", _post(wf="a b"), 400, "id must be"),
        ("POST", "/workflows", _post(intended="soon"), 400, "intended_ns must be a positive integer"),
        ("POST", "/workflows", _post(intended=True), 400, "intended_ns must be a positive integer"),
        ("POST", "/workflows", _post(intended=-5), 400, "intended_ns must be a positive integer"),
        ("POST", "/workflows", _post(priority=3), 400, "unknown fields ['priority']"),
        ("POST", "/workflows", _post(sent_ns="x"), 400, "sent_ns"),
        ("POST", "/workflows", b"x" * (MAX_BODY_BYTES + 1), 413, "larger than"),
        ("GET", "/workflows", b"", 405, "use POST"),
        ("POST", "/other", _post(), 404, "no such path"),
    ],
)
def test_bad_requests_get_4xx_with_a_reason_and_reach_neither_engine_nor_history(
        tmp_path: Path, method: str, path: str, body: bytes, status: int, reason: str) -> None:
    app, client = _app(tmp_path)

    async def go() -> tuple[int, dict[str, Any]]:
        await _lifespan(app, "startup")
        return await _call(app, method, path, body)

    got, doc = asyncio.run(go())
    assert got == status and reason in doc["error"]
    assert client.submitted == []
    assert ledger.read_dir(tmp_path) == []


def test_outcomes_are_recorded_as_the_driver_records_them(tmp_path: Path) -> None:
    app, client = _app(tmp_path, timeout_s=0.2)

    async def go() -> list[tuple[int, dict[str, Any]]]:
        await _lifespan(app, "startup")
        out = [await _call(app, "POST", "/workflows", _post(wf=wf, intended=1000 + i, sent_ns=2000 + i))
               for i, wf in enumerate(["wf-ok", "wf-reject", "wf-boom", "wf-hang"])]
        out.append(await _call(app, "POST", "/workflows", _post(wf="wf-ok")))  # a second submit of one id
        out.append(await _call(app, "GET", "/health"))
        return out

    answers = asyncio.run(go())
    assert [status for status, _ in answers] == [200, 503, 502, 504, 409, 200]
    assert [doc.get("outcome") for _, doc in answers[:4]] == ["ok", "fail", "unknown", "unknown"]
    assert "connection reset" in answers[2][1]["error"]
    assert client.submitted == ["wf-ok", "wf-reject", "wf-boom", "wf-hang"]
    records = ledger.read_dir(tmp_path)
    invokes = [r for r in records if r["ev"] == "invoke"]
    acks = {r["wf"]: r for r in records if r["ev"] == "ack"}
    assert [(r["wf"], r["intended_ns"], r["client_sent_ns"]) for r in invokes] == [
        ("wf-ok", 1000, 2000), ("wf-reject", 1001, 2001), ("wf-boom", 1002, 2002), ("wf-hang", 1003, 2003)]
    assert {wf: r["outcome"] for wf, r in acks.items()} == {
        "wf-ok": "ok", "wf-reject": "fail", "wf-boom": "unknown", "wf-hang": "unknown"}
    assert all(r["src"] == "front:0" for r in records)
    assert all(acks[r["wf"]]["sent_ns"] == r["ns"] for r in invokes)  # the driver's ack fields


def test_lifespan_opens_and_closes_the_engine_client(tmp_path: Path) -> None:
    app, client = _app(tmp_path)
    assert asyncio.run(_lifespan(app, "startup")) == "lifespan.startup.complete"
    assert client.closed  # the fake receive() answers shutdown right after startup

    async def broken() -> _Client:
        raise ConnectionRefusedError("store down")

    failing = FrontDoor(broken, ledger.Ledger(tmp_path, "front:1"), 1.0)
    assert asyncio.run(_lifespan(failing, "startup")) == "lifespan.startup.failed"


@pytest.mark.parametrize(("workers", "arrival"), [(1, "uniform"), (3, "uniform"), (4, "poisson")])
def test_locust_workers_split_the_pacers_schedule_exactly(workers: int, arrival: str) -> None:
    load = LoadSpec(rate=37, arrival=arrival, warmup=1, duration=2)
    plan = Plan(load.model_dump(), 5, "memory-abcd1234", ["http://127.0.0.1:1", "http://127.0.0.1:2"], workers,
                "/tmp", 1.0, 10)
    shares = [plan.arrivals(k) for k in range(workers)]
    merged = sorted((wf, offset) for share in shares for wf, offset, _ in share)
    expected = [(f"memory-abcd1234-{i:07d}", off) for i, off in enumerate(arrival_offsets(load, 5), start=1)]
    assert merged == expected  # every arrival once, at the pacer's intended time, with the pacer's id
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    fronts = {front for share in shares for _, _, front in share}
    assert fronts == set(plan.fronts)
