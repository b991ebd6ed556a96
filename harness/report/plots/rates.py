"""Chart: Offered vs achieved rate."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.analysis import runs as runs_mod
from harness.analysis.runs import Run
from harness.report.plots.common import (
    FAULT_COLOR,
    RunsArg,
    as_runs,
    color,
    engine_names,
    engine_runs,
    new_figure,
    no_data,
)


def offered_vs_achieved(ax: Axes, runs: RunsArg) -> Axes:
    """Per engine: offered rate, achieved submission rate and completed throughput (workflows/s)
    in the measured window; whiskers on throughput: per-second min-max (one run) or min-max of runs."""
    rs = as_runs(runs)
    names = engine_names(rs)
    if not names:
        return no_data(ax, "no engine ran")
    bars = (("offered_rate_per_s", "offered"), ("achieved_rate_per_s", "submitted (achieved)"),
            ("throughput_per_s", "completed (throughput)"))
    width = 0.8 / len(bars)
    top = 0.0
    for i, name in enumerate(names):
        ers = engine_runs(rs, name)
        engine_top = 0.0
        for j, (key, text) in enumerate(bars):
            s = runs_mod.spread([er.summary.get(key) for er in ers])
            if s is None:
                continue
            lo, mid, hi = s
            x = i + (j - 1) * width
            style: dict[str, Any] = {"color": color(name), "alpha": (0.25, 0.55, 1.0)[j], "edgecolor": color(name)}
            if j == 0:
                style.update(hatch="//", facecolor="none", alpha=1.0)
            ax.bar(x, mid, width=width * 0.92, label=text if i == 0 else None, **style)
            if key == "throughput_per_s" and len(ers) == 1:
                per_s = ers[0].per_second_throughput()
                if per_s:
                    lo, hi = min([*per_s, mid]), max([*per_s, mid])
                    ax.plot(x, float(np.median(per_s)), "_", color="black", ms=10)
            if hi > lo:
                ax.errorbar(x, mid, yerr=[[mid - lo], [hi - mid]], fmt="none", ecolor="black", lw=1, capsize=3)
            ax.text(x, hi, f"{mid:.1f}", ha="center", va="bottom", fontsize=7)
            engine_top = max(engine_top, hi)
        top = max(top, engine_top)
        warnings = [text for key, text in (("driver_fell_behind", "driver fell behind"),
                                           ("engine_fell_behind", "engine did not keep up"))
                    if any(er.summary.get(key) for er in ers)]
        if warnings:
            ax.text(i, engine_top * 1.12 + 1, "\n".join(warnings), ha="center", va="bottom", fontsize=8,
                    color=FAULT_COLOR)
    ax.set_xticks(range(len(names)), names)
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        tick.set_color(color(name))
    ax.set_ylim(0, top * 1.35 if top else 1)
    ax.set_ylabel("workflows/s (measured window)")
    whiskers = ("per-second min-max, tick = per-second median" if len(rs) == 1 else "min-max of runs")
    handles, _ = ax.get_legend_handles_labels()
    handles = [Patch(facecolor="none", edgecolor="black", hatch="//", label="offered"),
               Patch(facecolor="grey", alpha=0.55, label="submitted (achieved)"),
               Patch(facecolor="grey", label=f"completed (throughput; whiskers: {whiskers})")]
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return ax


def build(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Offered vs achieved rate", panel_h=3.6)
    offered_vs_achieved(ax, rs)
    return fig
