"""Chart panel: the Kafka consumer group's lag over time, a line per engine (``events.lag.series`` of
summary.json, sampled every second by harness/run/eventsource.py), fault windows shaded."""

from __future__ import annotations

from matplotlib.axes import Axes

from harness.report.plots.common import RunsArg, all_faults, color, engine_names, engine_runs, no_data, shade_faults


def lag_panel(ax: Axes, runs: RunsArg) -> Axes:
    """Lag (events produced and not yet committed by the consumer group) against seconds from the load start;
    a gap where a sample failed (the broker down)."""
    drawn = False
    for name in engine_names(runs):
        for i, er in enumerate(engine_runs(runs, name)):
            series = (er.summary.get("events") or {}).get("lag", {}).get("series") or []
            if not series:
                continue
            xs = [t for t, _ in series]
            ys = [float("nan") if lag is None else lag for _, lag in series]  # a failed sample: a gap
            ax.plot(xs, ys, color=color(name), lw=1.2, label=name if i == 0 else None)
            drawn = True
    if not drawn:
        return no_data(ax, "consumer lag: not sampled")
    shade_faults(ax, all_faults(runs))
    ax.set_xlabel("s from load start")
    ax.set_ylabel("events behind")
    ax.set_title("consumer lag (committed offsets vs high watermarks, every 1 s)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return ax
