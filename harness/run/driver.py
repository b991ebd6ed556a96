"""The load driver (Jepsen's generator + client): paces submissions and watches progress.

Open loop (default): arrival ``i`` is scheduled at an intended time fixed in advance,
independent of completions; a slow submit never delays the next one (each is its own task),
and every latency is measured from the intended time, so a stalled engine cannot hide its
queueing delay (no coordinated omission). Closed loop keeps ``concurrency`` workflows in
flight and is labelled as such in results.

History records written here (``src: driver``): ``load_start``, ``invoke`` (intended and
actual send time), ``ack`` (outcome ``ok`` / ``fail`` / ``unknown``), ``signal_sent`` (one per
send of a ``wait_signal`` stage's signal, outcome ``ok`` / ``error``), ``load_end``, ``drain_end``.

Signals: the live view notices each workflow's first ``signal_wait`` of a stage; the driver sends
the signal a drawn ``delay`` later through the engine client's ``SignalClient.signal``, retrying
a failed send (each with a fresh payload) until one succeeds or the drain ends.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from harness import program
from harness.contract import EngineClient, SignalClient
from harness.errors import SubmitRejected
from harness.ledger import Follower, Ledger
from harness.scenario import LoadSpec

POLL_S = 0.02  # how often the live view reads new ledger records
PROGRESS_S = 1.0  # how often a progress line is printed
SIGNAL_RETRY_S = 0.5  # pause between sends of a signal whose send failed
STAGE_END_EVENTS = ("step_end", "timer_fired", "signal_received", "signal_timeout", "join")
PROGRESS_EVENTS = ("step_start", "step_end", "step_error", "timer_set", "timer_fired", "signal_wait",
                   "signal_received", "signal_timeout", "branch_start", "branch_end", "join")


@dataclass
class LiveView:
    """What the driver knows while the run is live, from the ledger files."""

    steps: int
    follower: Follower
    ended: dict[str, set[int]] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)  # wf -> ns of its completion in the ledger
    ready: dict[str, int] = field(default_factory=dict)  # worker id -> ns of latest ready
    urls: dict[str, str] = field(default_factory=dict)  # front door (front:N) -> its URL, from its ready record
    load_start: dict[str, Any] | None = None  # the load_start record of a load driven from another process
    on_load: Callable[[dict[str, Any]], None] | None = None  # invoke / ack records of front doors
    waiters: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    last_step_mono: float = field(default_factory=time.monotonic)  # when a stage record was last written
    waits: dict[tuple[str, int], int] = field(default_factory=dict)  # (wf, step) -> first signal_wait ns
    new_waits: list[tuple[str, int, int]] = field(default_factory=list)  # not yet taken by the driver

    def poll(self) -> None:
        for rec in self.follower.poll():
            ev = rec["ev"]
            if ev in PROGRESS_EVENTS:
                self.last_step_mono = time.monotonic()
            if ev == "signal_wait" and (rec["wf"], rec["step"]) not in self.waits:
                self.waits[(rec["wf"], rec["step"])] = rec["ns"]
                self.new_waits.append((rec["wf"], rec["step"], rec["ns"]))
            if ev in STAGE_END_EVENTS:  # a stage ended (docs/engines.md "Ledger records of programs")
                done = self.ended.setdefault(rec["wf"], set())
                done.add(rec["step"])
                if len(done) == self.steps and rec["wf"] not in self.completed:
                    self.completed[rec["wf"]] = rec["ns"]
                    fut = self.waiters.pop(rec["wf"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif ev == "ready":
                self.ready[rec["src"]] = rec["ns"]
                if "url" in rec:
                    self.urls[rec["src"]] = rec["url"]
            elif ev in ("invoke", "ack") and rec["src"].startswith("front:") and self.on_load is not None:
                self.on_load(rec)
            elif ev == "load_start" and rec["src"] == "locust":
                self.load_start = rec

    async def follow(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(POLL_S)

    def wait_completed(self, wf: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if wf in self.completed:
            fut.set_result(None)
        else:
            self.waiters[wf] = fut
        return fut


@dataclass
class Counters:
    invoked: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight_submits: int = 0
    acked_ids: list[str] = field(default_factory=list)


def arrival_offsets(load: LoadSpec, seed: int) -> list[float]:
    """Intended arrival times (s from load start) of an open-loop run, warmup included."""
    total = load.warmup + load.duration
    if load.arrival == "uniform":
        n = int(total * load.rate)
        return [i / load.rate for i in range(n)]
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(load.rate)
        if t >= total:
            return out
        out.append(t)


class Driver:
    def __init__(self, engine_name: str, client: EngineClient, load: LoadSpec, seed: int, ledger: Ledger,
                 view: LiveView, run_id: str, stages: dict[int, dict[str, Any]] | None = None) -> None:
        self.engine_name = engine_name
        self.client = client
        self.load = load
        self.seed = seed
        self.ledger = ledger
        self.view = view
        self.counters = Counters()
        self.prefix = f"{engine_name}-{run_id}"
        self._seq = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self.t0_mono = 0.0
        self.t0_ns = 0
        self.started = asyncio.Event()  # set once the load's time origin is fixed
        self.stages = stages or {}
        self._signal_tasks: set[asyncio.Future[Any]] = set()
        self.signals_stopped = asyncio.Event()

    def submitted_ids(self) -> list[str]:
        """Every workflow id this driver has invoked, in order."""
        return [f"{self.prefix}-{i:07d}" for i in range(1, self._seq + 1)]

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.prefix}-{self._seq:07d}"

    async def _submit(self, wf: str, intended_ns: int) -> str:
        c = self.counters
        c.invoked += 1
        c.in_flight_submits += 1
        sent_ns = self.ledger.write("invoke", wf=wf, intended_ns=intended_ns)
        outcome, error = "ok", None
        try:
            await asyncio.wait_for(self.client.submit(wf), self.load.submit_timeout)
        except SubmitRejected as exc:
            outcome, error = "fail", str(exc)
        except Exception as exc:
            outcome, error = "unknown", f"{type(exc).__name__}: {exc}"
        self.ledger.write("ack", wf=wf, outcome=outcome, sent_ns=sent_ns, error=error)
        c.in_flight_submits -= 1
        if outcome == "ok":
            c.ok += 1
            c.acked_ids.append(wf)
        elif outcome == "fail":
            c.failed += 1
        else:
            c.unknown += 1
        return outcome

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def signals(self) -> None:
        """Send each wait_signal stage's signal ``delay`` after the workflow started waiting (runs
        through the load and the drain; ends when ``signals_stopped`` is set)."""
        if not any(s["kind"] == "wait_signal" for s in self.stages.values()):
            return
        if not isinstance(self.client, SignalClient):
            raise TypeError(f"{self.engine_name}: its client cannot send signals (no SignalClient.signal)")
        sender: SignalClient = self.client
        while not self.signals_stopped.is_set():
            while self.view.new_waits:
                wf, step, wait_ns = self.view.new_waits.pop(0)
                delay_s = program.step_draw_s(self.stages[step]["delay"], self.seed, wf, step)  # as workers draw
                task = asyncio.ensure_future(self._send_signal(sender, wf, step, wait_ns + int(delay_s * 1e9)))
                self._signal_tasks.add(task)
                task.add_done_callback(self._signal_tasks.discard)
            await asyncio.sleep(POLL_S)
        for pending in list(self._signal_tasks):
            pending.cancel()
        await asyncio.gather(*self._signal_tasks, return_exceptions=True)

    async def _send_signal(self, sender: SignalClient, wf: str, step: int, at_ns: int) -> None:
        await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / 1e9))
        name = self.stages[step]["signal"]
        for n in range(1, 1_000_000):
            payload = f"{wf}#{step}#{n}"
            sent_ns = time.time_ns()
            try:
                await asyncio.wait_for(sender.signal(wf, name, payload), self.load.submit_timeout)
            except Exception as exc:
                self.ledger.write("signal_sent", wf=wf, step=step, signal=name, payload=payload, outcome="error",
                                  sent_ns=sent_ns, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(SIGNAL_RETRY_S)
                continue
            self.ledger.write("signal_sent", wf=wf, step=step, signal=name, payload=payload, outcome="ok",
                              sent_ns=sent_ns)
            return

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0_mono

    async def run(self) -> None:
        """Drive the whole load (warmup + measured duration)."""
        self.t0_mono = time.monotonic()
        self.t0_ns = self.ledger.write(
            "load_start", mode=self.load.mode, rate=self.load.rate, concurrency=self.load.concurrency,
            warmup_ns=int(self.load.warmup * 1e9), duration_ns=int(self.load.duration * 1e9),
        )
        self.started.set()
        if self.load.mode == "open":
            await self._open_loop()
        else:
            await self._closed_loop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.ledger.write("load_end")

    async def _open_loop(self) -> None:
        for offset in arrival_offsets(self.load, self.seed):
            delay = self.t0_mono + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._spawn(self._submit(self._next_id(), self.t0_ns + int(offset * 1e9)))

    async def _closed_loop(self) -> None:
        end = self.t0_mono + self.load.warmup + self.load.duration

        async def lane() -> None:
            while time.monotonic() < end:
                wf = self._next_id()
                if await self._submit(wf, time.time_ns()) != "ok":
                    continue
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(self.view.wait_completed(wf), remaining)
                except TimeoutError:
                    return

        await asyncio.gather(*(lane() for _ in range(self.load.concurrency)))

    async def drain(self, timeout_s: float, on_tick: Callable[[], None], quiet_s: float | None = None) -> bool:
        """Wait until every acknowledged workflow completed in the ledger; False on timeout.

        With ``quiet_s``, also stop once no step anywhere has started or ended for that long while
        workflows are still incomplete: nothing is moving, so waiting longer only delays the report
        (a lost workflow never completes). The quiet clock starts no earlier than the drain's start:
        the faults stop at the load's end, so an engine that stood still under them (reconnecting, in
        a backoff) gets ``quiet_s`` after them to move again. ``quiet_s`` must exceed the engines' own
        redelivery and retry timeouts (docs/scenarios.md)."""
        start = time.monotonic()
        deadline = start + timeout_s
        reason = "timeout"
        while time.monotonic() < deadline:
            self.view.poll()
            if all(wf in self.view.completed for wf in self.counters.acked_ids):
                self.ledger.write("drain_end", complete=True)
                return True
            if quiet_s is not None and time.monotonic() - max(self.view.last_step_mono, start) > quiet_s:
                reason = "quiet"
                break
            on_tick()
            await asyncio.sleep(POLL_S)
        self.ledger.write("drain_end", complete=False, reason=reason)
        return False

    def progress_line(self, phase: str) -> str:
        c = self.counters
        done = sum(1 for wf in c.acked_ids if wf in self.view.completed)
        return (f"[{self.engine_name}] {phase:<7} t={self.elapsed_s():5.1f}s submitted={c.invoked} "
                f"acked={c.ok} completed={done} pending={c.ok - done} unknown={c.unknown} failed={c.failed}")


class Progress:
    """Prints a progress line at most every PROGRESS_S seconds (to stderr)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._last = 0.0

    def tick(self, line: Callable[[], str], force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= PROGRESS_S):
            self._last = now
            print(line(), file=sys.stderr, flush=True)
