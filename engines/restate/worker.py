"""Restate service worker: ``python -m engines.restate.worker --port P`` (reads $DURABENCH_WORKER_CONFIG).

Serves this worker's workflow service over HTTP/2 with hypercorn (in this process, no worker
subprocesses), registers it as a deployment with the Restate admin API on first start (a restarted
worker keeps its port, hence its deployment), then writes ``ready``. In a container (``DURABENCH_CONTAINER``
set, compose/restate.yaml) it listens on every interface of the container and registers
``http://<its hostname>:P``, which resolves on the stack's network (the container's name). Restate's server drives every
invocation: it calls this endpoint, journals each step, and retries the invocation after a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import urllib.error
import urllib.request

import restate
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from engines.restate import service_name
from engines.restate.service import build
from harness.contract import WorkerConfig
from harness.workload import StepRunner

REGISTER_TIMEOUT_S = 30.0
CONTAINER_ENV = "DURABENCH_CONTAINER"


def _request(method: str, url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=REGISTER_TIMEOUT_S) as resp:
        out: dict[str, object] = json.loads(resp.read() or b"{}")
        return out


def register(admin: str, uri: str) -> None:
    """Register ``uri`` as a deployment unless it is one already (a forced re-registration could break
    the invocations in flight on it: Restate's admin API docs, ``force``)."""
    deployments = _request("GET", f"{admin}/deployments").get("deployments", [])
    assert isinstance(deployments, list)
    if any(d.get("uri", "").rstrip("/") == uri for d in deployments):
        return
    _request("POST", f"{admin}/deployments", {"uri": uri})


async def serve(config: WorkerConfig, port: int) -> None:
    runner = StepRunner(config)
    name = service_name(config.settings, config.worker_index)
    app = restate.app(services=build(name, runner, config.workload.program, config.settings))
    # listen before registering: Restate's discovery call must find the endpoint up
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    in_container = bool(os.environ.get(CONTAINER_ENV))
    sock.bind(("0.0.0.0" if in_container else "127.0.0.1", port))
    sock.listen(1024)
    sock.set_inheritable(True)
    hc = Config()
    hc.bind = [f"fd://{sock.fileno()}"]
    hc.graceful_timeout = 5.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = asyncio.create_task(hypercorn_serve(app, hc, shutdown_trigger=stop.wait))
    host = socket.gethostname() if in_container else "127.0.0.1"
    await asyncio.to_thread(register, config.endpoints["restate-admin"], f"http://{host}:{port}")
    runner.ready()
    await server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the port of this worker's deployment")
    args = parser.parse_args()
    asyncio.run(serve(WorkerConfig.load(), args.port))


if __name__ == "__main__":
    main()
