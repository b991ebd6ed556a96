"""Chart: CPU and memory of every component over time."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis.runs import Run
from harness.report.plots.common import (
    RunsArg,
    color,
    engine_names,
    engine_runs,
    new_figure,
    no_data,
    shade_faults,
    shade_warmup,
)


def has_resources(runs: RunsArg) -> bool:
    return any(er.resources is not None for name in engine_names(runs) for er in engine_runs(runs, name))


def resource_usage(ax: Axes, runs: RunsArg, engine: str, field: str = "cpu_percent") -> Axes:
    """CPU (% of one core) or RSS (MiB) over time per component of one engine's run; drawn only
    when the run measured resources (engines/<engine>/resources.jsonl)."""
    ers = [er for er in engine_runs(runs, engine) if er.resources is not None]
    if not ers:
        return no_data(ax, f"{engine}: resource usage not measured in this run")
    for er in ers[:1]:
        frame = er.resources
        assert frame is not None
        for k, (component, rows) in enumerate(frame.groupby("component")):
            rows = rows.dropna(subset=[field])  # noqa: PLW2901  # PSS is sampled less often than CPU and RSS
            values = rows[field] / 2**20 if field.endswith("_bytes") else rows[field]
            ax.plot(rows["t_s"], values, lw=1.2, marker="." if field == "pss_bytes" else None, ms=3,
                    label=str(component), color=f"C{k % 10}")
        shade_warmup(ax, er.manifest["scenario"])
        shade_faults(ax, er.faults)
    ax.set_title(engine, loc="left", fontsize=10, color=color(engine), fontweight="bold")
    ax.set_ylabel({"cpu_percent": "CPU (% of one core)", "rss_bytes": "RSS (MiB)",
                   "pss_bytes": "PSS (MiB, shared pages divided)"}.get(field, field))
    ax.set_xlabel("s from load start")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 1.0), ncols=4, frameon=False, borderaxespad=0.1)
    return ax


def build(rs: list[Run]) -> Figure | None:
    if not has_resources(rs):
        return None
    names = [n for n in engine_names(rs) if any(er.resources is not None for er in engine_runs(rs, n))]
    fig, axes = new_figure(rs, "Resource usage over time", rows=len(names), cols=2, panel_h=2.4)
    for i, name in enumerate(names):
        frames = [er.resources for er in engine_runs(rs, name) if er.resources is not None]
        memory = "pss_bytes" if any(f["pss_bytes"].notna().any() for f in frames) else "rss_bytes"
        resource_usage(axes[2 * i], rs, name, "cpu_percent")
        resource_usage(axes[2 * i + 1], rs, name, memory)
    return fig
