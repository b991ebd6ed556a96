"""Chart: Per-step orchestration overhead at p50..p99.9, with the store's floor and the durability tax."""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.analysis import runs as runs_mod
from harness.analysis.runs import Run
from harness.report.plots.common import (
    PERCENTILE_BARS,
    RunsArg,
    as_runs,
    color,
    engine_names,
    engine_runs,
    log_ms_axis,
    new_figure,
    no_data,
    num,
    percentile_spread,
)


def step_overhead(ax: Axes, runs: RunsArg) -> Axes:
    """Per-step orchestration overhead ((e2e - step work) / steps) per engine at p50/p90/p99/p99.9,
    log scale; whiskers: min-max over repetitions, or for one run over slices of the window."""
    rs = as_runs(runs)
    names = [n for n in engine_names(rs) if any(er.summary.get("step_overhead_ms", {}).get("count")
                                                for er in engine_runs(rs, n))]
    if not names:
        return no_data(ax, "no completed workflow to measure")
    width = 0.8 / len(PERCENTILE_BARS)
    shades = ("#c6dbef", "#6baed6", "#2171b5", "#08306b")
    for i, name in enumerate(names):
        ers = engine_runs(rs, name)
        for j, key in enumerate(PERCENTILE_BARS):
            s = percentile_spread(ers, "step_overhead_ms", key)
            if s is None:
                continue
            lo, mid, hi = s
            x = i + (j - (len(PERCENTILE_BARS) - 1) / 2) * width
            ax.bar(x, mid, width=width * 0.92, color=shades[j], edgecolor=color(name), lw=1.2)
            ax.errorbar(x, mid, yerr=[[mid - lo], [hi - mid]], fmt="none", ecolor="black", lw=0.8, capsize=2)
            ax.text(x, hi * 1.08, num(mid), ha="center", va="bottom", fontsize=7, rotation=90)
    floors = False
    for i, name in enumerate(names):  # the store's durable-write floor: overhead / floor = durability tax
        taxes = [er.summary.get("durability_tax") or {} for er in engine_runs(rs, name)]
        floor = runs_mod.spread([t.get("store_floor_ms") for t in taxes])
        if floor is None:
            continue
        floors = True
        ax.hlines(floor[1], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2, zorder=4)
        tax = runs_mod.spread([t.get("tax") for t in taxes])
        ax.text(i, floor[1] * 1.08, f"{taxes[0].get('store', 'store')} floor {num(floor[1])} ms"
                + (f"\ntax x{num(tax[1])}" if tax else ""), va="bottom", ha="center", fontsize=7, zorder=5,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 0.5})
    ax.set_xticks(range(len(names)), names)
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        tick.set_color(color(name))
    ax.set_yscale("log")
    log_ms_axis(ax.yaxis)
    ax.set_ylim(top=ax.get_ylim()[1] * 3)
    ax.set_ylabel("orchestration overhead per step (ms, log)")
    whiskers = ("min-max of runs" if len(rs) > 1
                else f"min-max over {runs_mod.SUB_WINDOWS} slices of the measured window")
    handles: list[Any] = [Patch(facecolor=shade, edgecolor="#555555", label=key)
                          for key, shade in zip(PERCENTILE_BARS, shades, strict=True)]
    if floors:
        handles.append(Line2D([], [], color="black", ls="--", label="store floor: one durable write, p50 "
                              "(durability tax = p50 overhead / floor)"))
    ax.legend(handles=handles, title=f"percentile (whiskers: {whiskers})", fontsize=8, title_fontsize=8, ncols=5,
              loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False, alignment="left")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    return ax


def build(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Per-step orchestration overhead: (e2e - step work) / steps", panel_h=3.8)
    step_overhead(ax, rs)
    return fig
