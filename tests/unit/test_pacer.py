from __future__ import annotations

import asyncio
import time
from pathlib import Path

from harness import ledger
from harness.errors import SubmitRejected
from harness.run.driver import Driver, LiveView, arrival_offsets
from harness.scenario import LoadSpec


def test_uniform_arrivals_are_evenly_spaced() -> None:
    offsets = arrival_offsets(LoadSpec(rate=10, warmup=1, duration=2), seed=1)
    assert len(offsets) == 30
    assert offsets[:3] == [0.0, 0.1, 0.2]


def test_poisson_arrivals_are_seeded_and_average_the_rate() -> None:
    load = LoadSpec(rate=200, arrival="poisson", warmup=0, duration=50)
    a, b = arrival_offsets(load, seed=7), arrival_offsets(load, seed=7)
    assert a == b
    assert abs(len(a) / 50 - 200) < 10
    assert a != arrival_offsets(load, seed=8)


class _Client:
    """Submits that hang for a while must not delay later arrivals (open loop)."""

    def __init__(self, slow_every: int) -> None:
        self.calls = 0
        self.slow_every = slow_every

    async def submit(self, workflow_id: str) -> None:
        self.calls += 1
        if self.calls == 13:
            raise SubmitRejected("full")
        if self.calls == 17:
            raise ConnectionError("reset")
        if self.calls % self.slow_every == 0:
            await asyncio.sleep(2.0)

    async def lookup(self, workflow_ids: list[str]) -> dict:
        return {}

    async def close(self) -> None:
        return None


def test_open_loop_records_intended_times_and_outcomes(tmp_path: Path) -> None:
    load = LoadSpec(rate=50, warmup=0.2, duration=0.8, submit_timeout=5)
    view = LiveView(1, ledger.Follower(tmp_path))
    drv = Driver("fake", _Client(slow_every=5), load, 1, ledger.Ledger(tmp_path, "driver"), view, "r1")
    asyncio.run(drv.run())
    events = ledger.read_dir(tmp_path)
    invokes = [e for e in events if e["ev"] == "invoke"]
    acks = {e["wf"]: e for e in events if e["ev"] == "ack"}
    assert len(invokes) == 50
    start = next(e for e in events if e["ev"] == "load_start")
    intended = [e["intended_ns"] - start["ns"] for e in invokes]
    assert intended == [i * 20_000_000 for i in range(50)]
    # a slow submit (every 5th takes 2 s) never pushes later sends back: a blocking pacer would be seconds late
    assert max(e["ns"] - e["intended_ns"] for e in invokes) < 1_000_000_000
    outcomes = [acks[e["wf"]]["outcome"] for e in invokes]
    assert outcomes.count("fail") == 1 and outcomes.count("unknown") == 1 and outcomes.count("ok") == 48
    assert (drv.counters.ok, drv.counters.failed, drv.counters.unknown) == (48, 1, 1)


class _CompletingClient:
    """Completes each workflow by writing its step_end into the ledger a little later."""

    def __init__(self, ledger_dir: Path) -> None:
        self.worker = ledger.Ledger(ledger_dir, "worker:0")
        self.in_flight = 0
        self.max_in_flight = 0

    async def submit(self, workflow_id: str) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        async def finish() -> None:
            await asyncio.sleep(0.02)
            self.worker.write("step_start", wf=workflow_id, step=0)
            self.worker.write("step_end", wf=workflow_id, step=0)
            self.in_flight -= 1

        asyncio.get_running_loop().create_task(finish())

    async def lookup(self, workflow_ids: list[str]) -> dict:
        return {}

    async def close(self) -> None:
        return None


def test_closed_loop_keeps_concurrency_in_flight(tmp_path: Path) -> None:
    load = LoadSpec(mode="closed", concurrency=3, warmup=0, duration=0.5)
    view = LiveView(1, ledger.Follower(tmp_path))
    client = _CompletingClient(tmp_path)
    drv = Driver("fake", client, load, 1, ledger.Ledger(tmp_path, "driver"), view, "r1")

    async def main() -> None:
        follow = asyncio.create_task(view.follow())
        await drv.run()
        follow.cancel()

    asyncio.run(main())
    assert client.max_in_flight == 3  # never more than the concurrency
    assert drv.counters.ok >= 6  # and each lane submits again once its workflow completed
    start = next(e for e in ledger.read_dir(tmp_path) if e["ev"] == "load_start")
    assert start["mode"] == "closed"


def test_drain_stops_when_nothing_moves(tmp_path: Path) -> None:
    """A lost workflow never completes: once no step moved for drain_quiet, the drain ends early."""
    view = LiveView(1, ledger.Follower(tmp_path))
    drv = Driver("fake", _CompletingClient(tmp_path), LoadSpec(), 1, ledger.Ledger(tmp_path, "driver"), view, "r1")
    drv.counters.acked_ids.append("never-completes")
    done = asyncio.run(drv.drain(timeout_s=30, on_tick=lambda: None, quiet_s=0.2))
    assert done is False
    end = next(e for e in ledger.read_dir(tmp_path) if e["ev"] == "drain_end")
    assert (end["complete"], end["reason"]) == (False, "quiet")


def test_drain_gives_quiet_s_after_the_load_even_when_nothing_moved_during_it(tmp_path: Path) -> None:
    """An engine that stood still under the load's faults gets drain_quiet from the drain's start to move
    again: the quiet clock does not start at its last step, long before the faults stopped."""
    view = LiveView(1, ledger.Follower(tmp_path))
    drv = Driver("fake", _CompletingClient(tmp_path), LoadSpec(), 1, ledger.Ledger(tmp_path, "driver"), view, "r1")
    drv.counters.acked_ids.append("never-completes")
    view.last_step_mono = time.monotonic() - 60  # the last step ended a minute before the drain
    start = time.monotonic()
    assert asyncio.run(drv.drain(timeout_s=30, on_tick=lambda: None, quiet_s=0.3)) is False
    assert time.monotonic() - start >= 0.3  # it waited the quiet spell after the drain began
    end = next(e for e in ledger.read_dir(tmp_path) if e["ev"] == "drain_end")
    assert end["reason"] == "quiet"


def test_drain_completes_when_everything_finished(tmp_path: Path) -> None:
    view = LiveView(1, ledger.Follower(tmp_path))
    drv = Driver("fake", _CompletingClient(tmp_path), LoadSpec(), 1, ledger.Ledger(tmp_path, "driver"), view, "r1")
    worker = ledger.Ledger(tmp_path, "worker:0")
    worker.write("step_start", wf="w", step=0)
    worker.write("step_end", wf="w", step=0)
    drv.counters.acked_ids.append("w")
    assert asyncio.run(drv.drain(timeout_s=30, on_tick=lambda: None, quiet_s=0.2)) is True
