"""Charts of a run, or of repeated runs of one scenario, drawn only from the files of the runs.

Two levels, used the same way by the report and the notebooks:

- plot functions ``f(ax, runs, ...) -> ax`` draw one panel from a :class:`harness.runs.Run` or a
  list of runs (repetitions of one scenario; each run is drawn, so the spread shows);
- :func:`figure` composes the panels of a named chart (:data:`CHARTS`) into a figure titled with
  what it shows and footed with the context that makes it reproducible: scenario, durability
  profile, engine and server versions, machine, the number of runs, and the limits of the
  embedded stand-ins. It returns None when the runs hold nothing to draw (say, no faults).

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state, no backend switch): the report
saves them as PNG, a notebook displays them. Time axes are seconds from the load start; fault
windows (fault start to heal) are shaded and labelled with the fault's kind and target.
A single run is labelled n=1 and shows its own spread (per-second throughput, or the metric on
equal slices of the measured window, harness.runs.SUB_WINDOWS); repeated runs show min-max.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from harness import runs as runs_mod
from harness.runs import EngineRun, Run

WIDTH_IN = 10.0
DPI = 110
FOOTER_WRAP = 185  # characters per footer line at FOOTER_FONT
FOOTER_FONT = 7
ENGINE_COLORS = {"dbos": "#1f77b4", "temporal": "#ff7f0e", "temporal-local": "#2ca02c", "celery": "#d62728",
                 "memory": "#7f7f7f", "dbos-go": "#17becf", "temporal-go": "#bcbd22"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FAULT_COLOR = "#b22222"
LIMITS_SHORT = ("Limits: the Temporal dev server is single-shard SQLite (a lower bound for a production cluster); "
                "Valkey stands in for Redis; servers, workers and driver share this machine (compare engines "
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


def color(engine: str) -> str:
    if engine in ENGINE_COLORS:
        return ENGINE_COLORS[engine]
    return OTHER_COLORS[sum(map(ord, engine)) % len(OTHER_COLORS)]


def _engine_runs(runs: RunsArg, engine: str) -> list[EngineRun]:
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
    return (f"Scenario {sc['name']}: {wl['steps']} steps x {wl['step_duration'] * 1000:g} ms, {rate}, "
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
    (the same fault across engines or repetitions) are labelled once."""
    labelled: set[str] = set()
    for f in faults:
        start, end = f.get("start_s"), f.get("end_s")
        if start is None:
            continue
        if end is not None and end > start:
            ax.axvspan(start, end, color=FAULT_COLOR, alpha=0.12, lw=0, zorder=0)
        ax.axvline(start, color=FAULT_COLOR, lw=0.9, ls="--", zorder=1)
        key = f"{f.get('fault_id')}@{start:.1f}"
        if label and key not in labelled:
            labelled.add(key)
            healed = "" if end is not None else " (not healed)"
            ax.text(start, 0.98, f" {f.get('fault_id', '')} {f['kind']} {f['target']}{healed} ",
                    transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right", fontsize=7,
                    color=FAULT_COLOR, zorder=5, bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 0.3})
    return ax


def fault_legend_handle() -> Patch:
    return Patch(facecolor=FAULT_COLOR, alpha=0.25, edgecolor=FAULT_COLOR, ls="--",
                 label="fault window (fault to heal)")


def _all_faults(runs: RunsArg, engines: Sequence[str] | None = None) -> list[dict[str, Any]]:
    names = engines if engines is not None else engine_names(runs)
    return [f for name in names for er in _engine_runs(runs, name) for f in er.faults]


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


def _no_data(ax: Axes, text: str) -> Axes:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


# ---------------------------------------------------------------- panels

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
        ers = _engine_runs(runs, name)
        for i, er in enumerate(ers):
            hist = er.histograms.get(metric)
            if hist is None or hist.get_total_count() == 0:
                continue
            xs, ys = _spectrum_points(hist)
            label = None
            if i == 0:
                label = f"{name} (n={hist.get_total_count()}): " + ", ".join(
                    f"{key} {_spread_text([(e.summary.get(f'{metric}_ms') or {}).get(key) for e in ers])}"
                    for key in ("p50", "p99", "max")) + " ms" + (f"; {len(ers)} runs" if len(ers) > 1 else "")
            ax.plot(xs, ys, drawstyle="steps-post", color=color(name), lw=1.8 if i == 0 else 1.0,
                    alpha=1 if i == 0 else 0.6, label=label)
            ax.plot(xs[-1:], ys[-1:], "o", color=color(name), ms=4)
            top = max(top, xs[-1])
            drawn = True
    if not drawn:
        return _no_data(ax, f"no {metric.replace('_', ' ')} recorded")
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


def latency_over_time(ax: Axes, runs: RunsArg, engine: str) -> Axes:
    """End-to-end latency of every workflow by its intended start (dots), the per-second p50 and
    p99 (lines), workflows that never completed (crosses at the top), fault windows shaded."""
    ers = _engine_runs(runs, engine)
    if not ers:
        return _no_data(ax, f"{engine}: no data")
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


def throughput_over_time(ax: Axes, runs: RunsArg) -> Axes:
    """Completed workflows per 1-s bucket per engine (summary's completions_per_s), the offered
    rate, warmup and load end, every fault window shaded and labelled."""
    rs = as_runs(runs)
    names = engine_names(rs)
    if not names:
        return _no_data(ax, "no engine ran")
    for name in names:
        ers = _engine_runs(rs, name)
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
    shade_faults(ax, _all_faults(rs))
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("s from load start (1-s buckets by completion time)")
    ax.set_ylabel("completed workflows/s")
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if _all_faults(rs):
        handles.append(fault_legend_handle())
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    return ax


RECOVERY_BARS = (("first_progress_s", "first progress of an affected workflow", "#6baed6"),
                 ("all_done_s", "every affected workflow done", "#08519c"),
                 ("throughput_recovered_s", "throughput back to >= 90% of pre-fault", "#fd8d3c"))


def recovery(ax: Axes, runs: RunsArg) -> Axes:
    """Recovery per fault and engine (seconds after the fault): first progress, all affected done,
    throughput back; bars at the median with min-max whiskers over repetitions."""
    rs = as_runs(runs)
    rows: list[tuple[str, str, list[dict[str, Any]]]] = []
    for name in engine_names(rs):
        ids: list[str] = []
        for er in _engine_runs(rs, name):
            ids += [f["fault_id"] for f in er.faults if f["fault_id"] not in ids]
        for fid in ids:
            entries = [f for er in _engine_runs(rs, name) for f in er.faults if f["fault_id"] == fid]
            first = entries[0]
            label = f"{name}\n{fid} {first['kind']} {first['target']} at {first['start_s']:.1f}s"
            rows.append((name, label, entries))
    if not rows:
        return _no_data(ax, "no faults were injected in this scenario")
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


def _num(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _spread_text(values: Sequence[float | None]) -> str:
    s = runs_mod.spread(values)
    if s is None:
        return "-"
    lo, mid, hi = s
    return _num(mid) if lo == hi else f"{_num(mid)} [{_num(lo)}-{_num(hi)}]"


def _percentile_spread(ers: Sequence[EngineRun], metric: str, key: str) -> tuple[float, float, float] | None:
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


def step_overhead(ax: Axes, runs: RunsArg) -> Axes:
    """Per-step orchestration overhead ((e2e - step work) / steps) per engine at p50/p90/p99/p99.9,
    log scale; whiskers: min-max over repetitions, or for one run over slices of the window."""
    rs = as_runs(runs)
    names = [n for n in engine_names(rs) if any(er.summary.get("step_overhead_ms", {}).get("count")
                                                for er in _engine_runs(rs, n))]
    if not names:
        return _no_data(ax, "no completed workflow to measure")
    width = 0.8 / len(PERCENTILE_BARS)
    shades = ("#c6dbef", "#6baed6", "#2171b5", "#08306b")
    for i, name in enumerate(names):
        ers = _engine_runs(rs, name)
        for j, key in enumerate(PERCENTILE_BARS):
            s = _percentile_spread(ers, "step_overhead_ms", key)
            if s is None:
                continue
            lo, mid, hi = s
            x = i + (j - (len(PERCENTILE_BARS) - 1) / 2) * width
            ax.bar(x, mid, width=width * 0.92, color=shades[j], edgecolor=color(name), lw=1.2)
            ax.errorbar(x, mid, yerr=[[mid - lo], [hi - mid]], fmt="none", ecolor="black", lw=0.8, capsize=2)
            ax.text(x, hi * 1.08, _num(mid), ha="center", va="bottom", fontsize=7, rotation=90)
    floors = False
    for i, name in enumerate(names):  # the store's durable-write floor: overhead / floor = durability tax
        taxes = [er.summary.get("durability_tax") or {} for er in _engine_runs(rs, name)]
        floor = runs_mod.spread([t.get("store_floor_ms") for t in taxes])
        if floor is None:
            continue
        floors = True
        ax.hlines(floor[1], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2, zorder=4)
        tax = runs_mod.spread([t.get("tax") for t in taxes])
        ax.text(i, floor[1] * 1.08, f"{taxes[0].get('store', 'store')} floor {_num(floor[1])} ms"
                + (f"\ntax x{_num(tax[1])}" if tax else ""), va="bottom", ha="center", fontsize=7, zorder=5,
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


def offered_vs_achieved(ax: Axes, runs: RunsArg) -> Axes:
    """Per engine: offered rate, achieved submission rate and completed throughput (workflows/s)
    in the measured window; whiskers on throughput: per-second min-max (one run) or min-max of runs."""
    rs = as_runs(runs)
    names = engine_names(rs)
    if not names:
        return _no_data(ax, "no engine ran")
    bars = (("offered_rate_per_s", "offered"), ("achieved_rate_per_s", "submitted (achieved)"),
            ("throughput_per_s", "completed (throughput)"))
    width = 0.8 / len(bars)
    top = 0.0
    for i, name in enumerate(names):
        ers = _engine_runs(rs, name)
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


def has_resources(runs: RunsArg) -> bool:
    return any(er.resources is not None for name in engine_names(runs) for er in _engine_runs(runs, name))


def resource_usage(ax: Axes, runs: RunsArg, engine: str, field: str = "cpu_percent") -> Axes:
    """CPU (% of one core) or RSS (MiB) over time per component of one engine's run; drawn only
    when the run measured resources (engines/<engine>/resources.jsonl)."""
    ers = [er for er in _engine_runs(runs, engine) if er.resources is not None]
    if not ers:
        return _no_data(ax, f"{engine}: resource usage not measured in this run")
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


# ---------------------------------------------------------------- figures

@dataclass(frozen=True)
class ChartSpec:
    name: str  # file stem: charts/<name>.png
    title: str
    caption: str  # what the chart shows and how to read it
    build: Callable[[list[Run]], Figure | None]


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


def _fig_spectrum(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "End-to-end latency by percentile, intended start to durable completion", panel_h=4.2)
    latency_spectrum(ax, rs, "e2e_latency")
    return fig


def _fig_latency_time(rs: list[Run]) -> Figure | None:
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


def _fig_throughput(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Throughput over time, fault windows shaded", panel_h=4.0)
    throughput_over_time(ax, rs)
    return fig


def _fig_recovery(rs: list[Run]) -> Figure | None:
    if not _all_faults(rs):
        return None
    n_rows = sum(len({f["fault_id"] for er in _engine_runs(rs, n) for f in er.faults}) for n in engine_names(rs))
    fig, (ax,) = new_figure(rs, "Recovery time per fault and engine", panel_h=max(2.6, 0.75 * n_rows + 1.0))
    recovery(ax, rs)
    return fig


def _fig_overhead(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Per-step orchestration overhead: (e2e - step work) / steps", panel_h=3.8)
    step_overhead(ax, rs)
    return fig


def _fig_rates(rs: list[Run]) -> Figure | None:
    fig, (ax,) = new_figure(rs, "Offered vs achieved rate", panel_h=3.6)
    offered_vs_achieved(ax, rs)
    return fig


def _fig_resources(rs: list[Run]) -> Figure | None:
    if not has_resources(rs):
        return None
    names = [n for n in engine_names(rs) if any(er.resources is not None for er in _engine_runs(rs, n))]
    fig, axes = new_figure(rs, "Resource usage over time", rows=len(names), cols=2, panel_h=2.4)
    for i, name in enumerate(names):
        frames = [er.resources for er in _engine_runs(rs, name) if er.resources is not None]
        memory = "pss_bytes" if any(f["pss_bytes"].notna().any() for f in frames) else "rss_bytes"
        resource_usage(axes[2 * i], rs, name, "cpu_percent")
        resource_usage(axes[2 * i + 1], rs, name, memory)
    return fig


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("throughput", "Throughput over time",
              "Completed workflows per second (by durable completion time) for each engine, with the offered rate "
              "(dashed), the warmup (hatched) and every fault window shaded from the fault to its heal.",
              _fig_throughput),
    ChartSpec("latency-spectrum", "Latency percentile spectrum",
              "End-to-end latency (intended start to durable completion, no coordinated omission) at every "
              "percentile of the measured window, both axes logarithmic; the dot is the maximum.",
              _fig_spectrum),
    ChartSpec("latency-over-time", "Latency over time",
              "Each dot is one workflow's end-to-end latency at its intended start; lines are the per-second "
              "p50 and p99; crosses mark workflows that never completed.",
              _fig_latency_time),
    ChartSpec("recovery", "Recovery per fault",
              "Seconds from each fault to the first progress of a workflow it interrupted, to the completion of "
              "the last one, and until throughput was back at 90% of the pre-fault median (harness/metrics.py).",
              _fig_recovery),
    ChartSpec("step-overhead", "Per-step orchestration overhead",
              "Per-step overhead: end-to-end latency minus the time the steps' own work took, divided by the "
              "number of steps (queueing and checkpointing included), at p50, p90, p99 and p99.9.",
              _fig_overhead),
    ChartSpec("rates", "Offered vs achieved rate",
              "The offered rate, the rate the driver achieved and the completed throughput in the measured window; "
              "an engine that cannot keep up completes less than was submitted.",
              _fig_rates),
    ChartSpec("resources", "Resource usage over time",
              "CPU and resident memory of every component over time (drawn only when the run measured them).",
              _fig_resources),
)


def figure(name: str, runs: RunsArg) -> Figure | None:
    """The named chart (see CHARTS) for a run or repeated runs; None when there is nothing to draw."""
    for spec in CHARTS:
        if spec.name == name:
            return spec.build(as_runs(runs))
    raise KeyError(f"no chart {name!r}; charts: {', '.join(s.name for s in CHARTS)}")

