"""Chart: Throughput over time, fault windows shaded."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis import runs as runs_mod
from harness.analysis.runs import Run
from harness.report.plots.common import (
    RunsArg,
    all_faults,
    as_runs,
    color,
    engine_names,
    engine_runs,
    fault_legend_handle,
    new_figure,
    no_data,
    shade_faults,
    shade_warmup,
)


def throughput_over_time(ax: Axes, runs: RunsArg) -> Axes:
    """Completed workflows per 1-s bucket per engine (summary's completions_per_s), the offered
    rate, warmup and load end, every fault window shaded and labelled."""
    rs = as_runs(runs)
    names = engine_names(rs)
    if not names:
        return no_data(ax, "no engine ran")
    for name in names:
        ers = engine_runs(rs, name)
        lo, mid, hi = runs_mod.spread([er.summary["throughput_per_s"] for er in ers]) or (0.0, 0.0, 0.0)
        value = f"{mid:.1f}" if len(ers) == 1 else f"median {mid:.1f} [{lo:.1f}-{hi:.1f}]"
        for i, er in enumerate(ers):
            buckets = er.summary.get("completions_per_s", [])
            ax.stairs(buckets, np.arange(len(buckets) + 1), color=color(name), lw=1.6 if i == 0 else 0.9,
                      alpha=1 if i == 0 else 0.6,
                      label=f"{name}: {value} wf/s in the measured window" if i == 0 else None)
    load = rs[0].scenario["load"]
    if load["mode"] == "open":
        ax.axhline(load["rate"], color="black", lw=1, ls="--", label=f"offered {load['rate']:g} wf/s")
    shade_warmup(ax, rs[0].scenario)
    shade_faults(ax, all_faults(rs))
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("s from load start (1-s buckets by completion time)")
    ax.set_ylabel("completed workflows/s")
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if all_faults(rs):
        handles.append(fault_legend_handle())
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    return ax


def build(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Throughput over time, fault windows shaded", panel_h=4.0)
    throughput_over_time(ax, rs)
    return fig
