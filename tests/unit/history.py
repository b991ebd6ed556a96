"""Builds synthetic histories for checker and metrics tests."""

from __future__ import annotations

from typing import Any

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


class History:
    def __init__(self, warmup_ms: int = 0, duration_ms: int = 10_000, rate: float = 10.0) -> None:
        self.events: list[dict[str, Any]] = [
            {"ev": "load_start", "ns": T0, "src": "driver", "pid": 1, "mode": "open", "rate": rate,
             "concurrency": 1, "warmup_ns": warmup_ms * MS, "duration_ns": duration_ms * MS}
        ]

    def add(self, ev: str, at_ms: float, src: str = "driver", pid: int = 1, **fields: Any) -> None:
        self.events.append({"ev": ev, "ns": T0 + int(at_ms * MS), "src": src, "pid": pid, **fields})

    def submit(self, wf: str, at_ms: float, outcome: str = "ok", ack_ms: float = 1) -> None:
        self.add("invoke", at_ms, wf=wf, intended_ns=T0 + int(at_ms * MS))
        self.add("ack", at_ms + ack_ms, wf=wf, outcome=outcome)

    def step(self, wf: str, step: int, start_ms: float, end_ms: float | None, worker: int = 0, pid: int = 100) -> None:
        self.add("step_start", start_ms, src=f"worker:{worker}", pid=pid, wf=wf, step=step)
        if end_ms is not None:
            self.add("step_end", end_ms, src=f"worker:{worker}", pid=pid, wf=wf, step=step)

    def workflow(self, wf: str, at_ms: float, steps: int = 2, step_ms: float = 10, worker: int = 0) -> None:
        self.submit(wf, at_ms)
        t = at_ms + 2
        for s in range(steps):
            self.step(wf, s, t, t + step_ms, worker=worker)
            t += step_ms + 1

    def sorted(self) -> list[dict[str, Any]]:
        return sorted(self.events, key=lambda r: r["ns"])
