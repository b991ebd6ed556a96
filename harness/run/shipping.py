"""Workers that run anywhere: their ledger is written locally, then shipped to the run over HTTP.

Two roles (protocol in docs/engines.md, "Workers on other hosts"):

- **collector** (``durabench collect``, started by the harness): an ASGI service on uvicorn that
  appends shipped ledger bytes to the run's history directory, one file per shipped file, under
  the same name. ``GET /offsets`` answers ``{file: bytes held}``; ``POST /ledger`` with
  ``{"file", "offset", "data"}`` appends ``data`` (whole JSON lines) when ``offset`` is what the
  collector holds, skips the part it already holds when a retry overlaps, and answers 409 with its
  offset when there is a gap. So shipping is idempotent and resumes exactly where the collector is.
- **worker host** (``durabench worker``): runs one engine worker with its ledger directory on local
  disk (the spool): the worker appends with one ``write(2)`` per record as always, so a SIGKILL of
  the worker, or of the whole host process group, loses nothing already written. A shipper in the
  ``durabench worker`` process sends new complete lines of every spool file to the collector every
  ``SHIP_INTERVAL_S``, starting from the collector's offsets, so a restarted host resumes where the
  collector is, including the lines its killed predecessor wrote and never shipped.

Neither role imports locust.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import procs
from harness.contract import CONFIG_ENV, EngineContext, WorkerConfig
from harness.errors import ServiceError, UserError
from harness.ledger import LEDGER_SUFFIX, Ledger, read_file
from harness.supervisor import Supervisor

SHIP_INTERVAL_S = 0.05
SHIP_BATCH_BYTES = 1 << 20
HTTP_TIMEOUT_S = 10.0
FINAL_SHIP_TIMEOUT_S = 30.0
STATUS_EVERY = 10  # the shipper asks the collector whether the run is stopping every 10th shipment (0.5 s)
COLLECTOR_GONE_S = 30.0  # a collector silent this long: the run is over, stop the worker
ROOT = Path(__file__).resolve().parents[2]
FILE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,200}\.jsonl$")

Scope = dict[str, Any]


# ---------------------------------------------------------------- collector


class Collector:
    """The ASGI app that writes shipped ledger bytes into ``directory``."""

    def __init__(self, directory: Path, configs: Path | None = None) -> None:
        self.directory = directory
        self.configs = configs  # worker-N.json files served to remote workers (GET /config/N)
        self.stopping = False  # set by the harness (POST /stop): remote hosts stop, ship all, then POST /done/N
        self.done: set[int] = set()
        self._lock = asyncio.Lock()

    def offsets(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in self.directory.glob(f"*{LEDGER_SUFFIX}")}

    def append(self, name: str, offset: int, data: bytes) -> tuple[int, int]:
        """(status, offset the collector holds afterwards)."""
        path = self.directory / name
        held = path.stat().st_size if path.exists() else 0
        if offset > held:
            return 409, held
        fresh = data[held - offset :]
        if fresh:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, fresh)
            finally:
                os.close(fd)
        return 200, held + len(fresh)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        status, doc = await self._http(scope, receive)
        body = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope: Scope, receive: Any) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"], scope["method"]
        if method == "GET":
            return self._get(path)
        if method != "POST":
            return 405, {"error": "GET or POST"}
        if path == "/ledger":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            return await self._ledger(b"".join(chunks))
        index = path.rpartition("/")[2]
        if path == "/stop":
            self.stopping = True
            return 200, {"stopping": True}
        if path.startswith("/done/") and index.isdigit():
            self.done.add(int(index))
            return 200, {"done": sorted(self.done)}
        return 404, {"error": "GET /offsets, /status, /config/N; POST /ledger, /stop, /done/N"}

    def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        index = path.rpartition("/")[2]
        if path == "/offsets":
            return 200, self.offsets()
        if path == "/status":
            return 200, {"stopping": self.stopping, "done": sorted(self.done)}
        config = self.configs / f"worker-{index}.json" if self.configs and index.isdigit() else None
        if not path.startswith("/config/") or config is None or not config.is_file():
            return 404, {"error": f"no such resource {path!r} (GET /offsets, /status, /config/N of this run)"}
        return 200, json.loads(config.read_text())

    async def _ledger(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            doc = json.loads(body)
            name, offset, data = doc["file"], doc["offset"], doc["data"].encode()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return 400, {"error": f"expected {{file, offset, data}}: {exc}"}
        if not isinstance(name, str) or not FILE_NAME.match(name) or not isinstance(offset, int) or offset < 0:
            return 400, {"error": "file must be a ledger file name (*.jsonl), offset a non-negative integer"}
        if data and not data.endswith(b"\n"):
            return 400, {"error": "data must be whole ledger lines, each ending in a newline"}
        async with self._lock:
            status, held = self.append(name, offset, data)
        return status, {"file": name, "offset": held}


def serve_collector(directory: Path, host: str, port: int, configs: Path | None = None) -> None:
    """Serve the collector until SIGTERM; write a ``ready`` record with its URL into ``directory``."""
    import uvicorn

    ledger = Ledger(directory, "collector")

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()
                name = socket.getfqdn() if bound[0] in ("0.0.0.0", "::") else bound[0]  # an address others can use
                ledger.write("ready", url=f"http://{name}:{bound[1]}")

    _Server(uvicorn.Config(Collector(directory, configs), host=host, port=port, lifespan="on", access_log=False,
                           log_level="warning")).run()


@contextlib.contextmanager
def collector(directory: Path, log: Path, configs: Path, host: str = "127.0.0.1",
              timeout_s: float = 60.0) -> Iterator[Collecting]:
    """A harness-owned collector process writing into ``directory`` and serving the worker configs in
    ``configs``; yields a handle with its URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = procs.spawn([sys.executable, "-m", "harness.cli", "collect", "--dir", str(directory), "--configs",
                        str(configs), "--host", host], log=log, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ready = [r for p in directory.glob(f"collector.{proc.pid}{LEDGER_SUFFIX}") for r in read_file(p)
                     if r["ev"] == "ready"]
            if ready:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"the ledger collector did not start; see {log}")
            time.sleep(0.02)
        yield Collecting(str(ready[0]["url"]))
    finally:
        procs.stop(proc)


@dataclass
class Collecting:
    """The harness's handle on its collector."""

    url: str

    def finish_remote(self, indices: list[int], timeout_s: float = FINAL_SHIP_TIMEOUT_S + 10) -> list[int]:
        """Ask remote hosts to stop their worker and ship everything; returns the indices that did not
        confirm (``POST /done/N``) within ``timeout_s``."""
        if not indices:
            return []
        _request("POST", f"{self.url}/stop", {})
        deadline = time.monotonic() + timeout_s
        while True:
            _, status = _request("GET", f"{self.url}/status")
            missing = sorted(set(indices) - set(status["done"]))
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)


# ---------------------------------------------------------------- shipper


def _request(method: str, url: str, doc: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Shipper:
    """Sends new complete lines of every ledger file in ``spool`` to the collector at ``url``."""

    def __init__(self, spool: Path, url: str) -> None:
        self.spool = spool
        self.url = url.rstrip("/")
        self.acked: dict[str, int] | None = None  # the collector's offsets, read on first use
        self.shipped_bytes = 0

    def ship_once(self) -> int:
        """Ship what is new; returns the bytes still waiting (0: the collector holds everything)."""
        if self.acked is None:
            status, offsets = _request("GET", f"{self.url}/offsets")
            if status != 200:
                raise ConnectionError(f"collector answered {status} to GET /offsets")
            self.acked = dict(offsets)
        waiting = 0
        for path in sorted(self.spool.glob(f"*{LEDGER_SUFFIX}")):
            offset = self.acked.get(path.name, 0)
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read(SHIP_BATCH_BYTES)
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            data = chunk[: end + 1]
            status, doc = _request("POST", f"{self.url}/ledger",
                                   {"file": path.name, "offset": offset, "data": data.decode()})
            if status not in (200, 409):
                raise ConnectionError(f"collector answered {status}: {doc}")
            self.acked[path.name] = int(doc["offset"])  # on 409 (a gap): resend from where it is
            self.shipped_bytes += max(0, int(doc["offset"]) - offset)
            waiting += max(0, path.stat().st_size - int(doc["offset"]))
        return waiting

    def ship_all(self, timeout_s: float) -> bool:
        """Ship until the collector holds every complete line; False if that took longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.ship_once() == 0:
                    return True
            except (OSError, ConnectionError):
                self.acked = None  # ask the collector again
            time.sleep(SHIP_INTERVAL_S)
        return False


# ---------------------------------------------------------------- worker host


def run_worker_host(config_path: Path, collector: str, spool: Path) -> int:
    """Run one engine worker with its ledger in ``spool`` and ship it; exit when the worker exits
    (after a last complete shipment), on SIGTERM (stop the worker first), or when the run asks its
    remote hosts to stop (``/status``: stop the worker, ship everything, confirm with ``POST /done/N``)."""
    from harness import registry

    cfg = WorkerConfig.load(config_path)
    spool.mkdir(parents=True, exist_ok=True)
    local = WorkerConfig(cfg.engine, cfg.run_id, cfg.worker_id, cfg.worker_index, cfg.endpoints, cfg.workload,
                         cfg.settings, str(spool))
    local_path = spool / "config.json"
    local.dump(local_path)
    engine = registry.load(cfg.engine)
    ctx = EngineContext(cfg.engine, cfg.run_id, cfg.endpoints, cfg.workload, cfg.worker_index + 1, cfg.settings,
                        spool, spool)
    shipper = Shipper(spool, collector)
    stop = threading.Event()
    asked = threading.Event()  # the run asked its remote hosts to stop

    def ship_loop() -> None:
        failing_since, tick = None, 0
        while not stop.wait(SHIP_INTERVAL_S):
            tick += 1
            try:
                shipper.ship_once()
                if tick % STATUS_EVERY == 0 and not asked.is_set():
                    _, status = _request("GET", f"{shipper.url}/status")
                    if status.get("stopping"):
                        asked.set()
                        procs.kill_group(worker, signal.SIGTERM)
                failing_since = None
            except (OSError, ConnectionError, ValueError) as exc:
                shipper.acked = None
                failing_since = failing_since or time.monotonic()
                print(f"shipper: {type(exc).__name__}: {exc}; retrying", file=sys.stderr, flush=True)
                if time.monotonic() - failing_since > COLLECTOR_GONE_S:
                    print(f"shipper: the collector has not answered for {COLLECTOR_GONE_S:g}s: the run is over; "
                          "stopping the worker", file=sys.stderr, flush=True)
                    procs.kill_group(worker, signal.SIGTERM)
                    return

    env = {**os.environ, CONFIG_ENV: str(local_path), "PYTHONUNBUFFERED": "1"}
    worker = procs.spawn(engine.worker_command(ctx, cfg.worker_index), env=env, log=spool / "worker.log")
    signal.signal(signal.SIGTERM, lambda *_: procs.kill_group(worker, signal.SIGTERM))
    thread = threading.Thread(target=ship_loop, daemon=True)
    thread.start()
    print(f"{cfg.worker_id}: {cfg.engine} worker pid {worker.pid}, ledger in {spool}, shipping to {collector}",
          flush=True)
    code = _wait(worker)
    stop.set()
    thread.join()
    complete = shipper.ship_all(FINAL_SHIP_TIMEOUT_S)
    if complete and asked.is_set():
        with contextlib.suppress(OSError, ValueError):
            _request("POST", f"{shipper.url}/done/{cfg.worker_index}", {})
    print(f"{cfg.worker_id}: worker exited with code {code}; shipped {shipper.shipped_bytes} bytes; "
          f"{'complete' if complete else 'INCOMPLETE: restart durabench worker with the same spool to resume'}",
          flush=True)
    return 0 if complete and code in (0, -signal.SIGTERM, 128 + signal.SIGTERM) else 1


def _wait(proc: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            code = proc.wait()
        except InterruptedError:  # a signal handler ran; wait again
            continue
        procs.REGISTRY.remove(proc.pid)
        return code


class ShippingSupervisor(Supervisor):
    """Runs every worker as its own "host" on this machine: ``durabench worker`` with a spool directory
    of its own (``<engine>/hosts/worker-N/``), shipping its ledger to the run's collector over HTTP."""

    def __init__(self, *args: Any, collector_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collector_url = collector_url
        self.hosts_dir = self.ctx.work_dir / "hosts"

    def spool(self, index: int) -> Path:
        return self.hosts_dir / f"worker-{index}"

    def argv(self, index: int) -> list[str]:
        return [sys.executable, "-m", "harness.cli", "worker", "--config", str(self.config_path(index)),
                "--collector", self.collector_url, "--spool", str(self.spool(index))]

    def sweep(self) -> bool:
        """After the workers stopped: ship what a host killed near the end left in its spool (what its
        restarted ``durabench worker`` would have shipped). True when the collector holds everything."""
        return all(Shipper(self.spool(i), self.collector_url).ship_all(FINAL_SHIP_TIMEOUT_S)
                   for i in range(self.count) if self.spool(i).is_dir())


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run one engine worker here and ship its ledger to a run's collector")
    p.add_argument("--run", help="the run's collector URL, http://HOST:PORT: fetch worker --index's config from it")
    p.add_argument("--index", type=int, help="with --run: which worker this host runs (worker:N)")
    p.add_argument("--config", help="the worker's config JSON (docs/engines.md), instead of --run/--index")
    p.add_argument("--collector", help="with --config: the run's collector URL, http://HOST:PORT")
    p.add_argument("--spool", help="local ledger directory (default: ./durabench-spool/<run_id>/<worker>)")
    p.set_defaults(func=_cmd_worker)
    p = sub.add_parser("collect", help="serve a collector that writes shipped ledgers into a history directory")
    p.add_argument("--dir", required=True, help="the run's history directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, named in its ready record)")
    p.add_argument("--configs", help="directory of worker-N.json configs served to remote workers")
    p.set_defaults(func=_cmd_collect)


def _cmd_worker(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.config is None):
        raise UserError("give either --run URL --index N (fetch the config from the run) "
                        "or --config FILE --collector URL")
    url = args.run or args.collector
    if url is None or not url.startswith("http://"):
        raise UserError(f"{'--run' if args.run else '--collector'} {url!r}: expected http://HOST:PORT")
    if args.run is not None:
        if args.index is None:
            raise UserError("--run needs --index N: which worker of the run this host runs")
        try:
            status, doc = _request("GET", f"{url.rstrip('/')}/config/{args.index}")
        except OSError as exc:
            raise UserError(f"--run {url}: no collector answers there ({exc})") from None
        if status != 200:
            raise UserError(f"--run {url}: {doc.get('error', status)}")
        cfg = WorkerConfig.load_dict(doc)
    else:
        try:
            cfg = WorkerConfig.load(args.config)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{args.config}: not a worker config ({type(exc).__name__}: {exc}); "
                            "see docs/engines.md") from None
    spool = Path(args.spool) if args.spool else Path("durabench-spool") / cfg.run_id / cfg.worker_id.replace(":", "-")
    spool.mkdir(parents=True, exist_ok=True)
    received = spool / "received.json"
    cfg.dump(received)
    return run_worker_host(received, url, spool)


def _cmd_collect(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise UserError(f"--dir {directory}: not a directory")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve_collector(directory, args.host, args.port, Path(args.configs) if args.configs else None)
    return 0

