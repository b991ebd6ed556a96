"""Charts of a run, or of repeated runs of one scenario, drawn only from the files of the runs.

Two levels, used the same way by the report and the notebooks:

- plot functions ``f(ax, runs, ...) -> ax`` draw one panel from a :class:`harness.analysis.runs.Run` or a
  list of runs (repetitions of one scenario; each run is drawn, so the spread shows);
- :func:`figure` composes the panels of a named chart (:data:`CHARTS`) into a figure titled with
  what it shows and footed with the context that makes it reproducible: scenario, durability
  profile, engine and server versions, machine, the number of runs, and the limits of the
  embedded stand-ins. It returns None when the runs hold nothing to draw (say, no faults).

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state, no backend switch): the report
saves them as PNG, a notebook displays them. Time axes are seconds from the load start; fault
windows (fault start to heal) are shaded and labelled with the fault's kind and target.
A single run is labelled n=1 and shows its own spread (per-second throughput, or the metric on
equal slices of the measured window, harness.runs.SUB_WINDOWS); repeated runs show min-max.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.figure import Figure

from harness.analysis.runs import Run
from harness.report.plots import (
    database,
    latency_time,
    overhead,
    programs,
    rates,
    recovery_time,
    resources,
    spectrum,
    throughput,
    usecase,
)
from harness.report.plots.common import (
    LIMITS_SHORT,
    PERCENTILE_BARS,
    RunsArg,
    as_runs,
    context_lines,
    engine_names,
    new_figure,
    shade_faults,
    versions_line,
)
from harness.report.plots.latency_time import latency_over_time
from harness.report.plots.overhead import step_overhead
from harness.report.plots.programs import effect_duplicates, timer_lateness, wasted_calls
from harness.report.plots.rates import offered_vs_achieved
from harness.report.plots.recovery_time import recovery
from harness.report.plots.resources import has_resources, resource_usage
from harness.report.plots.spectrum import latency_spectrum
from harness.report.plots.throughput import throughput_over_time

__all__ = [
    "CHARTS",
    "LIMITS_SHORT",
    "PERCENTILE_BARS",
    "ChartSpec",
    "context_lines",
    "effect_duplicates",
    "engine_names",
    "figure",
    "has_resources",
    "latency_over_time",
    "latency_spectrum",
    "new_figure",
    "offered_vs_achieved",
    "recovery",
    "resource_usage",
    "shade_faults",
    "step_overhead",
    "throughput_over_time",
    "timer_lateness",
    "versions_line",
    "wasted_calls",
]


@dataclass(frozen=True)
class ChartSpec:
    name: str  # file stem: charts/<name>.png
    title: str
    caption: str  # what the chart shows and how to read it
    build: Callable[[list[Run]], Figure | None]


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("use-case", "Use case",
              "The figures that answer the use-case scenario's question (the answer table above), one panel each, "
              "a bar per engine (median of the runs, whiskers min-max); for exactly-once-events, below them, the "
              "Kafka consumer group's lag over time (a gap where the broker did not answer), faults shaded; drawn "
              "only for a scenario with a usecase key.",
              usecase.build),
    ChartSpec("throughput", "Throughput over time",
              "Completed workflows per second (by durable completion time) for each engine, with the offered rate "
              "(dashed), the warmup (hatched) and every fault window shaded from the fault to its heal.",
              throughput.build),
    ChartSpec("latency-spectrum", "Latency percentile spectrum",
              "End-to-end latency (intended start to durable completion, no coordinated omission) at every "
              "percentile of the measured window, both axes logarithmic; the dot is the maximum.",
              spectrum.build),
    ChartSpec("latency-over-time", "Latency over time",
              "Each dot is one workflow's end-to-end latency at its intended start; lines are the per-second "
              "p50 and p99; crosses mark workflows that never completed.",
              latency_time.build),
    ChartSpec("recovery", "Recovery per fault",
              "Seconds from each fault to the first progress of a workflow it interrupted, to the completion of "
              "the last one, and until throughput was back at 90% of the pre-fault median "
              "(harness/analysis/metrics.py).",
              recovery_time.build),
    ChartSpec("step-overhead", "Per-step orchestration overhead",
              "Per-step overhead: end-to-end latency minus the time the steps' own work took, divided by the "
              "number of steps (queueing and checkpointing included), at p50, p90, p99 and p99.9.",
              overhead.build),
    ChartSpec("rates", "Offered vs achieved rate",
              "The offered rate, the rate the driver achieved and the completed throughput in the measured window; "
              "an engine that cannot keep up completes less than was submitted.",
              rates.build),
    ChartSpec("resources", "Resource usage over time",
              "CPU and resident memory of every component over time (drawn only when the run measured them).",
              resources.build),
    ChartSpec("database", "What each engine does in PostgreSQL",
              "Per step, from pg_stat_statements and pg_stat_database (harness/analysis/statements.py): WAL bytes "
              "by statement category (checkpoints, queue and polling, visibility, other) and transactions by "
              "database (main, visibility). Bars are the per-workflow part: the rate measured while idle "
              "(polling, housekeeping; written above each bar) times the load's seconds is subtracted first.",
              database.build),
    ChartSpec("timer-lateness", "Timer lateness",
              "Every durable timer's lateness (fired minus due) per engine: a box with its points; below zero is "
              "an early fire, a violation (harness/analysis/program_checks.py).",
              programs.build_timers),
    ChartSpec("wasted-calls", "Retry amplification and wasted calls",
              "Requests that reached the flaky API per logical call; annotated with the wasted calls, requests "
              "made after the call had been answered 200 (its result lost in a crash).",
              programs.build_calls),
    ChartSpec("effect-duplicates", "Effect duplicates",
              "Effects applied more than once or never, counted from the application table itself, with the "
              "program's idempotency (none or key).",
              programs.build_effects),
)


def figure(name: str, runs: RunsArg) -> Figure | None:
    """The named chart (see CHARTS) for a run or repeated runs; None when there is nothing to draw."""
    for spec in CHARTS:
        if spec.name == name:
            return spec.build(as_runs(runs))
    raise KeyError(f"no chart {name!r}; charts: {', '.join(s.name for s in CHARTS)}")
