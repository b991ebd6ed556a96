"""What every chart shares: engine colours, the context footer, fault and warmup shading, log axes,
spread labels and the figure frame (:func:`new_figure`)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.analysis import runs as runs_mod
from harness.analysis.runs import EngineRun, Run

WIDTH_IN = 10.0
DPI = 110
FOOTER_WRAP = 185  # characters per footer line at FOOTER_FONT
FOOTER_FONT = 7
ENGINE_COLORS = {"dbos": "#1f77b4", "temporal": "#ff7f0e", "temporal-local": "#2ca02c", "celery": "#d62728",
                 "memory": "#7f7f7f", "dbos-go": "#17becf", "temporal-go": "#bcbd22", "absurd": "#9467bd",
                 "restate": "#8c564b", "procrastinate": "#e377c2"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FAULT_COLOR = "#b22222"
LIMITS_SHORT = ("Limits: the Temporal dev server is single-shard SQLite (a lower bound for a production cluster); "
                "Valkey stands in for Redis; Restate runs as one node; servers, workers and driver share this "
                "machine (compare engines "
                "within a run; absolute times do not carry across machines).")
SPECTRUM_TICKS = {1: "0%", 2: "50%", 10: "90%", 100: "99%", 1_000: "99.9%", 10_000: "99.99%", 100_000: "99.999%"}
PERCENTILE_BARS = ("p50", "p90", "p99", "p99.9")

RunsArg = Run | Sequence[Run]


def as_runs(runs: RunsArg) -> list[Run]:
    return [runs] if isinstance(runs, Run) else list(runs)


def engine_names(runs: RunsArg) -> list[str]:
    """Engines that ran (status ok) in any of the runs, in scenario order."""
    names: list[str] = []
    for run in as_runs(runs):
        names += [n for n, e in run.engines.items() if e.ok and n not in names]
    return names


VARIANT_SHADES = (-0.3, 0.35, -0.55, 0.6)  # towards black (< 0) or white (> 0), by the variant's order
_variants_seen: dict[str, list[str]] = {}  # engine -> its variants, in the order charts first asked


def color(engine: str) -> str:
    """An engine's colour; ``engine@variant`` a shade of its engine's (variants of one engine told apart
    by the order they first appear, which is the scenario's), so that variants of two engines never
    share a colour."""
    base, _, variant = engine.partition("@")
    hue = ENGINE_COLORS.get(base) or OTHER_COLORS[sum(map(ord, base)) % len(OTHER_COLORS)]
    if not variant:
        return hue
    seen = _variants_seen.setdefault(base, [])
    if variant not in seen:
        seen.append(variant)
    amount = VARIANT_SHADES[seen.index(variant) % len(VARIANT_SHADES)]
    target = 255 if amount > 0 else 0
    rgb = [int(hue[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (target - c) * abs(amount)):02x}" for c in rgb)


def engine_runs(runs: RunsArg, engine: str) -> list[EngineRun]:
    return [r.engines[engine] for r in as_runs(runs) if engine in r.engines and r.engines[engine].ok]


def n_label(runs: RunsArg) -> str:
    n = len(as_runs(runs))
    return "n=1 run" if n == 1 else f"n={n} runs"


# ---------------------------------------------------------------- context footer

def _short_version(text: str) -> str:
    server = re.search(r"Server (\d[\w.]*)", text)
    if server:
        return f"server {server.group(1)}"
    found = re.findall(r"\d+\.\d+(?:\.\d+)?", text)
    return found[-1] if found else text


def versions_line(runs: RunsArg) -> str:
    """``dbos: dbos 3.4.0 + postgres 18.6; temporal, temporal-local: temporalio 1.35.0 + temporal server 1.32.0``"""
    by_text: dict[str, list[str]] = {}
    for name in engine_names(runs) or [n for r in as_runs(runs) for n in r.engines]:
        texts = []
        for run in as_runs(runs):
            er = run.engines.get(name)
            if er is None:
                continue
            pkgs = er.info.get("versions", {})
            main = next(iter(pkgs.items()), None)
            parts = [f"{main[0]} {main[1]}"] if main else []
            parts += [f"{svc} {_short_version(str(d.get('version', '?')))}"
                      for svc, d in er.info.get("services", {}).items()]
            texts.append(" + ".join(parts) or "-")
        text = " | ".join(dict.fromkeys(texts))  # distinct versions across repetitions
        by_text.setdefault(text, []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in by_text.items())


def scenario_line(run: Run) -> str:
    sc = run.scenario
    wl, load, workers = sc["workload"], sc["load"], sc["workers"]
    if load["mode"] == "open":
        rate = f"open loop {load['rate']:g} wf/s"
    else:
        rate = f"closed loop, {load['concurrency']} in flight"
    faults = ", ".join(f"{f['kind']} {f['target']} at {f['at']:g}s"
                       + (f" every {f['every']:g}s" if f.get("every") else "")
                       for f in sc.get("faults", [])) or "none"
    shape = (f"a program of {wl['steps']} stages ({', '.join(s['kind'] for s in wl['program'])})"
             if wl.get("program") else f"{wl['steps']} steps x {wl['step_duration'] * 1000:g} ms")
    return (f"Scenario {sc['name']}: {shape}, {rate}, "
            f"warmup {load['warmup']:g}s + measured {load['duration']:g}s, {workers['count']} workers; "
            f"faults: {faults}")


def context_lines(runs: RunsArg, wrap: int | None = FOOTER_WRAP) -> list[str]:
    """What every chart and table states: scenario, durability, versions, machine, n, limits
    (lines wrapped at ``wrap`` characters for a figure footer; None: one line each)."""
    rs = as_runs(runs)
    first = rs[0]
    m = first.machine
    machines = {(r.machine.get("cpus"), r.machine.get("cpu_model")) for r in rs}
    machine = f"{m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory_bytes', 0) / 2**30:.0f} GiB"
    if len(machines) > 1:
        machine += " (MACHINES DIFFER between runs)"
    ids = ", ".join(r.run_id for r in rs[:3]) + (f" and {len(rs) - 3} more" if len(rs) > 3 else "")
    lines = [
        f"{scenario_line(first)} | durability profile: {first.durability} | {n_label(rs)}: {ids}",
        f"Versions: {versions_line(rs)} | machine: {machine} | durabench {first.manifest['harness']['version']}"
        f" ({(first.manifest['harness'].get('git_revision') or 'no git')[:12]})",
        LIMITS_SHORT,
    ]
    return lines if wrap is None else [part for line in lines for part in textwrap.wrap(line, wrap)]


# ---------------------------------------------------------------- shared decorations

def shade_faults(ax: Axes, faults: Sequence[dict[str, Any]], label: bool = True) -> Axes:
    """Shade every fault window (start to heal) and label it with id, kind and target.

    A fault without a heal time (``end_s`` null) is drawn as a line only. Faults with the same id
    (the same fault across engines or repetitions) are labelled once; a repeated fault (``f0.0``,
    ``f0.1`` ...) once, at its first strike, with how many strikes it had."""
    strikes: dict[str, set[str]] = {}  # a repeated fault's base id -> its strikes' ids
    first: dict[str, float] = {}
    for f in faults:
        if f.get("start_s") is not None and "." in str(f.get("fault_id", "")):
            base = runs_mod.fault_group(f["fault_id"])
            strikes.setdefault(base, set()).add(str(f["fault_id"]))
            first[base] = min(first.get(base, float(f["start_s"])), float(f["start_s"]))
    labelled: set[str] = set()
    for f in faults:
        start, end = f.get("start_s"), f.get("end_s")
        if start is None:
            continue
        if end is not None and end > start:
            ax.axvspan(start, end, color=FAULT_COLOR, alpha=0.12, lw=0, zorder=0)
        ax.axvline(start, color=FAULT_COLOR, lw=0.9, ls="--", zorder=1)
        name, key = str(f.get("fault_id", "")), f"{f.get('fault_id')}@{start:.1f}"
        base = runs_mod.fault_group(name)
        if base in strikes:  # a repeated fault: one label, at its first strike
            if float(start) != first[base]:
                continue
            name, key = f"{base} x{len(strikes[base])}", f"{base}@repeated"
        if label and key not in labelled:
            labelled.add(key)
            healed = "" if end is not None else " (not healed)"
            ax.text(start, 0.98, f" {name} {f['kind']} {f['target']}{healed} ",
                    transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right", fontsize=7,
                    color=FAULT_COLOR, zorder=5, bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 0.3})
    return ax


def fault_legend_handle() -> Patch:
    return Patch(facecolor=FAULT_COLOR, alpha=0.25, edgecolor=FAULT_COLOR, ls="--",
                 label="fault window (fault to heal)")


def all_faults(runs: RunsArg, engines: Sequence[str] | None = None) -> list[dict[str, Any]]:
    names = engines if engines is not None else engine_names(runs)
    return [f for name in names for er in engine_runs(runs, name) for f in er.faults]


def shade_warmup(ax: Axes, scenario: dict[str, Any]) -> Axes:
    """Hatch the warmup (not measured) and mark the end of the load."""
    warmup = scenario["load"]["warmup"]
    if warmup > 0:
        ax.axvspan(0, warmup, facecolor="none", edgecolor="#bbbbbb", hatch="///", lw=0, zorder=0)
        ax.text(warmup / 2, 0.02, "warmup", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=7, color="#777777")
    end = warmup + scenario["load"]["duration"]
    ax.axvline(end, color="#555555", lw=0.8, ls=":")
    ax.text(end, 0.02, " load end", transform=ax.get_xaxis_transform(), ha="left", va="bottom", fontsize=7,
            color="#555555")
    return ax


def log_ms_axis(axis: Any) -> Any:
    """A logarithmic millisecond axis labelled in plain numbers: 1, 2, 5, 10, 20, 50... or, when the
    data spans less than a decade, at every integer multiple (60, 70, 80, 90, 100, 200...)."""
    lo, hi = sorted(axis.get_view_interval())
    narrow = lo > 0 and hi / lo < 10
    every = tuple(float(k) for k in range(1, 10))
    axis.set_major_locator(LogLocator(base=10, subs=every if narrow else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(float(k) for k in range(1, 10))))
    axis.set_minor_formatter(NullFormatter())
    return axis


def no_data(ax: Axes, text: str) -> Axes:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def num(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def spread_text(values: Sequence[float | None]) -> str:
    s = runs_mod.spread(values)
    if s is None:
        return "-"
    lo, mid, hi = s
    return num(mid) if lo == hi else f"{num(mid)} [{num(lo)}-{num(hi)}]"


def percentile_spread(ers: Sequence[EngineRun], metric: str, key: str) -> tuple[float, float, float] | None:
    """Median and min-max of a latency figure: over the runs, or for one run over sub-windows."""
    if len(ers) > 1:
        return runs_mod.spread([(er.summary.get(metric) or {}).get(key) for er in ers])
    er = ers[0]
    value = (er.summary.get(metric) or {}).get(key)
    if value is None:
        return None
    subs = runs_mod.spread([(w.get(metric) or {}).get(key) for w in er.sub_windows])
    if subs is None:
        return value, value, value
    return min(subs[0], value), value, max(subs[2], value)



def new_figure(runs: RunsArg, title: str, rows: int = 1, cols: int = 1, panel_h: float = 3.8,
               sharex: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows x cols`` panels, the title and the context footer."""
    footer = context_lines(runs)
    footer_h = 0.135 * len(footer) + 0.08
    main_h = panel_h * rows + 0.45
    fig = Figure(figsize=(WIDTH_IN, main_h + footer_h), dpi=DPI, layout="constrained")
    grid_fig = fig.add_gridspec(2, 1, height_ratios=[main_h, footer_h])
    top, bottom = fig.add_subfigure(grid_fig[0]), fig.add_subfigure(grid_fig[1])
    grid = top.add_gridspec(rows, cols)
    axes: list[Axes] = []
    for r in range(rows):
        for c in range(cols):
            share = axes[0] if sharex and axes else None
            axes.append(top.add_subplot(grid[r, c], sharex=share))
    bottom.text(0.01, 0.98, "\n".join(footer), va="top", ha="left", fontsize=FOOTER_FONT, color="#444444",
                linespacing=1.35)
    top.suptitle(f"{title} ({n_label(runs)})", fontsize=12, fontweight="bold", x=0.01, ha="left")
    return fig, axes
