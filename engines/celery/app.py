"""The Celery app shared by the worker and the client: configuration and the one step task.

Imported only by the worker and by the engine's client (it imports celery at module level).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from celery import Celery, Task, chain, group
from celery.canvas import Signature

from harness import program
from harness.workload import StepRunner

TASK_NAME = "durabench.step"
CALL_TASK = "durabench.call"
EFFECT_TASK = "durabench.effect"
SLEEP_TASK = "durabench.sleep"
FIRE_TASK = "durabench.fire"
JOIN_TASK = "durabench.join"
EFFECT_RETRY_S = 1.0  # countdown before an effect task retries after a database error
EFFECT_MAX_RETRIES = 30
QUEUE = "celery"  # Celery's task_default_queue; kombu's Redis transport keeps it as a list of this name
RESULT_KEY_PREFIX = "celery-task-meta-"  # celery/backends/base.py KeyValueStoreBackend.task_keyprefix

_runner: StepRunner | None = None


def set_runner(runner: StepRunner) -> None:
    """Give the step task its StepRunner (the worker main process sets it before forking the pool)."""
    global _runner  # noqa: PLW0603 - prefork children inherit it through fork
    _runner = runner


def task_id(workflow_id: str, step: int) -> str:
    return f"{workflow_id}:{step}"


def with_db(url: str, db: int) -> str:
    """The same Redis server as ``url`` with database number ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def transport_options(settings: dict[str, Any]) -> dict[str, Any]:
    """kombu Redis transport options (kombu/transport/redis.py, Channel.from_transport_options)."""
    return {
        "visibility_timeout": settings["visibility_timeout"],
        "unacked_restore_interval": settings["unacked_restore_interval"],
        "unacked_restore_throttle": settings["unacked_restore_throttle"],
        "unacked_mutex_expire": settings["unacked_mutex_expire"],
    }


def make_app(broker_url: str, settings: dict[str, Any], *, results: bool = True) -> Celery:
    """The app of a worker (``results=True``: the step task stores its result in Redis db
    ``result_backend_db``) or of a submitting client (``results=False``: a fire-and-forget
    producer; with a result backend Celery would SUBSCRIBE to a pub/sub channel per submission).

    Its tasks are this app's own (``shared=False``): they close over this app (``sleep`` replaces itself
    with this app's ``fire``). Celery's default, ``shared=True``, also registers every decorated task with
    every app created later in the process, so a second app (the client of the next engine run, the event
    consumer of a worker) got the first app's functions under its task names, warned
    DuplicateTaskNameWarning once per name, and kept every earlier app reachable."""
    app = Celery("durabench", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=transport_options(settings),
        broker_pool_limit=settings["broker_pool_limit"],
        broker_connection_retry_on_startup=settings["broker_connection_retry_on_startup"],
        result_backend=with_db(broker_url, settings["result_backend_db"]) if results else None,
        result_expires=settings["result_expires"],
        task_acks_late=settings["task_acks_late"],
        task_reject_on_worker_lost=settings["task_reject_on_worker_lost"],
        task_track_started=settings["task_track_started"],
        worker_prefetch_multiplier=settings["worker_prefetch_multiplier"],
        worker_disable_prefetch=settings["worker_disable_prefetch"],
        worker_concurrency=settings["worker_concurrency"],
        worker_pool=settings["worker_pool"],
        worker_hijack_root_logger=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )

    def runner() -> StepRunner:
        if _runner is None:
            raise RuntimeError("durabench tasks run only in a durabench Celery worker")
        return _runner

    def branch_marks(workflow_id: str, bstart: list[int] | None, bend: list[int] | None, before: bool) -> None:
        """A branch's first task writes branch_start before its stage, its last branch_end after it."""
        if before and bstart:
            runner().branch_start(workflow_id, bstart[0], bstart[1])
        if not before and bend:
            runner().branch_end(workflow_id, bend[0], bend[1])

    @app.task(name=TASK_NAME, shared=False)
    def step(payload: str, workflow_id: str, index: int, bstart: list[int] | None = None,
             bend: list[int] | None = None) -> str:
        # ``payload`` is the previous step's return value, which a chain prepends to the args.
        # Celery has no redelivery counter (request.retries counts explicit retries only).
        del payload
        branch_marks(workflow_id, bstart, bend, True)
        out = runner().run(workflow_id, index, None)
        branch_marks(workflow_id, bstart, bend, False)
        return out

    @app.task(name=CALL_TASK, bind=True, shared=False)
    def call(self: Task, payload: object, workflow_id: str, index: int, bstart: list[int] | None = None,
             bend: list[int] | None = None) -> str:
        """One attempt; a failure retries through Celery's own ``Task.retry`` (a new message with a
        countdown: the stage's exponential backoff, at least the 429's Retry-After)."""
        del payload
        attempt = int(self.request.retries) + 1
        if attempt == 1:
            branch_marks(workflow_id, bstart, bend, True)
        retry = runner().stages[index]["retry"]
        try:
            runner().call(workflow_id, index, attempt)
        except program.CallFailed as exc:
            countdown = max(program.backoff_s(retry, attempt), exc.outcome.retry_after_s or 0.0)
            raise self.retry(exc=exc, countdown=countdown, max_retries=int(retry["max_attempts"]) - 1) from None
        branch_marks(workflow_id, bstart, bend, False)
        return ""

    @app.task(name=EFFECT_TASK, bind=True, shared=False)
    def effect(self: Task, payload: object, workflow_id: str, index: int, bstart: list[int] | None = None,
               bend: list[int] | None = None) -> str:
        """A task that inserts (idempotency none) or inserts if absent by key (idempotency key)."""
        import psycopg

        del payload
        branch_marks(workflow_id, bstart, bend, True)
        try:
            runner().effect(workflow_id, index, int(self.request.retries) + 1)
        except psycopg.OperationalError as exc:
            raise self.retry(exc=exc, countdown=EFFECT_RETRY_S, max_retries=EFFECT_MAX_RETRIES) from None
        branch_marks(workflow_id, bstart, bend, False)
        return ""

    @app.task(name=SLEEP_TASK, bind=True, shared=False)
    def sleep(self: Task, payload: object, workflow_id: str, index: int, bstart: list[int] | None = None,
              bend: list[int] | None = None) -> None:
        """A durable timer: replace this task by the fire task with an ETA (Celery's countdown/ETA; the
        rest of the chain follows the replacement). The ETA message waits in the broker or, once
        prefetched, unacked in a worker: a timer longer than the transport's visibility_timeout is
        redelivered (README "Programs")."""
        del payload
        branch_marks(workflow_id, bstart, None, True)
        seconds = float(runner().stages[index]["duration_s"])
        due_ns = time.time_ns() + int(seconds * 1e9)
        runner().timer_set(workflow_id, index, due_ns)
        eta = datetime.fromtimestamp(due_ns / 1e9, tz=UTC)
        raise self.replace(fire.si(workflow_id, index, due_ns, bend).set(eta=eta))

    @app.task(name=FIRE_TASK, shared=False)
    def fire(workflow_id: str, index: int, due_ns: int, bend: list[int] | None = None) -> str:
        runner().timer_fired(workflow_id, index, due_ns)
        branch_marks(workflow_id, None, bend, False)
        return ""

    @app.task(name=JOIN_TASK, shared=False)
    def join(results: list[object], workflow_id: str, index: int) -> str:
        """The chord body of a parallel stage: runs once every branch ended (Celery's fan-in)."""
        del results
        runner().join(workflow_id, index)
        return ""

    return app


STAGE_TASKS = {"work": TASK_NAME, "call": CALL_TASK, "effect": EFFECT_TASK, "sleep": SLEEP_TASK}


def _sequence(app: Celery, workflow_id: str, stages: list[dict[str, Any]],
              branch: tuple[int, int] | None = None) -> list[Signature]:
    sigs: list[Signature] = []
    for i, stage in enumerate(stages):
        kind, index = stage["kind"], stage["step"]
        if kind == "parallel":
            branches = [chain(*_sequence(app, workflow_id, sub, (index, b)), app=app)
                        for b, sub in enumerate(stage["branches"])]
            sigs.append(group(*branches, app=app))
            sigs.append(app.tasks[JOIN_TASK].s(workflow_id, index).set(task_id=task_id(workflow_id, index)))
            continue
        if kind not in STAGE_TASKS:
            raise ValueError(f"celery runs no {kind!r} stage")
        kwargs: dict[str, Any] = {}
        if branch is not None and i == 0:
            kwargs["bstart"] = list(branch)
        if branch is not None and i == len(stages) - 1:
            kwargs["bend"] = list(branch)
        task = app.tasks[STAGE_TASKS[kind]]
        # the first task of the workflow or of a branch: immutable, with an empty payload (a branch's
        # first task would otherwise get the result of the task before the group)
        sig = task.si("", workflow_id, index, **kwargs) if i == 0 else task.s(workflow_id, index, **kwargs)
        sigs.append(sig.set(task_id=task_id(workflow_id, index)))
    return sigs


def workflow(app: Celery, workflow_id: str, stages: list[dict[str, Any]]) -> chain:
    """One workflow = a canvas: a chain of stage tasks, a parallel stage a group of branch chains with
    a join task as chord body; stage i has task id ``<workflow_id>:<i>``."""
    return cast(chain, chain(*_sequence(app, workflow_id, stages), app=app))


def last_step(stages: list[dict[str, Any]]) -> int:
    """The step index of the workflow's last task (whose result marks the workflow complete)."""
    return int(stages[-1]["step"])
