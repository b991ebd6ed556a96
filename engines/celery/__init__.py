"""Celery 5.7 on Redis (Valkey): a workflow is a canvas chain of one task per step.

Recommended durable settings, their sources and the recovery mechanics: see README.md here.
Celery and kombu are imported lazily, so ``durabench engines`` works without them.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from harness import events
from harness.contract import EngineContext, EngineRecord, Workload
from harness.errors import SubmitRejected

if TYPE_CHECKING:
    import redis
    from celery import Celery

_MGET_CHUNK = 1000


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _date_done_ns(value: str) -> int:
    """``date_done`` (ISO 8601 with offset, microseconds, written by the worker) as integer ns."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"date_done without a time zone: {value!r}")
    return calendar.timegm(dt.utctimetuple()) * 1_000_000_000 + dt.microsecond * 1000


def _release(result: Any) -> None:
    """Unsubscribe every result object of a published canvas (the chain's parents, a group's members)
    now, and detach them from the backend, so AsyncResult.__del__ has nothing left to cancel later
    (when Redis may be gone)."""
    todo = [result]
    while todo:
        node = todo.pop()
        if node is None:
            continue
        todo.extend(getattr(node, "results", None) or [])
        todo.append(getattr(node, "parent", None))
        if "backend" in vars(node) and node.backend is not None:  # an AsyncResult (a GroupResult's is derived)
            node.backend.remove_pending_result(node)
            node.backend = None


class CeleryClient:
    """Publishes chains from a thread pool (kombu publishes block) and reads results from Redis."""

    def __init__(self, ctx: EngineContext) -> None:
        import redis

        from engines.celery.app import make_app, with_db

        self._program = ctx.workload.program
        self._steps = ctx.workload.steps
        # A parallel stage is a chord, which Celery starts only with a result backend configured in the
        # publisher too (it sets up the chord's counter); otherwise the client is a fire-and-forget producer.
        self._app: Celery = make_app(ctx.endpoints["redis"], ctx.settings, results="parallel" in ctx.workload.kinds())
        self._pool = ThreadPoolExecutor(ctx.settings["submit_threads"], thread_name_prefix="celery-submit")
        self._results: redis.Redis = redis.Redis.from_url(with_db(ctx.endpoints["redis"],
                                                                  ctx.settings["result_backend_db"]))
        self._broker: redis.Redis = redis.Redis.from_url(ctx.endpoints["redis"])

    def _publish(self, workflow_id: str) -> None:
        import redis
        from kombu.exceptions import OperationalError

        from engines.celery.app import workflow

        try:
            result = workflow(self._app, workflow_id, self._program).apply_async()
            if self._app.conf.result_backend:  # a chord publisher: it never waits on the results it subscribed to
                _release(result)
        except OperationalError as exc:
            # kombu wraps redis errors; a ResponseError (e.g. OOM under noeviction) means the
            # server refused the LPUSH: the message was not stored. Anything else stays unknown.
            if isinstance(exc.__cause__, redis.ResponseError):
                raise SubmitRejected(f"{workflow_id}: broker refused the message: {exc.__cause__}") from exc
            raise

    async def submit(self, workflow_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._publish, workflow_id)

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        return await asyncio.to_thread(self._lookup, workflow_ids)

    def _mget(self, keys: list[str]) -> list[Any]:
        values: list[Any] = []
        for i in range(0, len(keys), _MGET_CHUNK):
            values.extend(self._results.mget(keys[i : i + _MGET_CHUNK]))
        return values

    def _lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        from engines.celery.app import RESULT_KEY_PREFIX, last_step, task_id

        out: dict[str, EngineRecord] = {}
        last = last_step(self._program)
        metas = self._mget([RESULT_KEY_PREFIX + task_id(wf, last) for wf in workflow_ids])
        unresolved: list[str] = []
        for wf, raw in zip(workflow_ids, metas, strict=True):
            if raw is None:
                unresolved.append(wf)
                continue
            meta = json.loads(raw)
            detail = {"task_id": meta.get("task_id"), "state": meta["status"], "date_done": meta.get("date_done")}
            if meta["status"] == "SUCCESS":
                out[wf] = EngineRecord("completed", _date_done_ns(meta["date_done"]), detail)
            elif meta["status"] == "FAILURE":
                out[wf] = EngineRecord("failed", None, detail)
            else:  # a result of the last step's task: a worker has taken it (STARTED, RETRY)
                out[wf] = EngineRecord("pending", None, {**detail, "claimed": True})
        if not unresolved:
            return out
        # No result for the last step: look at the earlier steps' results (a failure is also
        # stored for the rest of the chain, but check every step), then at the broker's queue and
        # unacked hash for a message of the workflow that has not produced a result yet.
        earlier = [RESULT_KEY_PREFIX + task_id(wf, i) for wf in unresolved for i in range(self._steps) if i != last]
        earlier_metas = self._mget(earlier) if earlier else []
        waiting, unacked = self._queued_workflows() if unresolved else (set(), set())
        queued = waiting | unacked
        for n, wf in enumerate(unresolved):
            per = self._steps - 1
            states = [json.loads(raw)["status"] for raw in earlier_metas[n * per : (n + 1) * per] if raw is not None]
            detail = {"step_states": states}
            if "FAILURE" in states:
                out[wf] = EngineRecord("failed", None, detail)
            elif states or wf in queued:
                # claimed: an earlier step has a result, or a worker holds a message of it (delivered, unacked);
                # else its only message waits in the queue, no worker ever having taken it
                claimed = bool(states) or wf in unacked
                out[wf] = EngineRecord("pending", None, {**detail, "queued": wf in queued, "claimed": claimed})
            else:
                out[wf] = EngineRecord("not_found", None, detail)
        return out

    def _queued_workflows(self) -> tuple[set[str], set[str]]:
        """Workflow ids of every task message waiting in the queue, and of every one delivered to a worker and
        not yet acked."""
        from engines.celery.app import QUEUE

        pipe = self._broker.pipeline(transaction=False)
        pipe.lrange(QUEUE, 0, -1)
        pipe.hvals("unacked")  # kombu/transport/redis.py Channel.unacked_key: json [message, exchange, rk]
        waiting, unacked = pipe.execute()
        return _workflows_of([json.loads(m) for m in waiting]), _workflows_of([json.loads(u)[0] for u in unacked])

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._app.conf.result_backend:  # a chord publisher: stop the backend's result listener thread
            with contextlib.suppress(Exception):
                self._app.backend.result_consumer.stop()
        self._app.close()
        self._results.close()
        self._broker.close()


def _workflows_of(messages: list[dict[str, Any]]) -> set[str]:
    """The workflow ids of kombu messages (a task id is ``<workflow id>:<step>``)."""
    found: set[str] = set()
    for message in messages:
        tid = message.get("headers", {}).get("id")
        if isinstance(tid, str) and ":" in tid:
            found.add(tid.rsplit(":", 1)[0])
    return found


class CeleryEngine:
    name: ClassVar[str] = "celery"
    description: ClassVar[str] = "Celery 5.7 canvas chain on Redis (Valkey), acks_late + visibility-timeout recovery"
    services: ClassVar[tuple[str, ...]] = ("redis",)
    # integration cost (harness/integration.py): the app with its task, and the chain a user writes
    workflow_code: ClassVar[tuple[str, ...]] = ("app.py:make_app,workflow",)
    changed_defaults: ClassVar[dict[str, Any]] = {
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 4,
        "worker_concurrency": _cpus(),
        "visibility_timeout": 3600.0,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 10,
        "unacked_mutex_expire": 300.0,
        "result_expires": 86400,
    }
    # README "Programs": calls retry through Task.retry, sleeps are ETA messages, parallel stages are
    # chords; Celery has no way to deliver an external event to a running chain.
    stages: ClassVar[Mapping[str, str | None]] = {
        **dict.fromkeys(("work", "call", "parallel", "sleep", "effect")),
        "wait_signal": "Celery has no signal mechanism: a chain cannot wait for an external event",
    }
    # load.source: kafka (README "Events"): a consumer thread in every worker's main process
    event_consumer_settings: ClassVar[dict[str, object]] = events.CONSUMER_SETTINGS
    event_consumer: ClassVar[str] = (
        "a confluent-kafka consumer thread in every worker's main process (one consumer group, auto-commit off) "
        "publishes one chain per event, then commits the batch's offsets; Celery does not deduplicate task ids, "
        "so an event redelivered after a crash before the commit runs again"
    )

    def unavailable_reason(self) -> str | None:
        try:
            import celery  # noqa: F401
            import kombu.transport.redis  # noqa: F401
            import redis  # noqa: F401
        except ImportError as exc:
            return f"pip install 'celery[redis]' ({exc})"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        # Every value, its rule and its source: README.md in this folder.
        visibility = max(10.0, 20.0 * workload.step_duration_s)
        return {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "worker_disable_prefetch": False,
            "worker_pool": "prefork",
            "worker_concurrency": 2 * _cpus(),
            "visibility_timeout": visibility,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": visibility,
            "task_track_started": False,
            "result_backend_db": 1,
            "result_expires": 7 * 86400,
            "submit_threads": 16,
            "broker_pool_limit": 16,
            "broker_connection_retry_on_startup": True,
            "worker_without_mingle": False,
            "worker_without_gossip": False,
            "worker_without_heartbeat": False,
        }

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for package in ("celery", "kombu", "redis", "billiard", "confluent-kafka"):
            try:
                out[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                out[package] = "missing"
        return out

    def prepare(self, ctx: EngineContext) -> None:
        """Nothing to create: Celery declares its queue on first use. Checks that Redis answers."""
        import redis

        client = redis.Redis.from_url(ctx.endpoints["redis"])
        try:
            client.ping()
        finally:
            client.close()

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.celery.worker"]

    async def open_client(self, ctx: EngineContext) -> CeleryClient:
        client = CeleryClient(ctx)
        await asyncio.to_thread(client._broker.ping)
        return client
