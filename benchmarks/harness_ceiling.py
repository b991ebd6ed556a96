"""How fast can the harness itself go? The in-memory reference engine as a null engine.

    .venv/bin/python benchmarks/harness_ceiling.py [--rates 100,300,1000,2000,3000] [--duration 5s] [--out DIR]
                                                   [--generators pacer,locust:1,locust:2,locust:4]

For each offered rate, one ordinary run (harness.runner.run) of the ``memory`` engine with empty
workflows (1 step, no work, 16 B payload) on 2 workers, resource sampling on (as in every run),
floors off. Reported per rate: the pacer's scheduling lateness (actual send minus intended send,
p50 / p99), the achieved submission rate and the completed rate, the driver's CPU share (CPU
seconds of the harness process / the cost interval: 1.0 = one core) and the end-to-end p50 / p99.
Then two microbenchmarks: ``Ledger.write`` (one O_APPEND write per event) and the live view's
``Follower.poll`` (reading records back), in microseconds per event, and the resource sampler's
CPU per sample. This is a benchmark, not a test: the figures depend on the machine and its load.

``--generators`` also drives the same runs through Locust and the HTTP front door
(``load.generator: locust`` with N Locust workers and one front door per Locust worker) and prints,
per rate, each generator's figures as ratios to the built-in pacer's measured in the same
invocation, and the front door's addition to the submit p50 (Locust's send-to-answer p50 minus the
pacer's submit p50).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import scenario
from harness.analysis import summary as analysis_summary
from harness.ledger import Follower, Ledger
from harness.run import runner

N_EVENTS = 50_000


def run_rate(rate: float, duration: str, out: Path, generator: str = "pacer") -> dict[str, Any]:
    load: dict[str, Any] = {"mode": "open", "rate": rate, "warmup": "1s", "duration": duration, "drain_timeout": "20s"}
    if generator.startswith("locust"):
        n = int(generator.partition(":")[2] or 1)
        load.update(generator="locust", locust_workers=n, front_doors=n)
    sc = scenario.parse({
        "name": f"ceiling-{rate:g}-{generator.replace(':', '')}",
        "engines": ["memory"],
        "workload": {"steps": 1, "step_duration": 0, "payload_bytes": 16},
        "load": load,
        "workers": {"count": 2},
        "floors": {"enabled": False},
    }, "harness_ceiling")
    run_dir = runner.run(sc, out, progress=False)
    e = analysis_summary.analyze(run_dir)["engines"]["memory"]
    lateness, e2e = e["pacer_lateness_ms"], e["e2e_latency_ms"]
    cost = e.get("cost") or {}
    driver = (cost.get("components") or {}).get("driver") or {}
    sampler = cost.get("sampler") or {}
    locust = e.get("locust") or {}
    return {
        "generator": generator,
        "submit_p50_ms": e["submit_latency_ms"]["p50"],
        "locust_response_p50_ms": (locust.get("response_time_ms") or {}).get("p50"),
        "offered_per_s": rate,
        "achieved_per_s": e["achieved_rate_per_s"],
        "completed_per_s": e["throughput_per_s"],
        "pacer_lateness_p50_ms": lateness["p50"],
        "pacer_lateness_p99_ms": lateness["p99"],
        "driver_cpu_share": driver.get("cpu_share"),
        "e2e_p50_ms": e2e["p50"],
        "e2e_p99_ms": e2e["p99"],
        "driver_fell_behind": e["driver_fell_behind"],
        "sampler_cpu_ms_per_sample": round(1000 * sampler["cpu_s"] / sampler["samples"], 2) if sampler else None,
        "run_dir": str(run_dir),
    }


def ledger_cost() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp), "driver")
        ledger.write("warm")
        t0 = time.perf_counter()
        for i in range(N_EVENTS):
            ledger.write("step_end", wf=f"memory-abcdef12-{i:07d}", step=0, attempt=None)
        write_us = (time.perf_counter() - t0) / N_EVENTS * 1e6
        ledger.close()
        follower = Follower(Path(tmp))
        t0 = time.perf_counter()
        n = len(follower.poll())
        read_us = (time.perf_counter() - t0) / n * 1e6
    return {"ledger_write_us_per_event": round(write_us, 2), "follower_read_us_per_event": round(read_us, 2)}


def markdown(rows: list[dict[str, Any]], micro: dict[str, float]) -> str:
    lines = ["| offered /s | achieved /s | completed /s | pacer lateness p50 / p99 ms | driver CPU (cores) | "
             "e2e p50 / p99 ms |", "|---|---|---|---|---|---|"]
    for r in rows:
        flag = " (fell behind)" if r["driver_fell_behind"] else ""
        lines.append(f"| {r['offered_per_s']:g} | {r['achieved_per_s']:.0f}{flag} | {r['completed_per_s']:.0f} | "
                     f"{r['pacer_lateness_p50_ms']} / {r['pacer_lateness_p99_ms']} | {r['driver_cpu_share']} | "
                     f"{r['e2e_p50_ms']} / {r['e2e_p99_ms']} |")
    sampler = [r["sampler_cpu_ms_per_sample"] for r in rows if r["sampler_cpu_ms_per_sample"] is not None]
    lines += ["", f"Ledger.write: {micro['ledger_write_us_per_event']} us per event; live view (Follower.poll): "
              f"{micro['follower_read_us_per_event']} us per event read back; resource sampler: "
              f"{round(statistics.median(sampler), 2) if sampler else '-'} ms of CPU per sample (1 per second)."]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def generators_markdown(rows: list[dict[str, Any]]) -> str:
    """Each generator beside the pacer at the same rate: rates as ratios to the pacer's, latencies raw (a
    ratio to a pacer latency near 0 says nothing), and the front door's addition to the submit p50 where
    neither generator fell behind (else queueing, not the front door, dominates both)."""
    pacer = {r["offered_per_s"]: r for r in rows if r["generator"] == "pacer"}
    lines = ["| offered /s | generator | achieved /s (x pacer) | completed /s (x pacer) | lateness p50 / p99 ms | "
             "e2e p50 / p99 ms | Locust send to answer p50 ms | front door adds to submit p50 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = pacer.get(r["offered_per_s"], {})
        calm = not r["driver_fell_behind"] and not p.get("driver_fell_behind", True)
        added = (f"{r['locust_response_p50_ms'] - p['submit_p50_ms']:.2f}"
                 if calm and r["locust_response_p50_ms"] is not None and p.get("submit_p50_ms") is not None else "-")
        flag = " (fell behind)" if r["driver_fell_behind"] else ""
        lines.append(
            f"| {r['offered_per_s']:g} | {r['generator']} | {r['achieved_per_s']:.0f} "
            f"({_ratio(r['achieved_per_s'], p.get('achieved_per_s'))}){flag} | {r['completed_per_s']:.0f} "
            f"({_ratio(r['completed_per_s'], p.get('completed_per_s'))}) | "
            f"{r['pacer_lateness_p50_ms']} / {r['pacer_lateness_p99_ms']} | {r['e2e_p50_ms']} / {r['e2e_p99_ms']} | "
            f"{r['locust_response_p50_ms'] if r['locust_response_p50_ms'] is not None else '-'} | {added} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,300,1000,2000,3000")
    parser.add_argument("--duration", default="5s", help="measured load per rate")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--from-json", help="only print the tables of an earlier run's harness_ceiling.json")
    parser.add_argument("--generators", default="pacer",
                        help="comma-separated: pacer, locust:N (N Locust workers and N front doors)")
    args = parser.parse_args(argv)
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        print(markdown([r for r in doc["rates"] if r.get("generator", "pacer") == "pacer"], doc))
        if any(r.get("generator", "pacer") != "pacer" for r in doc["rates"]):
            print("\n" + generators_markdown(doc["rates"]))
        return 0
    rates = [float(r) for r in args.rates.split(",")]
    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    if "pacer" not in generators:
        generators.insert(0, "pacer")  # the reference of every ratio
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="durabench-ceiling-"))
    rows = []
    for rate in rates:
        for generator in generators:
            print(f"rate {rate:g}/s, {generator} ...", file=sys.stderr, flush=True)
            rows.append(run_rate(rate, args.duration, out, generator))
    micro = ledger_cost()
    print(markdown([r for r in rows if r["generator"] == "pacer"], micro))
    if len(generators) > 1:
        print("\n" + generators_markdown(rows))
    (out / "harness_ceiling.json").write_text(json.dumps({"rates": rows, **micro}, indent=2) + "\n")
    print(f"\nraw: {out / 'harness_ceiling.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
