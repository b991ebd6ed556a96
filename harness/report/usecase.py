"""The "Use case" section of a report: the question a use-case scenario answers (its ``usecase:``
key), one answer table (a row per engine, or engine@variant) and the figures its chart draws.

A pure function of summary.json. The figures come from the checker and the metrics
(harness/analysis/) and, for workflow programs, from the program checks (``program`` in each
engine's summary, docs/results.md); a figure a run did not measure shows as ``-``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Getter = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Column:
    header: str
    get: Getter
    digits: int = 1
    chart: bool = False  # one panel of the use case's chart


@dataclass(frozen=True)
class UseCase:
    name: str
    question: str
    columns: tuple[Column, ...]
    reading: str  # how to read the table: what each figure counts and where it comes from


def _dig(e: dict[str, Any], *path: str) -> Any:
    value: Any = e
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pct_of_accepted(key: str) -> Getter:
    def get(e: dict[str, Any]) -> float | None:
        accepted = _num(e.get("acknowledged"))
        value = _num(e.get(key))
        return None if not accepted or value is None else 100.0 * value / accepted
    return get


def _latency_s(pct: str) -> Getter:
    return lambda e: None if (v := _num(_dig(e, "e2e_latency_ms", pct))) is None else v / 1000


def _path(*path: str) -> Getter:
    return lambda e: _num(_dig(e, *path))


def _per_1000_accepted(*path: str) -> Getter:
    def get(e: dict[str, Any]) -> float | None:
        accepted, value = _num(e.get("acknowledged")), _num(_dig(e, *path))
        return None if not accepted or value is None else 1000.0 * value / accepted
    return get


def _recovery_s(e: dict[str, Any]) -> float | None:
    """Longest time from a fault to the completion of the last workflow it affected."""
    done = [_num(f.get("all_done_s")) for f in e.get("recovery") or []]
    present = [d for d in done if d is not None]
    return max(present) if present else None


def _resume_s(e: dict[str, Any]) -> float | None:
    """Longest per-workflow delay from a fault to the next step start of a workflow it interrupted."""
    delays = [_num(_dig(f, "resume_delay_s", "max")) for f in e.get("recovery") or []]
    present = [d for d in delays if d is not None]
    return max(present) if present else None


COMPLETED = Column("completed %", _pct_of_accepted("completed"))
LOST = Column("lost", _path("lost"), 0)
UNFINISHED = Column("unfinished", _path("unfinished"), 0)  # still pending in the engine at the end: not lost

USE_CASES: dict[str, UseCase] = {u.name: u for u in (
    UseCase(
        "ai-agent",
        "An AI agent calls an unreliable LLM API and tools, and its worker is killed now and then: does every "
        "run finish, how long does it take, and how many paid LLM calls are made twice?",
        (COMPLETED, Column("p50 s", _latency_s("p50")), Column("p99 s", _latency_s("p99"), chart=True),
         Column("retry amplification", _path("program", "calls", "retry_amplification"), 2, chart=True),
         Column("wasted calls /1000 wf", _per_1000_accepted("program", "calls", "wasted_calls"), chart=True),
         Column("recovery s", _recovery_s), LOST, UNFINISHED),
        "Retry amplification: requests the flaky API received per logical call (the engine's retries). Wasted "
        "calls: requests made after the same call had already been answered successfully (a step re-run after a "
        "kill: a call the user pays for twice), per 1,000 accepted workflows, counted by the API itself. "
        "Recovery: from each kill to the completion of the last workflow it interrupted (the longest).",
    ),
    UseCase(
        "data-pipeline",
        "A pipeline fans out to many items and aggregates them while a worker is killed: how long does a batch "
        "take, and how much of it is done again?",
        (COMPLETED, Column("makespan p50 s", _latency_s("p50")), Column("makespan p99 s", _latency_s("p99"),
                                                                        chart=True),
         Column("items re-executed", _path("program", "branches", "branch_steps_reexecuted"), 0, chart=True),
         Column("steps re-executed", _path("extra_step_executions"), 0),
         Column("work lost s", _path("reexecution", "work_lost_s"), 1),
         Column("steps/s", _path("steps_per_s"), 1, chart=True), LOST, UNFINISHED),
        "Makespan: intended start of the batch to its durable completion. Items re-executed: executions of the "
        "fan-out's items beyond each one's first; steps re-executed: the same for any step, items included (the "
        "external ledger), and the worker time they took (work lost). "
        "Steps/s: step ends (the list, the items and the aggregate) per second of the measured window.",
    ),
    UseCase(
        "business-process",
        "An order reserves stock, charges a card without an idempotency key, waits for approval and a durable "
        "timer, then ships, while the store restarts and a worker dies mid-charge: is anyone charged twice, is "
        "any order lost, and how late do timers and signals resume it?",
        (COMPLETED, Column("double charges", _path("program", "effects", "extra_applications"), 0, chart=True),
         Column("lost orders", _path("lost"), 0, chart=True), Column("unfinished orders", _path("unfinished"), 0),
         Column("timer late p50 ms", _path("program", "timers", "lateness_ms", "p50")),
         Column("timer late p99 ms", _path("program", "timers", "lateness_ms", "p99"), chart=True),
         Column("signal->resume p50 ms", _path("program", "signals", "signal_to_resume_ms", "p50")),
         Column("signal->resume p99 ms", _path("program", "signals", "signal_to_resume_ms", "p99"))),
        "Double charges: rows of the application table beyond one per order and effect (the effects with an "
        "idempotency key are deduplicated by it, so the extra rows are charges). Timer lateness: firing minus "
        "due time of the durable sleep. Signal to resume: the approval sent to the workflow resuming.",
    ),
    UseCase(
        "background-jobs",
        "Jobs of minutes run in one step at a low rate and a worker is killed mid-job: does a job run twice with "
        "no fault at all, how much work is thrown away, and how long until a killed job resumes?",
        (COMPLETED, Column("dup without fault", _path("reexecution", "duplicates_without_fault"), 0, chart=True),
         Column("dup steps", _path("duplicated_steps"), 0),
         Column("work lost s", _path("reexecution", "work_lost_s"), 0, chart=True),
         Column("resume after kill s", _resume_s, 1, chart=True), LOST, UNFINISHED),
        "Dup without fault: jobs that started a second time with no fault hitting the first run in between "
        "(a visibility or activity timeout shorter than the job redelivered it while it ran). Work lost: "
        "worker-seconds of executions that were not the one kept (harness/analysis/reexecution.py). "
        "Resume after kill: the longest delay from a kill to the next start of a job it interrupted.",
    ),
    UseCase(
        "exactly-once-events",
        "Events arrive on Kafka and each must change the application database exactly once while a consumer is "
        "killed, the broker restarts and the store restarts: how many events are applied never, once, twice, how "
        "long from produce to effect, and how far does the consumer fall behind?",
        (Column("events", _path("events", "events_acknowledged"), 0),
         Column("applied 0", _path("events", "applied_0"), 0, chart=True),
         Column("applied 1", _path("events", "applied_1"), 0),
         Column("applied >1", _path("events", "applied_more"), 0, chart=True),
         Column("p50 ms", _path("events", "produce_to_effect_ms", "p50"), 0),
         Column("p99 ms", _path("events", "produce_to_effect_ms", "p99"), 0, chart=True),
         Column("lag peak", _path("events", "lag", "peak"), 0)),
        "Events: produces the broker acknowledged (acks=all, idempotent producer). Applied 0 / 1 / >1: the rows "
        "the application table holds per acknowledged event (its effect has no idempotency key: only the engine "
        "keeps it to once). p50/p99: produce acknowledgement to the effect row's commit time. Lag peak: the most "
        "events produced and not yet committed by the consumer group, sampled every second (the chart's lower "
        "panel, over time).",
    ),
)}
TIMELINE_USE_CASES = ("exactly-once-events",)  # their chart adds the consumer lag over time


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if digits else str(round(value))


def table(usecase: str, summary: dict[str, Any]) -> list[list[str]]:
    """The answer table: a header, then a row per engine (engines that did not run say so)."""
    uc = USE_CASES[usecase]
    rows = [["engine", *(c.header for c in uc.columns)]]
    for name, e in summary["engines"].items():
        if e.get("status") in ("error", "skipped") and "e2e_latency_ms" not in e:
            rows.append([name, e.get("status", "error").upper(), *["-"] * (len(uc.columns) - 1)])
            continue
        rows.append([name, *(_fmt(c.get(e), c.digits) for c in uc.columns)])
    return rows


def chart_values(usecase: str, summary: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """(column header, {engine: value}) for each figure the use case's chart draws."""
    uc = USE_CASES[usecase]
    ran = {n: e for n, e in summary["engines"].items() if "e2e_latency_ms" in e}
    return [(c.header, {n: c.get(e) for n, e in ran.items()}) for c in uc.columns if c.chart]
