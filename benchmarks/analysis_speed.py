"""How fast is ``durabench analyze`` on a long run? A synthetic history of N ledger events.

    .venv/bin/python benchmarks/analysis_speed.py [--events 1000000] [--keep DIR]

Writes a run directory the way a run would (manifest, the driver's, the nemesis', the
supervisor's and every worker process's ledger files, an engine reconcile file) for one engine,
then times the analysis that ``durabench analyze`` runs (``harness.analysis.summary.analyze``: ledger reading,
checker, metrics, recovery, cost; the report's charts are not part of it). The history is a
realistic mix: an open-loop driver (invoke + ack per workflow) at 1,000 workflows/s, 3-step
workflows spread over 4 workers (step_start + step_end per step), a worker kill every 30 s whose
in-flight steps re-run on the restarted worker (duplicated steps), a few lost workflows and a
few whose submit timed out.

Reported: events, wall and CPU seconds of the analysis (CPU seconds are the steadier figure on a
busy machine), events per second (by wall time), and the peak resident set
size of this process (``resource.getrusage``: the synthesis is done in a child process first so
that it does not count). A benchmark, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 3
WORKERS = 4
RATE_PER_S = 1000.0
WARMUP_S = 5.0
STEP_S = 0.02
KILL_EVERY_S = 30.0
ENGINE = "memory"  # a registered name, so that the report draws it like any engine
T0_NS = 1_800_000_000_000_000_000


def _line(rec: dict[str, Any]) -> bytes:
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def synthesize(run_dir: Path, n_events: int, seed: int = 1) -> int:
    """Write a run directory of about ``n_events`` ledger events; returns the exact count."""
    rng = random.Random(seed)
    per_wf = 2 + 2 * STEPS
    n_wf = max(10, n_events // per_wf)
    warmup_s = min(WARMUP_S, 0.1 * n_wf / RATE_PER_S)  # a small history keeps most of its load measured
    duration_s = n_wf / RATE_PER_S - warmup_s
    hist = run_dir / "engines" / ENGINE / "history"
    hist.mkdir(parents=True)
    files: dict[str, Any] = {}

    def out(name: str) -> Any:
        if name not in files:
            files[name] = (hist / f"{name}.jsonl").open("wb", buffering=1 << 20)
        return files[name]

    driver_pid, count = 1000, 0
    drv = out(f"driver.{driver_pid}")
    drv.write(_line({"ev": "load_start", "ns": T0_NS, "src": "driver", "pid": driver_pid, "mode": "open",
                     "rate": RATE_PER_S, "concurrency": 10, "warmup_ns": int(warmup_s * 1e9),
                     "duration_ns": int(duration_s * 1e9)}))
    count += 1
    worker_pid = {w: 2000 + w for w in range(WORKERS)}
    kills = [T0_NS + int(t * 1e9) for t in _frange(KILL_EVERY_S / 2, n_wf / RATE_PER_S, KILL_EVERY_S)]
    nem = out(f"nemesis.{driver_pid}")
    sup = out(f"supervisor.{driver_pid}")
    for w in range(WORKERS):
        sup.write(_line({"ev": "worker_start", "ns": T0_NS - 10**9, "src": "supervisor", "pid": driver_pid,
                         "worker": f"worker:{w}", "worker_pid": worker_pid[w], "start": 1}))
        count += 1
    reconcile: dict[str, Any] = {}
    next_kill = 0
    for i in range(n_wf):
        wf = f"{ENGINE}-{i:08d}"
        intended = T0_NS + int(i * 1e9 / RATE_PER_S)
        sent = intended + rng.randint(20_000, 200_000)
        while next_kill < len(kills) and kills[next_kill] <= intended:  # kill worker:k, restart 1 s later
            at, k = kills[next_kill], next_kill % WORKERS
            fid = f"f{next_kill}"
            nem.write(_line({"ev": "fault_start", "ns": at, "src": "nemesis", "pid": driver_pid, "fault_id": fid,
                             "kind": "kill-worker", "target": f"worker:{k}", "workers": [f"worker:{k}"]}))
            sup.write(_line({"ev": "worker_exit", "ns": at + 5_000_000, "src": "supervisor", "pid": driver_pid,
                             "worker": f"worker:{k}", "worker_pid": worker_pid[k], "code": -9}))
            worker_pid[k] += 100
            sup.write(_line({"ev": "worker_start", "ns": at + 10**9, "src": "supervisor", "pid": driver_pid,
                             "worker": f"worker:{k}", "worker_pid": worker_pid[k], "start": 2}))
            nem.write(_line({"ev": "fault_end", "ns": at + 10**9 + 400_000_000, "src": "nemesis", "pid": driver_pid,
                             "fault_id": fid, "kind": "kill-worker", "target": f"worker:{k}",
                             "healed_by": "supervisor restart"}))
            count += 4
            next_kill += 1
        timed_out = rng.random() < 0.0005
        drv.write(_line({"ev": "invoke", "ns": sent, "src": "driver", "pid": driver_pid, "wf": wf,
                         "intended_ns": intended}))
        ack = sent + rng.randint(500_000, 3_000_000)
        drv.write(_line({"ev": "ack", "ns": ack, "src": "driver", "pid": driver_pid, "wf": wf,
                         "outcome": "unknown" if timed_out else "ok", "sent_ns": sent,
                         "error": "TimeoutError" if timed_out else None}))
        count += 2
        lost_at = STEPS if rng.random() > 0.0005 else rng.randrange(STEPS)  # a few never finish
        w = rng.randrange(WORKERS)
        t = ack + rng.randint(1_000_000, 5_000_000)
        for step in range(STEPS):
            if step == lost_at:
                break
            crash = next((k for k in kills if t <= k < t + int(STEP_S * 1e9)), None)
            name = f"worker-{w}.{worker_pid[w]}"
            out(name).write(_line({"ev": "step_start", "ns": t, "src": f"worker:{w}", "pid": worker_pid[w],
                                   "wf": wf, "step": step, "attempt": None}))
            count += 1
            if crash is not None and kills.index(crash) % WORKERS == w:  # killed mid-step: re-runs after restart
                t = crash + 10**9 + rng.randint(200_000_000, 600_000_000)
                pid = worker_pid[w] + 100
                out(f"worker-{w}.{pid}").write(_line({"ev": "step_start", "ns": t, "src": f"worker:{w}", "pid": pid,
                                                      "wf": wf, "step": step, "attempt": None}))
                count += 1
                end = t + int(STEP_S * 1e9)
                out(f"worker-{w}.{pid}").write(_line({"ev": "step_end", "ns": end, "src": f"worker:{w}", "pid": pid,
                                                      "wf": wf, "step": step, "attempt": None}))
            else:
                end = t + int(STEP_S * 1e9)
                out(name).write(_line({"ev": "step_end", "ns": end, "src": f"worker:{w}", "pid": worker_pid[w],
                                       "wf": wf, "step": step, "attempt": None}))
            count += 1
            t = end + rng.randint(300_000, 2_000_000)
        done = lost_at == STEPS
        reconcile[wf] = {"status": "completed" if done else "pending",
                         "completed_ns": t + 1_000_000 if done else None, "detail": {}}
    drv.write(_line({"ev": "load_end", "ns": T0_NS + int(n_wf * 1e9 / RATE_PER_S), "src": "driver",
                     "pid": driver_pid}))
    count += 1
    for fh in files.values():
        fh.close()
    (run_dir / "engines" / ENGINE / "reconcile.json").write_text(json.dumps(reconcile))
    from harness import results, scenario

    sc = scenario.parse({
        "name": "analysis-speed", "engines": [ENGINE],
        "workload": {"steps": STEPS, "step_duration": STEP_S, "payload_bytes": 16},
        "load": {"mode": "open", "rate": RATE_PER_S, "warmup": warmup_s, "duration": duration_s},
        "workers": {"count": WORKERS, "restart_delay": 1.0}, "floors": {"enabled": False},
    }, "analysis_speed")
    manifest = {
        "schema_version": results.SCHEMA_VERSION, "run_id": run_dir.name, "created_at": "2026-11-30T00:00:00+00:00",
        "scenario": sc.model_dump(), "durability": sc.durability, "seed": seed, "short_id": "5e5e5e5e",
        "harness": {"version": "synthetic", "git_revision": None, "python": sys.version.split()[0]},
        "machine": results.machine_facts(),
        "engines": {ENGINE: {"description": "synthetic history (benchmarks/analysis_speed.py)", "versions": {},
                             "settings": {}, "services": {}, "error": None}},
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return count


def _frange(start: float, stop: float, step: float) -> list[float]:
    out, t = [], start
    while t < stop:
        out.append(t)
        t += step
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", help="write the synthetic run here and keep it (default: a temporary directory); "
                                       "a run already there with as many events is analyzed again, not rewritten")
    parser.add_argument("--report", action="store_true",
                        help="also time the report (report.md, report.html, charts), as `durabench analyze` writes it")
    args = parser.parse_args(argv)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="durabench-analysis-speed-"))
    run_dir = base / "run"
    try:
        marker = base / "events.txt"
        if marker.is_file() and marker.read_text().split()[0] == str(args.events):
            n = int(marker.read_text().split()[1])
            print(f"reusing the synthetic run of {n:,} events in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            ctx = multiprocessing.get_context("fork")  # synthesis in a child: its memory is not this process's peak
            with ctx.Pool(1) as pool:
                n = pool.apply(synthesize, (run_dir, args.events))
            if args.keep:
                marker.write_text(f"{args.events} {n}\n")
            size = sum(p.stat().st_size for p in run_dir.rglob("*.jsonl"))
            print(f"synthesized {n:,} events ({size / 2**20:.0f} MiB of ledger) in {run_dir}", file=sys.stderr)
        from harness.analysis import summary as analysis_summary

        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        summary = analysis_summary.analyze(run_dir)
        wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        peak = after.ru_maxrss * 1024
        cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        report_s = report_cpu_s = None
        if args.report:
            from harness import results
            from harness.report import html

            started, cpu0 = time.perf_counter(), time.process_time()
            html.write_run(run_dir, results.load_manifest(run_dir), summary)
            report_s = round(time.perf_counter() - started, 2)
            report_cpu_s = round(time.process_time() - cpu0, 2)
        e = summary["engines"][ENGINE]
        figures = {
            "events": n, "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "events_per_s": round(n / wall_s),
            "peak_rss_bytes": peak, "peak_rss_mib": round(peak / 2**20),
            "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            "rss_before_mib": round(before.ru_maxrss * 1024 / 2**20),
            "report_wall_s": report_s, "report_cpu_s": report_cpu_s,
            "peak_rss_mib_with_report": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "submitted": e["submitted"], "completed": e["completed"], "lost": e["lost"],
            "duplicated_steps": e["duplicated_steps"], "faults": len(e["recovery"]),
        }
        print(json.dumps(figures, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
