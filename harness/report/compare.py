"""``durabench compare RUN_DIR RUN_DIR...``: runs side by side, per engine, with ratios.

Each argument is a *side*: a run directory, or a directory holding repeated runs of one
configuration (pooled: median with [min-max]). The first side is the baseline; every other side
gets a ratio column. A value is marked ``*`` when it lies beyond the runs' own spread: its
[min-max] range and the baseline's do not overlap. The spread of a side of several runs is the
min-max over the runs; of a single run, the min-max of the same figure computed on equal slices
of its measured window (harness.runs.SUB_WINDOWS); a count or a recovery time of a single run
has no spread and is never marked. Counts (lost, unknown, duplicated, replayed) show the difference.

Sides whose durability profiles or resolved scenarios differ are refused (exit 2) unless
``--force``, which compares them with the mismatch printed above the tables and in the headers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis.checker import verdict_label
from harness.analysis.runs import (
    SUB_WINDOWS,
    EngineRun,
    Run,
    check_repetitions,
    load_group,
    scenario_differences,
    spread,
)
from harness.errors import UserError
from harness.report.tables import text_table

Getter = Callable[[dict[str, Any]], float | None]


def _key(name: str) -> Getter:
    return lambda d: _float(d.get(name))


def _lat(metric: str, pct: str) -> Getter:
    return lambda d: _float((d.get(metric) or {}).get(pct))


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Metric:
    label: str
    get: Getter
    windowed: bool  # has a per-slice value in EngineRun.sub_windows (a single run's own spread)
    higher_is_better: bool = False
    count: bool = False  # compared by difference, not ratio


METRICS: tuple[Metric, ...] = (
    Metric("throughput wf/s", _key("throughput_per_s"), True, higher_is_better=True),
    Metric("achieved rate wf/s", _key("achieved_rate_per_s"), True, higher_is_better=True),
    Metric("e2e p50 ms", _lat("e2e_latency_ms", "p50"), True),
    Metric("e2e p90 ms", _lat("e2e_latency_ms", "p90"), True),
    Metric("e2e p99 ms", _lat("e2e_latency_ms", "p99"), True),
    Metric("e2e p99.9 ms", _lat("e2e_latency_ms", "p99.9"), True),
    Metric("e2e max ms", _lat("e2e_latency_ms", "max"), True),
    Metric("step overhead p50 ms", _lat("step_overhead_ms", "p50"), True),
    Metric("step overhead p99 ms", _lat("step_overhead_ms", "p99"), True),
    Metric("pickup p50 ms", _lat("pickup_latency_ms", "p50"), True),
    Metric("submit p50 ms", _lat("submit_latency_ms", "p50"), True),
    Metric("lost", _key("lost"), False, count=True),
    Metric("unknown", _key("unknown"), False, count=True),
    Metric("dup steps", _key("duplicated_steps"), False, count=True),
    Metric("replayed", _key("replayed_completed_steps"), False, count=True),
)


@dataclass
class Side:
    label: str
    arg: str
    runs: list[Run]

    @property
    def durability(self) -> str:
        return self.runs[0].durability

    def engine_runs(self, engine: str) -> list[EngineRun]:
        return [r.engines[engine] for r in self.runs if engine in r.engines and r.engines[engine].ok]

    def figure(self, engine: str, get: Getter, windowed: bool) -> tuple[float, float, float, bool] | None:
        """(min, middle, max, has_spread): over the runs, or for one run over slices of its window."""
        ers = self.engine_runs(engine)
        if not ers:
            return None
        if len(ers) > 1:
            s = spread([get(er.summary) for er in ers])
            return None if s is None else (*s, True)
        value = get(ers[0].summary)
        if value is None:
            return None
        if not windowed:
            return value, value, value, False
        subs = spread([get(w) for w in ers[0].sub_windows])
        if subs is None:
            return value, value, value, False
        return min(subs[0], value), value, max(subs[2], value), True


def sides_from(args: list[str]) -> list[Side]:
    sides = []
    for i, arg in enumerate(args):
        runs = load_group([Path(arg)])
        check_repetitions(runs)
        sides.append(Side(chr(ord("A") + i) if i < 26 else f"S{i}", arg, runs))
    return sides


def mismatches(sides: list[Side]) -> list[str]:
    """Lines naming every durability profile or scenario difference against the baseline."""
    base = sides[0]
    out = []
    for side in sides[1:]:
        if side.durability != base.durability:
            out.append(f"durability profiles differ: {base.label} {base.durability}, {side.label} {side.durability}")
        diffs = [d for d in scenario_differences(base.runs[0], side.runs[0]) if not d.startswith("durability:")]
        if diffs:
            more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            names = f"{base.label} {base.runs[0].scenario_name}, {side.label} {side.runs[0].scenario_name}"
            out.append(f"scenarios differ ({names}): {'; '.join(diffs[:3])}{more}")
    return out


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else f"{v:g}"


def _cell(fig: tuple[float, float, float, bool] | None) -> str:
    if fig is None:
        return "-"
    lo, mid, hi, has_spread = fig
    return _fmt(mid) + (f" [{_fmt(lo)}-{_fmt(hi)}]" if has_spread else "")


def _ratio(base: tuple[float, float, float, bool] | None, other: tuple[float, float, float, bool] | None,
           count: bool = False) -> str:
    """``x1.32`` (or ``+2`` for a count), with ``*`` when beyond both sides' spread."""
    if base is None or other is None:
        return "-"
    beyond = base[3] and other[3] and (other[0] > base[2] or other[2] < base[0])
    mark = "*" if beyond else ""
    if count:
        delta = other[1] - base[1]
        return ("same" if delta == 0 else f"{delta:+g}") + mark
    if base[1] == 0:
        return ("same" if other[1] == 0 else f"+{_fmt(other[1])}") + mark
    return f"x{other[1] / base[1]:.2f}{mark}"


def engine_table(sides: list[Side], engine: str) -> list[list[str]]:
    base = sides[0]
    header = ["metric"] + [f"{s.label}" for s in sides] + [f"{s.label}/{base.label}" for s in sides[1:]]
    rows = [header]
    verdicts = []
    for side in sides:
        ers = side.engine_runs(engine)
        vs = [verdict_label(er.summary) for er in ers]
        if not vs:
            verdicts.append("did not run" if any(engine in r.engines for r in side.runs) else "-")
        elif len(set(vs)) == 1:
            verdicts.append(vs[0])
        else:
            verdicts.append(f"{vs.count('correct')}/{len(vs)} correct")
    differs = len({v for v in verdicts if v != "-"}) > 1
    rows.append(["verdict", *verdicts, *(["DIFFERS" if differs and v != verdicts[0] else "" for v in verdicts[1:]])])
    for metric in METRICS:
        figs = [s.figure(engine, metric.get, metric.windowed) for s in sides]
        if all(f is None for f in figs):
            continue
        rows.append([metric.label, *(_cell(f) for f in figs), *(_ratio(figs[0], f, metric.count) for f in figs[1:])])
    fault_ids = list(dict.fromkeys(f["fault_id"] for s in sides for er in s.engine_runs(engine) for f in er.faults))
    for fid in fault_ids:
        desc = next(f"{f['kind']} {f['target']}" for s in sides for er in s.engine_runs(engine) for f in er.faults
                    if f["fault_id"] == fid)
        for key, label in (("first_progress_s", "first progress s"), ("all_done_s", "all done s"),
                           ("throughput_recovered_s", "throughput back s")):
            def get(summary: dict[str, Any], fid: str = fid, key: str = key) -> float | None:
                entry = next((f for f in summary.get("recovery", []) if f["fault_id"] == fid), None)
                return None if entry is None else _float(entry.get(key))
            figs = [s.figure(engine, get, windowed=False) for s in sides]
            if all(f is None for f in figs):
                continue
            rows.append([f"{fid} {desc}: {label}", *(_cell(f) for f in figs),
                         *(_ratio(figs[0], f) for f in figs[1:])])
    return rows


def side_lines(side: Side, base: Side, forced: list[str]) -> list[str]:
    from harness.report import plots

    first = side.runs[0]
    n = len(side.runs)
    flag = ""
    if side is not base and side.durability != base.durability:
        flag = f"   <-- DURABILITY {side.durability.upper()} != {base.durability.upper()}"
    elif side is not base and forced and scenario_differences(base.runs[0], first):
        flag = "   <-- SCENARIO DIFFERS"
    rev = (first.manifest["harness"].get("git_revision") or "no git")[:12]
    dates = sorted(r.created_at for r in side.runs)
    when = dates[0] if n == 1 else f"{dates[0]} .. {dates[-1]}"
    m = first.machine
    baseline = " (baseline)" if side is base else ""
    lines = [f"{side.label}{baseline}: {side.arg}  [n={n} run{'s' if n > 1 else ''}]{flag}",
             f"   scenario {first.scenario_name}, durability {side.durability}, {when}, durabench "
             f"{first.manifest['harness']['version']} ({rev}), {m.get('cpus', '?')} CPUs {m.get('cpu_model', '')}",
             f"   versions: {plots.versions_line(side.runs)}"]
    return lines


def render(sides: list[Side], forced: list[str]) -> str:
    from harness.report import plots

    base = sides[0]
    out: list[str] = []
    if forced:
        bar = "!" * 100
        out += [bar, "!! MISMATCHED RUNS (compared because of --force): these numbers are NOT like for like", *(
            f"!!   {line}" for line in forced), bar, ""]
    for side in sides:
        out += side_lines(side, base, forced)
    machines = {(s.runs[0].machine.get("cpus"), s.runs[0].machine.get("cpu_model")) for s in sides}
    if len(machines) > 1:
        out.append("note: the runs come from different machines; compare ratios between engines, not absolute times")
    out += ["",
            f"Cells: value [min-max spread]. Spread of n>1 runs: min-max over the runs; of one run: over "
            f"{SUB_WINDOWS} equal slices of its measured window (counts and recovery times of one run have none).",
            "Ratios: side / baseline (counts: difference); "
            "* = beyond both sides' own spread (their [min-max] ranges do not overlap).",
            ""]
    engines: list[str] = []
    for side in sides:
        for run in side.runs:
            engines += [n for n in run.engines if n not in engines]
    for engine in engines:
        out += [f"== {engine} ==", text_table(engine_table(sides, engine)), ""]
    out.append(plots.LIMITS_SHORT)
    return "\n".join(out)


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise UserError("compare needs at least two runs (or directories of runs); "
                        "to compare the engines of one run, read its report")
    sides = sides_from(args.runs)
    problems = mismatches(sides)
    if problems and not args.force:
        raise UserError(f"{problems[0]}{' (and more)' if len(problems) > 1 else ''}: such runs are not comparable; "
                        "pass --force to compare them anyway, labelled as mismatched")
    print(render(sides, problems))
    if not args.fail_on_regression:
        return 0
    found = regressions(sides)
    if not found:
        print(f"\nno regression beyond spread against {sides[0].label} (--fail-on-regression: pass)")
        return 0
    print(f"\nregressions beyond both sides' spread (--fail-on-regression: FAIL, exit code {EXIT_REGRESSION}):")
    print("\n".join(f"  {line}" for line in found))
    return EXIT_REGRESSION


EXIT_REGRESSION = 1


def regressions(sides: list[Side]) -> list[str]:
    """Every figure where a side is worse than the baseline beyond both sides' spread (the ``*`` of the
    tables, in the bad direction): ``B dbos e2e p99 ms: 120 [110-130] vs A 80 [75-85]``. Counts and
    recovery times of single runs have no spread and never count; an engine only one side ran is a
    regression too (it did not run)."""
    base = sides[0]
    out: list[str] = []
    engines = list(dict.fromkeys(n for side in sides for run in side.runs for n in run.engines))
    for side in sides[1:]:
        for engine in engines:
            if base.engine_runs(engine) and not side.engine_runs(engine):
                out.append(f"{side.label} {engine}: did not run (it ran in {base.label})")
                continue
            for metric in METRICS:
                a = base.figure(engine, metric.get, metric.windowed)
                b = side.figure(engine, metric.get, metric.windowed)
                if a is None or b is None or not (a[3] and b[3]):
                    continue
                worse = b[2] < a[0] if metric.higher_is_better else b[0] > a[2]
                if worse:
                    out.append(f"{side.label} {engine} {metric.label}: {_cell(b)} vs {base.label} {_cell(a)}")
    return out


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="line up runs side by side with ratios, marking differences beyond spread")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories, or directories of repeated runs (pooled); the first is the baseline")
    p.add_argument("--force", action="store_true",
                   help="compare runs with different durability profiles or scenarios (labelled as mismatched)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help=f"exit {EXIT_REGRESSION} when a side is worse than the baseline beyond both sides' spread "
                        "(for CI between two versions of an engine)")
    p.set_defaults(func=cmd_compare)
