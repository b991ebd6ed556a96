"""The flaky API: a harness-owned HTTP/1.1 server on loopback that ``call`` stages hit.

``python -m harness.run.flaky_api CONFIG.json`` serves ``POST /call`` (docs/engines.md, "The flaky
API"): after a latency drawn from the scenario's distribution it answers 200, or 500 / 503
(``error_rate``); it answers 429 with ``Retry-After`` at once when its token bucket
(``rate_limit``) is empty; it never answers a ``hang_rate`` fraction until the client gives up.
Every request it receives becomes one ``api_request`` record in the run's history (its own ledger
file, ``flaky-api.<pid>.jsonl``), written when the request is settled: answered, or abandoned by
the client (``"abandoned"`` before a planned answer, ``"hang"`` for a request never to be answered).
So the checker counts the calls that reached the API, not what workers say they made.

Built on a bare ``asyncio.Protocol`` with a minimal request parser: it must never be the bottleneck
(``benchmarks/flaky_api.py`` measures it). :class:`FlakyApi` starts and stops it as a child
process through ``harness.procs``, like every other server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import procs, program
from harness.ledger import Ledger

SRC = "flaky-api"
MAX_HEAD_BYTES = 64 * 1024
STOP_TIMEOUT_S = 5.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def behaviour(api: Any, seed: int) -> dict[str, Any]:
    """The server's config from a scenario's ``workload.api`` (an ``ApiSpec``): plain JSON."""
    return {"latency": api.latency.to_json(api.time_scale), "error_rate": api.error_rate, "hang_rate": api.hang_rate,
            "rate_limit": api.rate_limit, "burst": api.burst, "seed": seed}


class Bucket:
    """A token bucket: ``rate`` tokens/s, at most ``size``; ``take`` returns 0 or the wait in s."""

    def __init__(self, rate: float, size: int) -> None:
        self.rate = rate
        self.size = float(size or max(1, math.ceil(rate)))
        self.tokens = self.size
        self.last = time.monotonic()

    def take(self) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Behaviour:
    latency: dict[str, Any]
    error_rate: float
    hang_rate: float
    bucket: Bucket
    rng: random.Random
    ledger: Ledger
    seq: int = 0
    open_requests: dict[int, dict[str, Any]] = field(default_factory=dict)

    def record(self, req: dict[str, Any], status: int | str, delivered: bool) -> None:
        self.open_requests.pop(req["request"], None)
        self.ledger.write("api_request", wf=req["wf"], step=req["step"], attempt=req["attempt"],
                          worker=req["worker"], status=status, planned=req["planned"], recv_ns=req["recv_ns"],
                          delivered=delivered, request=req["request"])


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


class ApiProtocol(asyncio.Protocol):
    """One connection: requests answered one at a time, in order (HTTP/1.1 keep-alive)."""

    def __init__(self, b: Behaviour) -> None:
        self.b = b
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.current: dict[str, Any] | None = None  # the request being answered
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's transports are Transports

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > MAX_HEAD_BYTES and b"\r\n\r\n" not in self.buf:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        while self.current is None and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self._handle(head[0], headers)

    def _handle(self, request_line: str, headers: dict[str, str]) -> None:
        b = self.b
        recv_ns = time.time_ns()
        parts = request_line.split(" ")
        wf = headers.get(program.HEADER_WORKFLOW.lower())
        stage = headers.get(program.HEADER_STAGE.lower(), "")
        if len(parts) < 2 or parts[1].split("?")[0] != program.API_PATH:
            self._send(_response(404, b'{"error": "not found: POST /call"}'))
            return
        if not wf or not stage.lstrip("-").isdigit():
            self._send(_response(400, b'{"error": "X-Durabench-Workflow and X-Durabench-Stage are required"}'))
            return
        b.seq += 1
        attempt_text = headers.get(program.HEADER_ATTEMPT.lower(), "")
        req: dict[str, Any] = {"request": b.seq, "wf": wf, "step": int(stage),
               "attempt": int(attempt_text) if attempt_text.lstrip("-").isdigit() else None,
               "worker": headers.get(program.HEADER_WORKER.lower()), "recv_ns": recv_ns, "planned": None}
        wait_s = b.bucket.take()
        if wait_s > 0:
            req["planned"] = 429
            extra = (f"Retry-After: {max(1, math.ceil(wait_s))}\r\n"
                     f"{program.HEADER_RETRY_AFTER_MS}: {math.ceil(wait_s * 1000)}\r\n")
            self._send(_response(429, b'{"error": "rate limited"}', extra))
            b.record(req, 429, True)
            return
        u = b.rng.random()
        if u < b.hang_rate:
            req["planned"] = "hang"
        elif u < b.hang_rate + b.error_rate:
            req["planned"] = 500 if b.rng.random() < 0.5 else 503
        else:
            req["planned"] = 200
        self.current = req
        b.open_requests[req["request"]] = req
        if req["planned"] == "hang":
            return  # settled when the client gives up (connection_lost) or the server stops
        delay = program.draw_s(b.latency, b.rng)
        loop = asyncio.get_running_loop()
        if delay <= 0:
            self._answer()
        else:
            self.timer = loop.call_later(delay, self._answer)

    def _answer(self) -> None:
        req, self.current, self.timer = self.current, None, None
        if req is None:
            return
        status = req["planned"]
        body = (json.dumps({"ok": True, "request": req["request"]}) if status == 200
                else json.dumps({"error": "injected", "status": status})).encode()
        self._send(_response(status, body))
        self.b.record(req, status, True)
        self._next()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        req, self.current = self.current, None
        if req is not None:
            self.b.record(req, "hang" if req["planned"] == "hang" else "abandoned", False)


async def serve(config: dict[str, Any], stop: asyncio.Event) -> None:
    b = Behaviour(config["latency"], float(config["error_rate"]), float(config["hang_rate"]),
                  Bucket(float(config["rate_limit"]), int(config["burst"])), random.Random(config["seed"]),
                  Ledger(config["ledger_dir"], SRC))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ApiProtocol(b), "127.0.0.1", int(config["port"]), backlog=1024)
    async with server:
        await stop.wait()
    for req in list(b.open_requests.values()):  # never answered before the stop
        b.record(req, "hang" if req["planned"] == "hang" else "abandoned", False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="durabench's flaky API server (started by the harness)")
    parser.add_argument("config", type=Path, help="JSON: port, ledger_dir, latency, error_rate, hang_rate, ...")
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(run())


class FlakyApi:
    """The flaky API as a child process of the harness (own process group, reaped like any server)."""

    def __init__(self, config: dict[str, Any], work_dir: Path, ledger_dir: Path) -> None:
        from harness.run.services import free_port

        self.port = free_port()
        self.config = {**config, "port": self.port, "ledger_dir": str(ledger_dir)}
        self.config_path = work_dir / "flaky-api.json"
        self.log = work_dir / "logs" / "flaky-api.log" if (work_dir / "logs").is_dir() else work_dir / "flaky-api.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from harness.run.services import wait_tcp

        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.proc = procs.spawn([sys.executable, "-m", "harness.run.flaky_api", str(self.config_path)], log=self.log)
        wait_tcp(self.port, self.proc, "flaky API", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, sig=signal.SIGTERM, timeout_s=STOP_TIMEOUT_S)
            self.proc = None

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "version": "durabench flaky API (asyncio HTTP/1.1)",
                "settings": {k: v for k, v in self.config.items() if k not in ("port", "ledger_dir")}}


if __name__ == "__main__":
    main()
