"""Chart: End-to-end latency by percentile."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from harness.analysis.runs import Run
from harness.report.plots.common import (
    SPECTRUM_TICKS,
    RunsArg,
    color,
    engine_names,
    engine_runs,
    log_ms_axis,
    new_figure,
    no_data,
    spread_text,
)


def _spectrum_points(hist: Any) -> tuple[np.ndarray, np.ndarray]:
    """(1 / (1 - percentile), value ms) along an HdrHistogram; the max sits at x = count."""
    n = hist.get_total_count()
    xs, ys = [], []
    for item in hist.get_percentile_iterator(5):
        p = item.percentile_level_iterated_to / 100
        xs.append(min(1 / (1 - p), n) if p < 1 else n)
        ys.append(hist.get_highest_equivalent_value(item.value_iterated_to) / 1000)
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def latency_spectrum(ax: Axes, runs: RunsArg, metric: str = "e2e_latency") -> Axes:
    """Latency by percentile, HdrHistogram style: percentile on a log scale of 1/(1-p), latency on
    a log scale; one line per engine and run (repetitions in the same colour)."""
    top = 1.0
    drawn = False
    for name in engine_names(runs):
        ers = engine_runs(runs, name)
        for i, er in enumerate(ers):
            hist = er.histograms.get(metric)
            if hist is None or hist.get_total_count() == 0:
                continue
            xs, ys = _spectrum_points(hist)
            label = None
            if i == 0:
                label = f"{name} (n={hist.get_total_count()}): " + ", ".join(
                    f"{key} {spread_text([(e.summary.get(f'{metric}_ms') or {}).get(key) for e in ers])}"
                    for key in ("p50", "p99", "max")) + " ms" + (f"; {len(ers)} runs" if len(ers) > 1 else "")
            ax.plot(xs, ys, drawstyle="steps-post", color=color(name), lw=1.8 if i == 0 else 1.0,
                    alpha=1 if i == 0 else 0.6, label=label)
            ax.plot(xs[-1:], ys[-1:], "o", color=color(name), ms=4)
            top = max(top, xs[-1])
            drawn = True
    if not drawn:
        return no_data(ax, f"no {metric.replace('_', ' ')} recorded")
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_ms_axis(ax.yaxis)
    ticks = [t for t in SPECTRUM_TICKS if t <= top * 1.01]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: SPECTRUM_TICKS.get(round(v), "")))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(1, top * 1.3)
    ax.set_xlabel("percentile (log scale of 1/(1-p); the dot is the max)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (ms, log)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False)
    return ax


def build(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "End-to-end latency by percentile, intended start to durable completion", panel_h=4.2)
    latency_spectrum(ax, rs, "e2e_latency")
    return fig
