"""Idle cost of the servers a user must operate: CPU and memory with no load and no workers.

Measured over a window after the servers started (at least ``SETTLE_S`` after) and the adapter
prepared its store, before any worker, with the same process-tree accounting as the run's resource sampler
(harness/run/resources.py). Part of the integration cost (harness/integration.py).
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.run import resources

SETTLE_S = 5.0  # a server's start-up work is over by then (measured: Restate 10% CPU in its first 3 s, 2.6% after 5 s)


def _root(svc: Any) -> list[int]:
    return [svc.proc.pid] if svc.proc is not None else []


def measure(services: Any, window_s: float, settle_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """``{service: {"cpu_percent", "rss_bytes", "pss_bytes", "procs", "window_s"}}`` over ``window_s``,
    after ``settle_s`` (a server just started is still finishing its start-up work)."""
    if window_s <= 0 or not services.services:
        return {}
    with tempfile.TemporaryDirectory(prefix="durabench-idle-") as scratch:
        sampler = resources.Sampler(Path(scratch), pss=True)  # never started: sample() writes no file
        for name, svc in services.services.items():
            sampler.add(name, functools.partial(_root, svc))
        time.sleep(settle_s)
        first = sampler.sample()
        t0 = time.monotonic()
        time.sleep(window_s)  # the measurement window itself
        last = sampler.sample()
        elapsed = time.monotonic() - t0
    return {
        name: {
            "cpu_percent": round(100.0 * (last[name]["cpu_s"] - first[name]["cpu_s"]) / elapsed, 2),
            "rss_bytes": last[name]["rss_bytes"],
            "pss_bytes": first[name]["pss_bytes"],  # read on the first sample only (resources.PSS_EVERY)
            "procs": last[name]["procs"],
            "window_s": round(elapsed, 3),
        }
        for name in services.services
    }
