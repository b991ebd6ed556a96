"""DBOS adapter: workflows checkpointed into the Postgres the harness runs (dbos 3.x, Python).

The harness process never launches DBOS (a process-global singleton): ``prepare`` migrates the
system database and registers the queue in a short bootstrap subprocess, workers launch DBOS
themselves, and the driver only uses ``DBOSClient`` (enqueue) and plain SQL (lookup). The code
the ``dbos-go`` adapter shares (system database, bootstrap, client, lookup) is in
``engines.dbos_common``. See README.md in this folder for every setting and its source.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from engines.dbos_common import (
    DbosClient,
    helper_config,
    open_dbos_client,
    package_versions,
    recreate_database,
    run_bootstrap,
    run_database_url,
)
from harness.contract import STAGE_KINDS, EngineContext, EventRef, Workload

STEP_NAME = "durabench_step"


def executor_id(settings: dict[str, Any], run_id: str, worker_index: int) -> str:
    """Stable per worker identity: the same after a restart, so the worker recovers its own work."""
    return str(settings["executor_id_pattern"]).format(run_id=run_id, worker_index=worker_index)


class DbosEngine:
    name: ClassVar[str] = "dbos"
    description: ClassVar[str] = (
        "DBOS Transact (Python): async workflows on a Postgres-backed queue, DBOSClient enqueues"
    )
    services: ClassVar[tuple[str, ...]] = ("postgres",)
    recovery_settings: ClassVar[tuple[str, ...]] = ("polling_interval_s",)
    # integration cost (harness/integration.py): the workflow a user writes, the defaults moved (README)
    workflow_code: ClassVar[tuple[str, ...]] = ("worker.py:durabench_step,durabench_workflow",)
    changed_defaults: ClassVar[dict[str, Any]] = {
        "polling_interval_s": 1.0,
        "worker_concurrency": None,
        "sys_db_pool_size": 20,
        "max_executor_threads": None,
        "client_pool_size": 5,
        "application_version": "<hash of the workflow source>",
        "executor_id_pattern": "local",
    }
    # Every stage kind, natively (README "Programs"): steps, step retries, child workflows,
    # DBOS.sleep, DBOS.recv / send, a datasource transaction in the application database.
    stages: ClassVar[Mapping[str, str | None]] = dict.fromkeys(STAGE_KINDS)
    # load.source: kafka (README "Events"): DBOS's own Kafka integration in every worker
    event_consumer: ClassVar[str] = (
        "DBOS.kafka_consumer in every worker (one consumer group), each event's workflow enqueued on the durabench "
        "queue; a redelivered event is deduplicated by the workflow id kafka-unique-id-{topic}-{partition}-"
        "{group_id}-{offset}"
    )

    # read in dbos/_kafka.py (3.4.0): DBOS forces the offset store off and auto-commit on
    event_consumer_settings: ClassVar[dict[str, Any]] = {
        "auto.offset.reset": "earliest", "enable.auto.offset.store": False, "enable.auto.commit": True,
        "auto.commit.interval.ms": "librdkafka default (5000)", "batch_size": 250,
        "commit": "offsets stored after the batch's workflows are enqueued in one transaction; auto-commit flushes",
        "session.timeout.ms": "librdkafka default (45000)", "group.protocol": "librdkafka default (classic)",
        "queue": "the run's queue (queue_name)",
    }

    def event_workflow_id(self, ref: EventRef) -> str:
        """The workflow DBOS's Kafka consumer starts for an event (dbos/_kafka.py ``_build_status``)."""
        return f"kafka-unique-id-{ref.topic}-{ref.partition}-{ref.group_id}-{ref.offset}"

    def unavailable_reason(self) -> str | None:
        for module, package in (("dbos", "dbos==3.4.0"), ("psycopg", "psycopg[binary]")):
            if importlib.util.find_spec(module) is None:
                return f"pip install {package}"
        return None

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        return {
            "database": "durabench_dbos",  # dedicated system database, dropped and recreated by prepare
            "queue_name": "durabench",
            "worker_concurrency": 1000,  # per worker; DBOS's own queue benchmark default
            "polling_interval_s": 0.05,  # queue poll period (DBOS default 1.0 s quantizes latency)
            "sys_db_pool_size": 10,  # per worker (DBOS default 20; its benchmark uses 5)
            "max_executor_threads": 512,  # DBOS's own benchmark; DBOS default is unbounded
            "client_pool_size": 8,  # driver-side DBOSClient pool and enqueue threads (DBOSClient default 5)
            "application_version": "durabench-1",  # explicit: a source hash would change with every edit
            "executor_id_pattern": "durabench-{run_id}-w{worker_index}",
            "app_db_pool_size": 5,  # the application database datasource's pool, per worker (effect stages)
            "child_poll_interval_s": 0.05,  # a parallel stage awaits its branch workflows (get_result default 1 s)
        }

    def versions(self) -> dict[str, str]:
        return package_versions("dbos", "sqlalchemy", "psycopg", "confluent-kafka")

    def prepare(self, ctx: EngineContext) -> None:
        """Recreate the system database, then migrate it and register the queue in a subprocess."""
        recreate_database(ctx.endpoints["postgres"], str(ctx.settings["database"]))
        run_bootstrap([sys.executable, "-m", "engines.dbos.worker", "--bootstrap"],
                      helper_config(ctx, "dbos-bootstrap"), ctx.work_dir / "dbos-bootstrap.log", "DBOS")

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        return [sys.executable, "-m", "engines.dbos.worker"]

    async def open_client(self, ctx: EngineContext) -> DbosClient:
        url = run_database_url(ctx)
        return DbosClient(await open_dbos_client(url, ctx.settings), url, ctx.settings)
