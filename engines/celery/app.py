"""The Celery app shared by the worker and the client: configuration and the one step task.

Imported only by the worker and by the engine's client (it imports celery at module level).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery, chain

from harness.workload import StepRunner

TASK_NAME = "durabench.step"
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
    producer; with a result backend Celery would SUBSCRIBE to a pub/sub channel per submission)."""
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

    @app.task(name=TASK_NAME)
    def step(payload: str, workflow_id: str, index: int) -> str:
        # ``payload`` is the previous step's return value, which a chain prepends to the args.
        # Celery has no redelivery counter (request.retries counts explicit retries only).
        del payload
        if _runner is None:
            raise RuntimeError("the step task runs only in a durabench Celery worker")
        return _runner.run(workflow_id, index, None)

    return app


def workflow(app: Celery, workflow_id: str, steps: int) -> chain:
    """One workflow = a chain of ``steps`` step tasks; step i has task id ``<workflow_id>:<i>``."""
    step = app.tasks[TASK_NAME]
    sigs = [step.s("", workflow_id, 0).set(task_id=task_id(workflow_id, 0))]
    sigs += [step.s(workflow_id, i).set(task_id=task_id(workflow_id, i)) for i in range(1, steps)]
    return chain(*sigs, app=app)
