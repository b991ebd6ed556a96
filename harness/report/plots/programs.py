"""Charts of workflow programs: timer lateness, wasted calls, effect duplicates (one function each).

Drawn from the ``program`` object of each engine's summary and, for the lateness distribution,
from ``checker.json`` (every timer's lateness). Repeated runs are drawn side by side per engine.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness import results
from harness.analysis.runs import EngineRun, Run
from harness.report.plots.common import RunsArg, as_runs, color, engine_names, engine_runs, new_figure, no_data


def _program(er: EngineRun) -> dict[str, Any]:
    program: dict[str, Any] = er.summary.get("program") or {}
    return program


def _lateness_values(er: EngineRun) -> list[float]:
    path = er.dir / "checker.json"
    if not path.is_file():
        return []
    values: list[float] = ((results.read_json(path).get("program") or {}).get("timers") or {}).get(
        "lateness_values_ms", [])
    return values


def timer_lateness(ax: Axes, runs: RunsArg) -> Axes:
    """Every timer's lateness (fired minus due, ms) per engine as a box with its points; a point
    below zero is an early fire (a violation). Symmetric-log y axis: early, on-time and late."""
    rs = as_runs(runs)
    data = []
    for name in engine_names(rs):
        values = [v for er in engine_runs(rs, name) for v in _lateness_values(er)]
        if values:
            data.append((name, values))
    if not data:
        return no_data(ax, "no timer fired (no sleep stage)")
    positions = list(range(1, len(data) + 1))
    box = ax.boxplot([v for _, v in data], positions=positions, widths=0.5, showfliers=False, patch_artist=True)
    for patch, (name, _) in zip(box["boxes"], data, strict=True):
        patch.set_facecolor(color(name))
        patch.set_alpha(0.35)
    for pos, (name, values) in zip(positions, data, strict=True):
        xs = [pos + (i % 7 - 3) * 0.03 for i in range(len(values))]
        ax.scatter(xs, values, s=6, color=color(name), alpha=0.7, zorder=3)
        early = sum(1 for v in values if v < 0)
        ax.annotate(f"n={len(values)}, max {max(values):.0f} ms" + (f", {early} EARLY" if early else ""),
                    (pos, max(values)), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(positions, [name for name, _ in data])
    ax.set_ylabel("lateness: fired - due (ms, symlog)")
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def wasted_calls(ax: Axes, runs: RunsArg) -> Axes:
    """Per engine: API requests per logical call (retry amplification, bars) and the wasted calls
    (requests after the call had already been answered 200: its result lost), annotated."""
    rs = as_runs(runs)
    rows = []
    for name in engine_names(rs):
        for i, er in enumerate(engine_runs(rs, name)):
            calls = _program(er).get("calls")
            if calls and calls.get("retry_amplification") is not None:
                rows.append((name if i == 0 else f"{name} #{i + 1}", name, calls))
    if not rows:
        return no_data(ax, "no call reached the flaky API (no call stage)")
    xs = list(range(len(rows)))
    ax.bar(xs, [c["retry_amplification"] for _, _, c in rows], color=[color(n) for _, n, _ in rows], alpha=0.8)
    for x, (_, _, c) in zip(xs, rows, strict=True):
        ax.annotate(f"{c['retry_amplification']:.2f} req/call\n{c['wasted_calls']} wasted of {c['requests']}",
                    (x, c["retry_amplification"]), textcoords="offset points", xytext=(0, 4), ha="center",
                    fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(xs, [label for label, _, _ in rows])
    ax.set_ylabel("API requests per logical call")
    ax.set_ylim(bottom=0, top=max(c["retry_amplification"] for _, _, c in rows) * 1.35)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def effect_duplicates(ax: Axes, runs: RunsArg) -> Axes:
    """Per engine: effects applied more than once and never (counted from the application table),
    grouped by the idempotency the program used."""
    rs = as_runs(runs)
    rows = []
    for name in engine_names(rs):
        for i, er in enumerate(engine_runs(rs, name)):
            p = _program(er)
            if p.get("effects") and p["effects"].get("measured", True):  # not measured: no bar at all
                rows.append((name if i == 0 else f"{name} #{i + 1}", name, p["counts"], p["effects"]))
    if not rows:
        return no_data(ax, "no effect stage")
    xs = list(range(len(rows)))
    dup = [c["effects_duplicated"] for _, _, c, _ in rows]
    missing = [c["effects_missing"] for _, _, c, _ in rows]
    ax.bar([x - 0.18 for x in xs], dup, width=0.36, color=[color(n) for _, n, _, _ in rows], label="applied > 1")
    ax.bar([x + 0.18 for x in xs], missing, width=0.36, color="white", edgecolor=[color(n) for _, n, _, _ in rows],
           hatch="//", label="never applied")
    for x, (_, _, c, e) in zip(xs, rows, strict=True):
        ax.annotate(f"{e['rows']} rows, +{e['extra_applications']} extra\nidempotency {'/'.join(e['idempotency'])}",
                    (x, max(c["effects_duplicated"], c["effects_missing"])), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7)
    ax.set_xticks(xs, [label for label, _, _, _ in rows])
    ax.set_ylabel("effects (workflow, stage)")
    ax.set_ylim(bottom=0, top=max([*dup, *missing, 1]) * 1.4)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def _has(rs: list[Run], key: str) -> bool:
    return any(_program(er).get(key) for name in engine_names(rs) for er in engine_runs(rs, name))


def build_timers(rs: list[Run]) -> Figure | None:
    if not _has(rs, "timers"):
        return None
    fig, (ax,) = new_figure(rs, "Timer lateness (durable sleeps)", panel_h=3.6)
    timer_lateness(ax, rs)
    return fig


def build_calls(rs: list[Run]) -> Figure | None:
    if not _has(rs, "calls"):
        return None
    fig, (ax,) = new_figure(rs, "Retry amplification and wasted calls (flaky API)", panel_h=3.4)
    wasted_calls(ax, rs)
    return fig


def build_effects(rs: list[Run]) -> Figure | None:
    if not _has(rs, "effects"):
        return None
    fig, (ax,) = new_figure(rs, "Effect duplicates (application table)", panel_h=3.4)
    effect_duplicates(ax, rs)
    return fig
