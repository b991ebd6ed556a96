"""Chart: the answer of a use-case scenario (its ``usecase:`` key), one panel per figure the use
case charts (harness/report/usecase.py), a bar per engine (median of the runs, whiskers min-max)."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis import runs as runs_mod
from harness.analysis.runs import Run
from harness.report import usecase as uc
from harness.report.plots.common import RunsArg, as_runs, color, new_figure, no_data
from harness.report.plots.eventlag import lag_panel


def usecase_of(runs: RunsArg) -> str | None:
    name = as_runs(runs)[0].scenario.get("usecase")
    return str(name) if name in uc.USE_CASES else None


def use_case_panel(ax: Axes, runs: RunsArg, header: str) -> Axes:
    """Bars of one figure of the use case's answer table, per engine."""
    rs = as_runs(runs)
    name = usecase_of(rs)
    if name is None:
        return no_data(ax, "not a use-case scenario")
    values: dict[str, list[float | None]] = {}
    for run in rs:
        for col, per_engine in uc.chart_values(name, run.summary):
            if col == header:
                for engine, value in per_engine.items():
                    values.setdefault(engine, []).append(value)
    engines = [e for e, vs in values.items() if any(v is not None for v in vs)]
    if not engines:
        return no_data(ax, f"{header}: not measured")
    for i, engine in enumerate(engines):
        lo, mid, hi = runs_mod.spread(values[engine]) or (0.0, 0.0, 0.0)
        ax.bar(i, mid, width=0.6, color=color(engine))
        if hi > lo:
            ax.errorbar(i, mid, yerr=[[mid - lo], [hi - mid]], fmt="none", ecolor="black", lw=1, capsize=3)
        ax.text(i, hi, f"{mid:,.0f}" if abs(mid) >= 1000 else f"{mid:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(engines)), engines, rotation=20, fontsize=8)
    ax.set_title(header, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, max(1.0, max((runs_mod.spread(values[e]) or (0, 0, 0))[2] for e in engines) * 1.2))
    return ax


def build(rs: list[Run]) -> Figure | None:
    name = usecase_of(rs)
    if name is None:
        return None
    headers = [c.header for c in uc.USE_CASES[name].columns if c.chart]
    if name in uc.TIMELINE_USE_CASES:  # the bars, then the consumer lag over time below them
        fig, axes = new_figure(rs, f"Use case: {name}", rows=2, cols=len(headers), panel_h=3.0)
        for ax in axes[len(headers) + 1:]:
            ax.remove()
        for ax, header in zip(axes, headers, strict=False):
            use_case_panel(ax, rs, header)
        wide = axes[len(headers)]
        spec = wide.get_subplotspec()
        assert spec is not None  # made by new_figure's grid
        wide.set_subplotspec(spec.get_gridspec()[1, :])
        lag_panel(wide, rs)
        return fig
    fig, axes = new_figure(rs, f"Use case: {name}", cols=len(headers), panel_h=3.4)
    for ax, header in zip(axes, headers, strict=True):
        use_case_panel(ax, rs, header)
    return fig
