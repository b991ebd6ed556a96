"""Chart: End-to-end latency over time, one panel per engine."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis.runs import Run
from harness.report.plots.common import (
    FAULT_COLOR,
    RunsArg,
    color,
    engine_names,
    engine_runs,
    fault_legend_handle,
    log_ms_axis,
    new_figure,
    no_data,
    shade_faults,
    shade_warmup,
)


def latency_over_time(ax: Axes, runs: RunsArg, engine: str) -> Axes:
    """End-to-end latency of every workflow by its intended start (dots), the per-second p50 and
    p99 (lines), workflows that never completed (crosses at the top), fault windows shaded."""
    ers = engine_runs(runs, engine)
    if not ers:
        return no_data(ax, f"{engine}: no data")
    c = color(engine)
    each = "" if len(ers) == 1 else " (a line per run)"
    lost_frames = [er.workflows[er.workflows["e2e_ms"].isna() & er.workflows["outcome"].isin(["ok", "unknown"])]
                   for er in ers]
    n_lost = sum(len(f) for f in lost_frames)
    for i, er in enumerate(ers):
        wf = er.workflows
        done = wf[wf["e2e_ms"].notna()]
        ax.scatter(done["intended_s"], done["e2e_ms"], s=5, color=c, alpha=0.35, lw=0,
                   label="one workflow" if i == 0 else None)
        if not done.empty:
            per_s = done.groupby(np.floor(done["intended_s"]))["e2e_ms"]
            alpha = 1.0 if i == 0 else 0.45
            ax.plot(per_s.median().index + 0.5, per_s.median(), color="black", lw=1.2, alpha=alpha,
                    label=f"per-second p50{each}" if i == 0 else None)
            ax.plot(per_s.quantile(0.99).index + 0.5, per_s.quantile(0.99), color="black", lw=1.0, ls="--",
                    alpha=alpha, label=f"per-second p99{each}" if i == 0 else None)
        lost = lost_frames[i]
        if not lost.empty:
            first_lost = all(f.empty for f in lost_frames[:i])
            ax.scatter(lost["intended_s"], np.full(len(lost), 0.96), transform=ax.get_xaxis_transform(),
                       marker="x", color=FAULT_COLOR, s=18, label=f"never completed ({n_lost})" if first_lost else None)
    shade_warmup(ax, ers[0].manifest["scenario"])
    shade_faults(ax, [f for er in ers for f in er.faults])
    if not any(er.workflows["e2e_ms"].notna().any() for er in ers):  # a log axis needs a positive range
        ax.set_ylim(1, 1000)
        ax.text(0.5, 0.5, "no workflow completed", transform=ax.transAxes, ha="center", va="center", fontsize=10,
                color="#555555")
    ax.set_yscale("log")
    log_ms_axis(ax.yaxis)
    ax.set_ylabel("e2e latency (ms, log)")
    ax.set_xlabel("intended start (s from load start)")
    ax.set_title(engine, loc="left", fontsize=10, color=c, fontweight="bold")
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if any(er.faults for er in ers):
        handles.append(fault_legend_handle())
    ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1, 1.0), ncols=len(handles),
              frameon=False, borderaxespad=0.1)
    return ax


def build(rs: list[Run]) -> Figure | None:
    names = engine_names(rs)
    if not names:
        return None
    fig, axes = new_figure(rs, "End-to-end latency over time", rows=len(names), panel_h=3.2 if len(names) == 1 else 2.6,
                           sharex=True)
    for ax, name in zip(axes, names, strict=True):
        latency_over_time(ax, rs, name)
        if ax is not axes[-1]:
            ax.set_xlabel("")
    return fig
