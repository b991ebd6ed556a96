"""Can the flaky API be the bottleneck? Its request rate on one core, added latency excluded.

    .venv/bin/python benchmarks/flaky_api.py [--duration 5] [--connections 64] [--clients 1]

Starts the flaky API (harness.run.flaky_api, as a run does: a child process through harness.procs,
logging every request into a ledger file) with zero latency, no errors and no rate limit, pinned
to CPU 0; load generators (separate processes, keep-alive HTTP/1.1 connections, one request in
flight per connection) pinned to the other CPUs. Reported: requests answered per wall-clock second,
the server's CPU seconds over the measurement, and requests per server CPU-second (the one-core
figure that holds even when the load generator competes for the CPU). The records in the ledger
file are counted as well: every request is logged. The issue's bar: >= 2,000 requests/s on one
core. A benchmark, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness import ledger, program
from harness.run.flaky_api import FlakyApi


async def _client(port: int, connections: int, duration_s: float, out: mp.Queue) -> None:
    deadline = time.monotonic() + duration_s
    head = (f"POST {program.API_PATH} HTTP/1.1\r\nHost: x\r\n{program.HEADER_WORKFLOW}: bench\r\n"
            f"{program.HEADER_STAGE}: 0\r\n{program.HEADER_ATTEMPT}: 1\r\n{program.HEADER_WORKER}: bench\r\n"
            f"Content-Length: 0\r\n\r\n").encode()

    async def lane() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.monotonic() < deadline:
            writer.write(head)
            await reader.readuntil(b"\r\n\r\n")  # headers; the body length is in them
            line = await reader.readuntil(b"}")  # the JSON body ends with its closing brace
            del line
            n += 1
        writer.close()
        return n

    counts = await asyncio.gather(*(lane() for _ in range(connections)))
    out.put(sum(counts))


def _client_main(port: int, connections: int, duration_s: float, cpu: int, out: mp.Queue) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_client(port, connections, duration_s, out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections per client process")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    with tempfile.TemporaryDirectory(prefix="durabench-flaky-bench-") as tmp:
        work = Path(tmp)
        config = {"latency": {"dist": "fixed", "value_s": 0.0}, "error_rate": 0.0, "hang_rate": 0.0,
                  "rate_limit": 0.0, "burst": 0, "seed": 1}
        api = FlakyApi(config, work, work)
        api.start()
        try:
            assert api.proc is not None
            server = psutil.Process(api.proc.pid)
            server.cpu_affinity([cpus[0]])
            queue: mp.Queue = mp.Queue()
            client_cpus = cpus[1:] or cpus
            clients = [mp.Process(target=_client_main, args=(api.port, args.connections, args.duration,
                                                             client_cpus[i % len(client_cpus)], queue))
                       for i in range(args.clients)]
            cpu0 = server.cpu_times()
            t0 = time.monotonic()
            for c in clients:
                c.start()
            total = sum(queue.get() for _ in clients)
            wall = time.monotonic() - t0
            cpu1 = server.cpu_times()
            for c in clients:
                c.join()
        finally:
            api.stop()
        logged = sum(1 for r in ledger.read_dir(work) if r["ev"] == "api_request")
    server_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    result = {
        "requests": total,
        "logged_requests": logged,
        "wall_s": round(wall, 2),
        "requests_per_s": round(total / wall),
        "server_cpu_s": round(server_cpu, 2),
        "requests_per_server_cpu_s": round(total / server_cpu) if server_cpu > 0 else None,
        "server_cpu": cpus[0],
        "connections": args.connections * args.clients,
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
