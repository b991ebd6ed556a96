"""Builds small synthetic run directories for tests of the run loader, charts, report and compare.

Raw files only (manifest, history, reconcile); summary, histograms and checker ids come from
``harness.analysis.summary.analyze``, as after a real run. Per engine: open loop at 10 workflows/s for
1 s warmup + 6 s, 3 steps of 10 ms on workers 0 and 1, ``worker:0`` killed at 3 s and back at
4 s: one workflow in flight on it re-runs its step on worker 1 (a duplicated step), ``lost``
more never finish (lost workflows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import results
from harness.analysis import summary
from tests.unit.history import History

STEPS = 3


def history(lost: int = 1, slow_ms: float = 0.0) -> History:
    h = History(warmup_ms=1000, duration_ms=6000, rate=10.0)
    for i in range(70):
        at = i * 100.0
        wf = f"wf-{i:03d}"
        worker = i % 2
        if 2800 <= at < 2900 and worker == 0:  # in flight on worker:0 at the kill: re-runs on worker:1
            h.submit(wf, at)
            h.step(wf, 0, at + 2, None, worker=0, pid=100)
            h.step(wf, 0, 4100, 4110, worker=1, pid=101)
            h.step(wf, 1, 4111, 4121, worker=1, pid=101)
            h.step(wf, 2, 4122, 4132, worker=1, pid=101)
            continue
        if 2000 <= at < 2800 and worker == 0 and lost > 0:  # in flight at the kill, never resumed
            lost -= 1
            h.submit(wf, at)
            h.step(wf, 0, 2990, None, worker=0, pid=100)
            continue
        t = at + 2 + (i * 7) % 13 + slow_ms * (i % 5) / 4
        h.submit(wf, at)
        for s in range(STEPS):
            h.step(wf, s, t, t + 10, worker=1 if 3000 <= at < 4000 else worker, pid=101 if worker else 100)
            t += 11
    h.add("fault_start", 3000, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0",
          workers=["worker:0"], pids=[100])
    h.add("fault_end", 4000, src="nemesis", fault_id="f0", kind="kill-worker", target="worker:0", healed_by="restart")
    h.add("worker_exit", 3000, src="supervisor", worker="worker:0", worker_pid=100, code=-9)
    h.add("load_end", 7000)
    return h


def manifest(run_id: str, engines: list[str], durability: str = "strict", rate: float = 10.0,
             created_at: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": run_id,
        "created_at": created_at,
        "scenario": {
            "name": "synthetic", "description": "a synthetic run for tests", "engines": engines,
            "durability": durability, "seed": 1,
            "workload": {"steps": STEPS, "step_duration": 0.01, "payload_bytes": 16},
            "load": {"mode": "open", "rate": rate, "arrival": "uniform", "concurrency": 10, "warmup": 1.0,
                     "duration": 6.0, "drain_timeout": 5.0, "submit_timeout": 5.0},
            "workers": {"count": 2, "restart_delay": 1.0, "ready_timeout": 10.0},
            "faults": [{"kind": "kill-worker", "target": "worker:0", "at": 3.0}],
            "engine_settings": {}, "overrides": {},
        },
        "durability": durability, "seed": 1, "short_id": "0badcafe",
        "harness": {"version": "0.0.0", "git_revision": "0123456789abcdef", "python": "3.11"},
        "machine": {"hostname": "test", "platform": "Linux", "python": "3.11", "cpus": 2,
                    "memory_bytes": 8 * 2**30, "cpu_model": "Test CPU"},
        "engines": {name: {"description": f"synthetic engine {name}", "versions": {name: "1.0"}, "settings": {},
                           "services": {"postgres": {"url": "", "version": "postgres (PostgreSQL) 18.6",
                                                     "argv": [], "settings": {}}},
                           "error": None, "wall_s": 9.0}
                    for name in engines},
    }


def make_run(out: Path, run_id: str = "20260101T000000Z-synthetic", engines: tuple[str, ...] = ("alpha", "beta"),
             durability: str = "strict", rate: float = 10.0, lost: int = 1, slow_ms: float = 0.0,
             created_at: str = "2026-01-01T00:00:00+00:00") -> Path:
    """A run directory under ``out`` with its derived files, as after ``durabench run``."""
    run_dir = out / run_id
    for i, name in enumerate(engines):
        edir = results.engine_dir(run_dir, name)
        (edir / "history").mkdir(parents=True)
        events = history(lost=lost, slow_ms=slow_ms * (i + 1)).sorted()
        (edir / "history" / "all.1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (edir / "reconcile.json").write_text("{}\n")
    results.write_json(run_dir / "manifest.json", manifest(run_id, list(engines), durability, rate, created_at))
    summary.analyze(run_dir)
    return run_dir
