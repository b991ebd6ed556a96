"""Workflow programs: the language-neutral form every worker receives, and helpers to run it.

A scenario's ``workload.program`` (harness/scenario.py, docs/scenarios.md) is compiled into a list
of JSON objects, one per stage, each carrying a ``step`` index: every stage, a ``parallel`` stage
and each stage of each of its branches included, numbered in depth-first order from 0 (a parallel
stage, then branch 0's stages, branch 1's, ...). The legacy ``steps/step_duration/payload_bytes``
shorthand compiles to a chain of ``work`` stages, so a step index means what it always meant.
The compiled list is ``WorkerConfig.workload.program`` (docs/engines.md, "Workflow programs").

Also here, for Python workers and the harness: a stage's duration for one workflow (a pure function
of the scenario seed, the workflow's sequence number and the step: ``step_draw_s``), the
application database's table and its two insert statements, the flaky API's request headers, and a
small HTTP client that makes one call attempt (sync for Celery's prefork tasks, async for the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import math
import random
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

STAGE_KINDS = ("work", "call", "parallel", "sleep", "wait_signal", "effect")
STEP_KINDS = ("work", "call", "effect")  # stages run as engine steps: step_start / step_end / step_error records
Z99 = 2.3263478740408408  # the standard normal's 99th percentile: lognormal sigma = ln(p99/p50) / Z99

# -- the application database (docs/engines.md "Application database")
APP_DATABASE = "durabench_app"
EFFECTS_TABLE = "durabench_effects"
EFFECTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (
    id              bigserial   PRIMARY KEY,
    wf              text        NOT NULL,
    step            integer     NOT NULL,
    attempt         integer,
    worker          text        NOT NULL,
    idempotency_key text        UNIQUE,
    applied_at      timestamptz NOT NULL DEFAULT clock_timestamp()
)"""
# idempotency none: every application is a row. key: insert-if-absent by the key "<wf>#<step>".
EFFECT_INSERT_NONE = f"INSERT INTO {EFFECTS_TABLE} (wf, step, attempt, worker) VALUES (%s, %s, %s, %s)"
EFFECT_INSERT_KEY = (f"INSERT INTO {EFFECTS_TABLE} (wf, step, attempt, worker, idempotency_key) "
                     f"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING")
EFFECTS_DUMP = (f"SELECT id, wf, step, attempt, worker, idempotency_key, "
                f"(extract(epoch from applied_at) * 1e9)::bigint FROM {EFFECTS_TABLE} ORDER BY id")

# -- the flaky API (docs/engines.md "The flaky API")
API_PATH = "/call"
HEADER_WORKFLOW = "X-Durabench-Workflow"
HEADER_STAGE = "X-Durabench-Stage"
HEADER_ATTEMPT = "X-Durabench-Attempt"
HEADER_WORKER = "X-Durabench-Worker"
HEADER_RETRY_AFTER_MS = "Retry-After-Ms"


def effect_key(wf: str, step: int) -> str:
    return f"{wf}#{step}"


# -- compiling


def compile_stages(stages: list[Any]) -> list[dict[str, Any]]:
    """Pydantic stage models -> the worker config's stage objects, numbered depth-first from 0."""
    counter = iter(range(1_000_000))
    return [_compile(stage, counter) for stage in stages]


def _compile(stage: Any, counter: Iterator[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": stage.kind, "step": next(counter)}
    if stage.kind == "work":
        out.update(duration=stage.duration.to_json(), payload_bytes=stage.payload_bytes)
    elif stage.kind == "call":
        r = stage.retry
        out["retry"] = {"max_attempts": r.max_attempts, "initial_backoff_s": r.initial_backoff,
                        "multiplier": r.multiplier, "max_backoff_s": r.max_backoff,
                        "attempt_timeout_s": r.attempt_timeout}
    elif stage.kind == "sleep":
        out["duration_s"] = stage.duration
    elif stage.kind == "wait_signal":
        out.update(signal=stage.signal, delay=stage.delay.to_json(), timeout_s=stage.timeout,
                   on_timeout=stage.on_timeout)
    elif stage.kind == "effect":
        out.update(idempotency=stage.idempotency, duration_s=stage.duration)
    elif stage.kind == "parallel":
        out["branches"] = [[_compile(s, counter) for s in stage.program] for _ in range(stage.branches)]
    else:  # pragma: no cover - the scenario schema admits no other kind
        raise ValueError(f"unknown stage kind {stage.kind!r}")
    return out


def compile_workload(spec: Any) -> list[dict[str, Any]]:
    """The program of a workload (a ``harness.scenario.WorkloadSpec``): its own, or the shorthand's
    chain of ``work`` stages."""
    if spec.program is not None:
        return compile_stages(spec.program)
    return [{"kind": "work", "step": i, "duration": {"dist": "fixed", "value_s": spec.step_duration},
             "payload_bytes": spec.payload_bytes} for i in range(spec.steps)]


def walk(program: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every stage, depth-first (a parallel stage, then each branch's stages)."""
    for stage in program:
        yield stage
        for branch in stage.get("branches", []):
            yield from walk(branch)


def count_steps(program: list[dict[str, Any]]) -> int:
    return sum(1 for _ in walk(program))


def kinds(program: list[dict[str, Any]]) -> set[str]:
    return {stage["kind"] for stage in walk(program)}


def sizing_duration_s(program: list[dict[str, Any]]) -> float:
    """``Workload.step_duration_s`` of a program: what adapters size step timeouts against, the longest
    upper value (fixed value, uniform max, lognormal p99) of its ``work`` stages and the longest
    ``effect`` duration. Call stages carry their own ``attempt_timeout_s``."""
    return max([upper_s(s["duration"]) for s in walk(program) if s["kind"] == "work"]
               + [float(s["duration_s"]) for s in walk(program) if s["kind"] == "effect"], default=0.0)


@dataclass(frozen=True)
class StageInfo:
    """Where a stage sits: what ends it and what follows it (for the checker)."""

    stage: dict[str, Any]
    parallel: int | None  # the step index of the parallel stage it is a branch stage of
    branch: int | None
    next_step: int | None  # the stage that follows in its sequence; None = the end of its sequence
    after: int | None  # the first stage that can start only after this one ended (None: workflow end)


def layout(program: list[dict[str, Any]]) -> dict[int, StageInfo]:
    """Every stage by step index, with its successor: the next stage of its sequence, or for the last
    stage of a branch, the stage after the parallel (the join)."""
    out: dict[int, StageInfo] = {}

    def visit(seq: list[dict[str, Any]], parallel: int | None, branch: int | None, after_seq: int | None) -> None:
        for i, stage in enumerate(seq):
            nxt = seq[i + 1]["step"] if i + 1 < len(seq) else None
            after = nxt if nxt is not None else after_seq
            out[stage["step"]] = StageInfo(stage, parallel, branch, nxt, after)
            for b, sub in enumerate(stage.get("branches", [])):
                visit(sub, stage["step"], b, after)

    visit(program, None, None, None)
    return out


# -- distributions (the same rule in every language: docs/engines.md "Drawn durations")

DRAW_RULE = "sha256(seed:seq:step)"  # the manifest's duration_draws (docs/results.md)
U_MIN = 2.0**-53  # a draw's u is clamped into [U_MIN, U_MAX]: open (0, 1), so every quantile is finite
U_MAX = 1.0 - 2.0**-53
_SEQ_SUFFIX = re.compile(r"-([0-9]+)\Z")
_STANDARD_NORMAL = statistics.NormalDist()  # inv_cdf: Wichura's AS241, as Go's NormalQuantile


def upper_s(dist: dict[str, Any]) -> float:
    return float({"fixed": dist.get("value_s"), "uniform": dist.get("max_s"), "lognormal": dist.get("p99_s")}
                 [dist["dist"]] or 0.0)


def quantile_s(dist: dict[str, Any], u: float) -> float:
    """The duration, in seconds, at quantile ``u`` (0 < u < 1) of a distribution: fixed value; uniform
    ``min + u * (max - min)``; lognormal ``exp(mu + sigma * z)`` with mu = ln p50, sigma = ln(p99 / p50) /
    2.3263 and z the standard normal's quantile of u."""
    kind = dist["dist"]
    if kind == "fixed":
        return float(dist["value_s"])
    if kind == "uniform":
        lo, hi = float(dist["min_s"]), float(dist["max_s"])
        return lo + u * (hi - lo)
    if kind == "lognormal":
        p50, p99 = float(dist["p50_s"]), float(dist["p99_s"])
        sigma = math.log(p99 / p50) / Z99 if p99 > p50 else 0.0
        return math.exp(math.log(p50) + sigma * _STANDARD_NORMAL.inv_cdf(u))
    raise ValueError(f"unknown distribution {kind!r}")


def draw_key(seed: int, workflow_id: str, step: int) -> str:
    """What a step's draw hashes: ``"<seed>:<seq>:<step>"``, where seq is the workflow id's numeric
    suffix without leading zeros (the driver's ``<engine>-<run>-<seq:07d>``: the same number for the
    i-th workflow on every engine), or the whole id when it has none."""
    match = _SEQ_SUFFIX.search(workflow_id)
    seq = (match.group(1).lstrip("0") or "0") if match else workflow_id
    return f"{seed}:{seq}:{step}"


def draw_u(seed: int, workflow_id: str, step: int) -> float:
    """The uniform variate of a step's draw: the first 8 bytes (big-endian) of sha256(draw_key) / 2**64,
    clamped into [U_MIN, U_MAX]."""
    digest = hashlib.sha256(draw_key(seed, workflow_id, step).encode()).digest()
    return min(max(int.from_bytes(digest[:8], "big") / 2.0**64, U_MIN), U_MAX)


def step_draw_s(dist: dict[str, Any], seed: int, workflow_id: str, step: int) -> float:
    """A stage's duration for one workflow: a pure function of (seed, workflow, step), so every engine
    gets the same duration for the same workflow and a re-execution of a step lasts as long as its
    first execution."""
    return quantile_s(dist, draw_u(seed, workflow_id, step))


def draw_s(dist: dict[str, Any], rng: random.Random) -> float:
    """One draw from ``rng`` (the flaky API's latencies: one stream per bucket, seeded by the scenario)."""
    kind = dist["dist"]
    if kind == "fixed":
        return float(dist["value_s"])
    if kind == "uniform":
        return rng.uniform(float(dist["min_s"]), float(dist["max_s"]))
    if kind == "lognormal":
        p50, p99 = float(dist["p50_s"]), float(dist["p99_s"])
        sigma = math.log(p99 / p50) / Z99 if p99 > p50 else 0.0
        return rng.lognormvariate(math.log(p50), sigma)
    raise ValueError(f"unknown distribution {kind!r}")


# -- retry policy (each engine maps it onto its own mechanism; this is the shared arithmetic)


def backoff_s(retry: dict[str, Any], failed_attempts: int) -> float:
    """Delay before attempt ``failed_attempts + 1``: initial * multiplier^(n-1), capped."""
    delay = float(retry["initial_backoff_s"]) * float(retry["multiplier"]) ** max(0, failed_attempts - 1)
    return min(delay, float(retry["max_backoff_s"]))


def next_retry_delay_s(retry: dict[str, Any], failed_attempts: int, retry_after_s: float | None) -> float | None:
    """The delay an engine that takes one explicit next-retry delay (Temporal's ``next_retry_delay``,
    which replaces the retry policy's own) should ask for after ``failed_attempts`` attempts, the last
    answered with ``retry_after_s``: the larger of Retry-After and the policy's backoff, so honouring
    the server never retries sooner than the policy would. None without a Retry-After: the policy
    applies unchanged."""
    if not retry_after_s:
        return None
    return max(float(retry_after_s), backoff_s(retry, failed_attempts))


# -- one call attempt to the flaky API


@dataclass(frozen=True)
class CallOutcome:
    """What one attempt got: an HTTP status, or ``timeout`` / ``error`` (no answer)."""

    status: int | str
    retry_after_s: float | None = None  # from a 429 (Retry-After-Ms, else Retry-After)
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


class CallFailed(Exception):
    """A failed call attempt (any outcome but 200); engines retry it under the stage's policy."""

    def __init__(self, outcome: CallOutcome) -> None:
        super().__init__(f"flaky API answered {outcome.status}")
        self.outcome = outcome


def _headers(wf: str, step: int, attempt: int | None, worker: str) -> dict[str, str]:
    return {HEADER_WORKFLOW: wf, HEADER_STAGE: str(step), HEADER_ATTEMPT: "" if attempt is None else str(attempt),
            HEADER_WORKER: worker, "Content-Length": "0"}


def _retry_after(headers: Any) -> float | None:
    ms = headers.get(HEADER_RETRY_AFTER_MS)
    if ms:
        return int(ms) / 1000
    sec = headers.get("Retry-After")
    return float(sec) if sec else None


def call_sync(url: str, wf: str, step: int, attempt: int | None, worker: str, timeout_s: float) -> CallOutcome:
    """One attempt with ``http.client`` (a fresh connection; the timeout covers connect and answer)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    try:
        conn.request("POST", API_PATH, headers=_headers(wf, step, attempt, worker))
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return CallOutcome(resp.status, _retry_after(resp.headers), body)
    except TimeoutError:
        return CallOutcome("timeout")
    except OSError as exc:
        return CallOutcome("error", body=str(exc))
    finally:
        conn.close()


async def call_async(url: str, wf: str, step: int, attempt: int | None, worker: str, timeout_s: float) -> CallOutcome:
    """One attempt over asyncio streams (HTTP/1.1, one request per connection)."""
    parts = urlsplit(url)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 80)
            head = "".join(f"{k}: {v}\r\n" for k, v in _headers(wf, step, attempt, worker).items())
            writer.write(f"POST {API_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n{head}\r\n"
                         .encode())
            await writer.drain()
            status_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()):
                name, _, value = line.partition(":")
                headers[name.strip().title()] = value.strip()
            length = int(headers.get("Content-Length", "0"))
            body = (await reader.readexactly(length)).decode(errors="replace") if length else ""
        parts_line = status_line.split(" ", 2)
        if len(parts_line) < 2:
            return CallOutcome("error", body=f"bad status line {status_line!r}")
        return CallOutcome(int(parts_line[1]), _retry_after({k.title(): v for k, v in headers.items()}), body)
    except TimeoutError:
        return CallOutcome("timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return CallOutcome("error", body=str(exc))
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def now_ns() -> int:
    return time.time_ns()
