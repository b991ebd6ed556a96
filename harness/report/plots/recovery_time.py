"""Chart: Recovery time per fault and engine."""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis import runs as runs_mod
from harness.analysis.runs import Run
from harness.report.plots.common import (
    FAULT_COLOR,
    RunsArg,
    all_faults,
    as_runs,
    color,
    engine_names,
    engine_runs,
    new_figure,
    no_data,
)

RECOVERY_BARS = (("first_progress_s", "first progress of an affected workflow", "#6baed6"),
                 ("all_done_s", "every affected workflow done", "#08519c"),
                 ("throughput_recovered_s", "throughput back to >= 90% of pre-fault", "#fd8d3c"))


REPEATS_AS_ONE = 6  # a fault repeated more often (``every``) is one row: median and min-max of its strikes


def _rows(rs: list[Run]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(engine, label, entries) per row: each fault, or a fault repeated more than REPEATS_AS_ONE times
    (``f0.0``, ``f0.1`` ...) as one row over its strikes."""
    rows: list[tuple[str, str, list[dict[str, Any]]]] = []
    for name in engine_names(rs):
        groups: dict[str, list[str]] = {}
        for er in engine_runs(rs, name):
            for f in er.faults:
                ids = groups.setdefault(runs_mod.fault_group(f["fault_id"]), [])
                if f["fault_id"] not in ids:
                    ids.append(f["fault_id"])
        for base, ids in groups.items():
            if len(ids) > REPEATS_AS_ONE:
                entries = [f for er in engine_runs(rs, name) for f in er.faults if f["fault_id"] in ids]
                first = min(entries, key=lambda f: f["start_s"])
                label = (f"{name}\n{base} {first['kind']} {first['target']} x{len(ids)} from {first['start_s']:.1f}s"
                         f"\n(median, min-max of the strikes)")
                rows.append((name, label, entries))
                continue
            for fid in ids:
                entries = [f for er in engine_runs(rs, name) for f in er.faults if f["fault_id"] == fid]
                first = entries[0]
                label = f"{name}\n{fid} {first['kind']} {first['target']} at {first['start_s']:.1f}s"
                rows.append((name, label, entries))
    return rows


def recovery(ax: Axes, runs: RunsArg) -> Axes:
    """Recovery per fault and engine (seconds after the fault): first progress, all affected done,
    throughput back; bars at the median with min-max whiskers over repetitions (and over the strikes of
    a fault repeated more than REPEATS_AS_ONE times)."""
    rs = as_runs(runs)
    rows = _rows(rs)
    if not rows:
        return no_data(ax, "no faults were injected in this scenario")
    height = 0.8 / len(RECOVERY_BARS)
    right = 0.0
    for row, (_name, _label, entries) in enumerate(rows):
        if all(e.get("affected") == 0 for e in entries):
            ax.text(0, row, " no affected workflow (none had a step running on the target): nothing to recover",
                    va="center", fontsize=8, color="#555555")
            continue
        for j, (key, _, bar_color) in enumerate(RECOVERY_BARS):
            y = row + (j - 1) * height
            s = runs_mod.spread([e.get(key) for e in entries])
            if s is None:
                unfinished = max(e.get("affected_unfinished", 0) for e in entries)
                why = {"first_progress_s": "no affected workflow made progress",
                       "all_done_s": f"never ({unfinished} affected workflows unfinished)",
                       "throughput_recovered_s": "throughput not back to 90% of pre-fault"}[key]
                ax.text(0, y, f" {why}", va="center", fontsize=7, color=FAULT_COLOR)
                continue
            lo, med, hi = s
            ax.barh(y, med, height=height * 0.9, color=bar_color, edgecolor="white")
            if hi > lo:
                ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], fmt="none", ecolor="black", lw=1, capsize=2)
            note = " (no dip)" if key == "throughput_recovered_s" and hi == 0 else ""
            ax.text(hi, y, f" {med:.2f}s{note}", va="center", fontsize=7)
            right = max(right, hi)
        affected = runs_mod.spread([e.get("affected") for e in entries])
        if affected:
            ax.text(1.0, row, f"{affected[1]:g} affected ", transform=ax.get_yaxis_transform(), ha="right",
                    va="center", fontsize=7, color="#555555")
    ax.set_yticks(range(len(rows)), [label for _, label, _ in rows], fontsize=8)
    for tick, (name, _, _) in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(color(name))
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first fault on top
    ax.set_xlim(0, max(right, 0.1) * 1.35)
    ax.set_xlabel("seconds after the fault" + ("" if len(rs) == 1 else " (bar: median, whiskers: min-max of runs)"))
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=c, label=text) for _, text, c in RECOVERY_BARS], fontsize=8,
              loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    return ax


def build(rs: list[Run]) -> Figure | None:
    if not all_faults(rs):
        return None
    n_rows = len(_rows(rs))
    fig, (ax,) = new_figure(rs, "Recovery time per fault and engine", panel_h=max(2.6, 0.75 * n_rows + 1.0))
    recovery(ax, rs)
    return fig
