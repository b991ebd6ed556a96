"""The HTTP front door: an ASGI service that starts workflows on one engine, as real applications do.

``POST /workflows`` with a JSON body ``{"id": "<workflow id>", "intended_ns": <int>}`` (and
optionally ``"sent_ns"``, the client's own send time) starts the workflow through the engine's
:class:`~harness.contract.EngineClient`. The front door writes the same history records as the
built-in driver (harness/run/driver.py) to a ledger file of its own (``src: front:<index>``):
``invoke`` (the intended time, and the time the request reached the front door) before the
submit, ``ack`` (outcome ``ok`` / ``fail`` / ``unknown``) after it. Latency therefore still runs
from the intended start: a load generator that falls behind shows up as lateness, not as a lower
offered rate.

Answers (docs/engines.md, "The front door"):

=====  ===========================================================  ==================
code   meaning                                                      history
=====  ===========================================================  ==================
200    the engine durably accepted the workflow                     ``ack`` ``ok``
400    bad request: the body says what is wrong                     nothing
404    not ``/workflows`` or ``/health``                            nothing
405    wrong method                                                 nothing
409    this front door already took this workflow id                nothing
413    body larger than ``MAX_BODY_BYTES``                          nothing
502    the engine raised an error: outcome indeterminate            ``ack`` ``unknown``
503    the engine refused the workflow: it will not run             ``ack`` ``fail``
504    no answer from the engine within the submit timeout          ``ack`` ``unknown``
=====  ===========================================================  ==================

``GET /health`` answers 200 once the engine client is open. Several front doors can serve one
run: each writes its own ledger file. Served by uvicorn (``durabench front``), loopback by
default. This module never imports locust (gevent is incompatible with the Temporal SDK).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.contract import EngineClient, EngineContext, Workload
from harness.errors import SubmitRejected, UserError
from harness.ledger import Ledger

MAX_BODY_BYTES = 64 * 1024
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
               413: "Content Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout"}

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class FrontConfig:
    """Everything one front-door process needs (written as JSON by the harness, or by a user)."""

    engine: str
    run_id: str
    index: int  # the front door's identity: its ledger source is ``front:<index>``
    endpoints: dict[str, str]
    workload: Workload
    workers: int
    settings: dict[str, Any]
    work_dir: str
    ledger_dir: str
    submit_timeout_s: float

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> FrontConfig:
        try:
            raw = json.loads(Path(path).read_text())
            raw["workload"] = Workload(**raw["workload"])
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path}: not a front-door config ({type(exc).__name__}: {exc}); "
                            "the harness writes one per front door under engines/<engine>/front/") from None

    def context(self) -> EngineContext:
        return EngineContext(self.engine, self.run_id, self.endpoints, self.workload, self.workers, self.settings,
                             Path(self.work_dir), Path(self.ledger_dir))

    @property
    def src(self) -> str:
        return f"front:{self.index}"


class BadRequest(ValueError):
    """A request the front door refuses before it reaches the engine (4xx, nothing recorded)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_request(body: bytes) -> tuple[str, int, int | None]:
    """(workflow id, intended_ns, client sent_ns) from a request body, or :class:`BadRequest`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "body is not JSON; send {\"id\": \"wf-1\", \"intended_ns\": <ns since epoch>}") from None
    if not isinstance(doc, dict):
        raise BadRequest(400, "body must be a JSON object with id and intended_ns")
    unknown = sorted(set(doc) - {"id", "intended_ns", "sent_ns"})
    if unknown:
        raise BadRequest(400, f"unknown fields {unknown} (known: id, intended_ns, sent_ns)")
    wf = doc.get("id")
    if not isinstance(wf, str) or not WORKFLOW_ID.match(wf):
        raise BadRequest(400, f"id must be 1-200 characters of [A-Za-z0-9_.:@-], given {wf!r}")
    intended = doc.get("intended_ns")
    if not isinstance(intended, int) or isinstance(intended, bool) or intended <= 0:
        raise BadRequest(400, f"intended_ns must be a positive integer (ns since the Unix epoch), given {intended!r}")
    sent = doc.get("sent_ns")
    if sent is not None and (not isinstance(sent, int) or isinstance(sent, bool) or sent <= 0):
        raise BadRequest(400, f"sent_ns must be a positive integer when given, given {sent!r}")
    return wf, intended, sent


class FrontDoor:
    """The ASGI application. ``open_client`` is awaited once at lifespan startup."""

    def __init__(self, open_client: Callable[[], Awaitable[EngineClient]], ledger: Ledger,
                 submit_timeout_s: float) -> None:
        self.open_client = open_client
        self.ledger = ledger
        self.submit_timeout_s = submit_timeout_s
        self.client: EngineClient | None = None
        self.seen: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            status, doc = await self._http(scope, receive)
            await _respond(send, status, doc, allow="POST" if status == 405 else None)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.client = await self.open_client()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            return (200, {"ok": True, "src": self.ledger.src}) if method == "GET" else (405, {"error": "use GET"})
        if path != "/workflows":
            return 404, {"error": f"no such path {path!r}; POST /workflows starts a workflow"}
        if method != "POST":
            return 405, {"error": "use POST /workflows"}
        try:
            wf, intended_ns, client_sent_ns = parse_request(await _read_body(receive))
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}
        if wf in self.seen:
            return 409, {"error": f"workflow {wf!r} was already submitted through this front door", "id": wf}
        self.seen.add(wf)
        return await self.submit(wf, intended_ns, client_sent_ns)

    async def submit(self, wf: str, intended_ns: int, client_sent_ns: int | None) -> tuple[int, dict[str, Any]]:
        """Submit one workflow and record it exactly as the driver does (``invoke``, then ``ack``)."""
        assert self.client is not None, "lifespan startup opens the client before any request"
        extra = {} if client_sent_ns is None else {"client_sent_ns": client_sent_ns}
        sent_ns = self.ledger.write("invoke", wf=wf, intended_ns=intended_ns, **extra)
        status, outcome, error = 200, "ok", None
        try:
            await asyncio.wait_for(self.client.submit(wf), self.submit_timeout_s)
        except SubmitRejected as exc:
            status, outcome, error = 503, "fail", str(exc)
        except TimeoutError:
            status, outcome, error = 504, "unknown", f"no answer from the engine within {self.submit_timeout_s:g}s"
        except Exception as exc:
            status, outcome, error = 502, "unknown", f"{type(exc).__name__}: {exc}"
        self.ledger.write("ack", wf=wf, outcome=outcome, sent_ns=sent_ns, error=error)
        doc: dict[str, Any] = {"id": wf, "outcome": outcome}
        if error is not None:
            doc["error"] = error
        return status, doc


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, doc: dict[str, Any], allow: str | None = None) -> None:
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(config: FrontConfig, host: str, port: int) -> None:
    """Run one front door under uvicorn until SIGTERM / SIGINT; write a ``ready`` ledger record with
    its URL once it accepts connections (``port`` 0: a free port, named in that record)."""
    import uvicorn

    from harness import registry

    engine = registry.load(config.engine)
    ledger = Ledger(config.ledger_dir, config.src)
    ctx = config.context()
    app = FrontDoor(lambda: engine.open_client(ctx), ledger, config.submit_timeout_s)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()
                name = socket.getfqdn() if bound[0] in ("0.0.0.0", "::") else bound[0]  # an address others can use
                ledger.write("ready", url=f"http://{name}:{bound[1]}", engine=config.engine)
                print(f"front:{config.index} serving {config.engine} on http://{name}:{bound[1]}", flush=True)

    uv = uvicorn.Config(app, host=host, port=port, lifespan="on", access_log=False, log_level="warning",
                        timeout_graceful_shutdown=int(config.submit_timeout_s) + 5)
    _Server(uv).run()


def register(sub: Any) -> None:
    p = sub.add_parser("front", help="serve an HTTP front door that starts workflows on one engine")
    p.add_argument("--config", required=True, help="front-door config JSON (engines/<engine>/front/front-N.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, named in the ready record)")
    p.set_defaults(func=_cmd_front)


def _cmd_front(args: argparse.Namespace) -> int:
    config = FrontConfig.load(args.config)
    if not Path(config.ledger_dir).is_dir():
        raise UserError(f"{args.config}: ledger_dir {config.ledger_dir} is not a directory")
    # uvicorn stops gracefully on SIGTERM (answers in flight get their ack records), then raises the
    # signal again: exit quietly then, not through the CLI's "interrupted" path
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(config, args.host, args.port)
    return 0

