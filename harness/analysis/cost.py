"""Cost, floors and the durability tax of one engine run: summary fields and the report section.

A pure function of the raw files (``resources.jsonl``, ``store_counters.jsonl``, ``sampler.json``,
``floors.json``, ``floors/``) and the history; ``durabench analyze`` rebuilds it.

- **Cost interval**: from the sample taken just before the load starts to the first sample 1.2 s
  (PostgreSQL's statistics flush) after the later of the load's end and the last step end, or the
  last sample. Setup (server start, migrations, worker start, floors) is outside it, and so is a
  drain that waits in vain for lost workflows.
- **cpu_s** of a component: CPU seconds (user + system, all its processes, dead ones included)
  spent in the interval; ``cpu_share`` = cpu_s / interval (1.0 = one core busy).
- **peak_rss_bytes / peak_pss_bytes**: the largest sum over the component's processes of resident
  / proportional set size seen in the interval (PSS divides shared pages among their users:
  PostgreSQL's shared buffers count once).
- **per 1,000 workflows**: the figure x 1000 / workflows completed (``completed``); **per workflow**
  and **per step** (completed x steps) for store counters.
- **store counters**: increase in the interval across server restarts (harness/run/stores.py); the
  sampler's own probe queries are left out (Redis: one ``INFO`` per sample; Postgres: the probe
  and the floors use their own databases).
- **durability tax** = per-step orchestration overhead (p50, harness/analysis/metrics.py) / the p50 round
  trip of one durable write to the engine's store (floors: PostgreSQL INSERT commit for
  PostgreSQL-backed engines, Redis SET for Redis-backed ones, SQLite commit for Temporal, whose
  dev server keeps its state in SQLite). ``unloaded_tax`` uses the per-step overhead of the
  unloaded workflows (nothing queued); ``tax`` the measured load's. **roofline** = steps/s achieved
  / the write rate the same store reached with N connections (harness/run/floors.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.analysis import floors, statements
from harness.errors import UserError
from harness.run import resources, stores

GAUGES = ("sqlite_bytes", "aof_current_size")  # sizes: last minus first, not counters
STORE_OF_SERVICE = {"postgres": "postgres", "redis": "redis", "temporal": "sqlite"}
FLOOR_KEYS = {  # store -> (round trip used as its floor, write-rate entry)
    "postgres": ("commit_rtt_ms", "commit_rate"),
    "redis": ("set_rtt_ms", "set_rate"),
    "sqlite": ("commit_rtt_ms", "commit_rate"),
}
MIB = 2**20


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _per(value: float, n: int, scale: float = 1.0) -> float | None:
    return round(value * scale / n, 4) if n else None


def _between(recs: list[dict[str, Any]], start_ns: int, end_ns: int | None) -> list[dict[str, Any]]:
    """The samples of one series (sorted) from the last one at or before ``start_ns`` to the first one at or
    after ``end_ns`` (to the last when None or none is that late)."""
    before = [r for r in recs if r["ns"] <= start_ns]
    base = before[-1] if before else recs[0]
    after = [r for r in recs if end_ns is not None and r["ns"] >= end_ns]
    last = after[0] if after else recs[-1]
    return [r for r in recs if base["ns"] <= r["ns"] <= last["ns"]]


def _component_figures(records: list[dict[str, Any]], start_ns: int,
                       end_ns: int | None) -> tuple[dict[str, Any], float]:
    by_comp: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_comp.setdefault(rec["component"], []).append(rec)
    out: dict[str, Any] = {}
    interval = 0.0
    for name, recs in by_comp.items():
        recs.sort(key=lambda r: r["ns"])
        inside = _between(recs, start_ns, end_ns)
        base, end = inside[0], inside[-1]
        seconds = (end["ns"] - base["ns"]) / 1e9
        interval = max(interval, seconds)
        cpu = max(0.0, end["cpu_s"] - base["cpu_s"])
        pss = [r.get("pss_bytes") or 0 for r in inside]  # null: not read in that sample
        out[name] = {
            "cpu_s": round(cpu, 3),
            "cpu_share": _round(cpu / seconds if seconds > 0 else None),
            "peak_rss_bytes": max(r["rss_bytes"] for r in inside),
            "peak_pss_bytes": max(pss) if any(pss) else None,
            "max_procs": max(r.get("procs", 0) for r in inside),
        }
    return out, interval


def _group(components: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    parts = [components[n] for n in names if n in components]
    if not parts:
        return None
    pss = [p["peak_pss_bytes"] for p in parts if p["peak_pss_bytes"] is not None]
    return {
        "cpu_s": round(sum(p["cpu_s"] for p in parts), 3),
        # peaks of the parts need not coincide: the sum of peaks bounds the group's peak from above
        "peak_rss_bytes": sum(p["peak_rss_bytes"] for p in parts),
        "peak_pss_bytes": sum(pss) if pss else None,
    }


def _counter_totals(store: str, recs: list[dict[str, Any]], start_ns: int,
                    end_ns: int | None) -> tuple[dict[str, float], float, int]:
    """Increase of every counter of one store between two times: totals, seconds covered, samples."""
    inside = _between(recs, start_ns, end_ns)
    series = [stores.flatten(store, r["counters"]) for r in inside]
    keys = list(dict.fromkeys(k for s in series for k in s))
    totals: dict[str, float] = {}
    for key in keys:
        values = [float(s[key]) for s in series if key in s]
        if key in GAUGES:
            totals[key.replace("_bytes", "_growth_bytes").replace("_size", "_growth_bytes")] = (
                values[-1] - values[0] if values else 0.0)
        else:
            totals[key] = stores.counter_delta(values)
    if store == "redis" and "total_commands_processed" in totals:  # the probe's own INFO per sample
        totals["total_commands_processed"] = max(0.0, totals["total_commands_processed"] - (len(series) - 1))
    seconds = (inside[-1]["ns"] - inside[0]["ns"]) / 1e9 if inside else 0.0
    return totals, seconds, len(series)


def _store_figures(records: list[dict[str, Any]], start_ns: int, end_ns: int | None, completed: int,
                   steps: int, idle: tuple[int, int] | None = None) -> dict[str, Any]:
    """Store counters over the cost interval; with an ``idle`` window (start_ns, end_ns), also the
    per-second part (the idle rate) and the per-workflow part net of it (``fixed``)."""
    by_store: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_store.setdefault(rec["store"], []).append(rec)
    out: dict[str, Any] = {}
    for store, recs in by_store.items():
        recs.sort(key=lambda r: r["ns"])
        raw, seconds, samples = _counter_totals(store, recs, start_ns, end_ns)
        totals = {k: int(v) for k, v in raw.items()}
        out[store] = {
            "totals": totals,
            "per_workflow": {k: _per(v, completed) for k, v in totals.items()},
            "per_step": {k: _per(v, completed * steps) for k, v in totals.items()},
            "samples": samples,
        }
        if idle is not None:
            idle_totals, idle_s, _ = _counter_totals(store, recs, idle[0], idle[1])
            if idle_s > 0:
                per_s = {k: round(v / idle_s, 4) for k, v in idle_totals.items() if k not in GAUGES}
                net = {k: v - per_s.get(k, 0.0) * seconds for k, v in raw.items()}
                out[store]["fixed"] = {
                    "idle_s": round(idle_s, 3),
                    "interval_s": round(seconds, 3),
                    "per_s": per_s,
                    "per_workflow": {k: _per(v, completed) for k, v in net.items()},
                    "per_step": {k: _per(v, completed * steps) for k, v in net.items()},
                }
    return out


def _headline(cost: dict[str, Any]) -> dict[str, float | None]:
    """The flat ``cost_per_1000_workflows`` of the summary (the headline table's cell)."""
    n = cost["workflows"]
    out: dict[str, float | None] = {"cpu_s": _per(cost["total_cpu_s"], n, 1000)}
    st = cost["stores"]
    if "postgres" in st:
        t = st["postgres"]["totals"]
        out["db_xacts"] = _per(t.get("xact_commit", 0), n, 1000)
        out["wal_mb"] = _per(t.get("wal_bytes", 0) / 1e6, n, 1000)
    if "redis" in st:
        out["redis_cmds"] = _per(st["redis"]["totals"].get("total_commands_processed", 0), n, 1000)
    for name in ("temporal", "temporal-server"):
        if name in st:
            out["persistence_reqs"] = _per(st[name]["totals"].get("persistence_requests", 0), n, 1000)
    return out


def analyze_cost(edir: Path, load_start_ns: int, completed: int, steps: int,
                 end_ns: int | None = None, idle: tuple[int, int] | None = None) -> dict[str, Any] | None:
    records = resources.read_series(edir / resources.RESOURCES_FILE)
    if not records:
        return None
    components, interval = _component_figures(records, load_start_ns, end_ns)
    workers = sorted(n for n in components if n.startswith("worker:"))
    services = [n for n in components if n not in workers and n != resources.DRIVER]
    total = round(sum(c["cpu_s"] for c in components.values()), 3)
    for c in components.values():
        c["cpu_s_per_1000_workflows"] = _per(c["cpu_s"], completed, 1000)
    groups = {"servers": _group(components, services), "workers": _group(components, workers),
              "driver": _group(components, [resources.DRIVER])}
    for g in groups.values():
        if g is not None:
            g["cpu_s_per_1000_workflows"] = _per(g["cpu_s"], completed, 1000)
    sampler_path = edir / resources.SAMPLER_FILE
    try:
        sampler = json.loads(sampler_path.read_text()) if sampler_path.is_file() else None
    except ValueError:
        raise UserError(f"{sampler_path}: corrupt JSON; remove it to analyze the run without the sampler's "
                        "own figures") from None
    cost: dict[str, Any] = {
        "interval_s": round(interval, 3),
        "workflows": completed,
        "steps": completed * steps,
        "total_cpu_s": total,
        "total_cpu_s_per_1000_workflows": _per(total, completed, 1000),
        "components": components,
        "groups": groups,
        "stores": _store_figures(resources.read_series(edir / resources.COUNTERS_FILE), load_start_ns, end_ns,
                                 completed, steps, idle),
        "sampler": sampler,
    }
    return cost


def durability_tax(summary: dict[str, Any], floor: dict[str, Any] | None, services: list[str]) -> dict[str, Any] | None:
    if not floor:
        return None
    store = next((STORE_OF_SERVICE[s] for s in services if s in STORE_OF_SERVICE), None)
    if store is None or store not in floor:
        return None
    rtt_key, rate_key = FLOOR_KEYS[store]
    floor_ms = (floor[store].get(rtt_key) or {}).get("p50")
    rate = floor[store].get(rate_key) or {}
    loaded = (summary.get("step_overhead_ms") or {}).get("p50")
    unloaded = ((floor.get("workflow") or {}).get("step_overhead_ms") or {}).get("p50")
    steps_per_s = summary.get("steps_per_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "store": store,
        "floor": f"{rtt_key.removesuffix('_ms')} p50",
        "store_floor_ms": floor_ms,
        "unloaded_step_overhead_ms": unloaded,
        "step_overhead_ms": loaded,
        "unloaded_tax": ratio(unloaded, floor_ms),
        "tax": ratio(loaded, floor_ms),
        "steps_per_s": steps_per_s,
        "store_write_rate_per_s": rate.get("per_s"),
        "connections": rate.get("connections"),
        "roofline": round(steps_per_s / rate["per_s"], 4) if steps_per_s is not None and rate.get("per_s") else None,
    }


def analyze(edir: Path, events: list[dict[str, Any]], floor_records: list[dict[str, Any]], summary: dict[str, Any],
            info: dict[str, Any], steps: int) -> dict[str, Any]:
    """Summary fields ``statements``, ``cost``, ``cost_per_1000_workflows``, ``floors`` and ``durability_tax``,
    from the history split into the run's ``events`` and the unloaded floor workflows' ``floor_records``."""
    start = next((r["ns"] for r in events if r["ev"] == "load_start"), None)
    # the interval ends 1 s (statistics flush) after the load or the last step, whichever is later: a
    # drain that waits in vain for a lost workflow adds no idle time
    work_end = max((r["ns"] for r in events if r["ev"] in ("load_end", "step_end")), default=None)
    end = None if work_end is None else work_end + int(resources.STATS_FLUSH_S * 1e9)
    idle_start = next((r["ns"] for r in events if r["ev"] == "idle_start"), None)
    idle_end = next((r["ns"] for r in events if r["ev"] == "idle_end"), None)
    idle = (idle_start, idle_end) if idle_start is not None and idle_end is not None else None
    completed = summary.get("completed", 0)
    cost = analyze_cost(edir, start, completed, steps, end, idle) if start is not None else None
    floor = floors.analyze(edir, floor_records, steps)
    return {
        "statements": statements.analyze(edir, completed, steps),
        "cost": cost,
        "cost_per_1000_workflows": _headline(cost) if cost else None,
        "floors": floor,
        "durability_tax": durability_tax(summary, floor, list(info.get("services", {}))),
    }


# ------------------------------------------------------------------ report

def fmt_value(value: Any, digits: int = 1) -> str:
    """A figure for a table: "-" when not measured, whole numbers from 100 up."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


_f = fmt_value  # short: the report tables below use it in every cell


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def _store_work(stores_: dict[str, Any]) -> str:
    parts = []
    if "postgres" in stores_:
        w = stores_["postgres"]["per_workflow"]
        rows = sum((w.get(k) or 0) for k in ("tup_inserted", "tup_updated", "tup_deleted"))
        parts.append(f"{_f(w.get('xact_commit'))} xacts, {_f(rows)} rows, "
                     f"{_f((w.get('wal_bytes') or 0) / 1024)} KiB WAL")
    if "redis" in stores_:
        w = stores_["redis"]["per_workflow"]
        parts.append(f"{_f(w.get('total_commands_processed'))} Redis commands")
    for name in ("temporal", "temporal-server"):
        if name not in stores_:
            continue
        w = stores_[name]["per_workflow"]
        parts.append(f"{_f(w.get('persistence_requests'))} persistence requests, "
                     f"{_f(w.get('service_requests'))} gRPC requests")
    return "; ".join(parts) or "-"


def section(summary: dict[str, Any]) -> list[str]:
    """The "Cost and durability tax" section of report.md (empty when nothing was measured)."""
    engines = summary["engines"]
    costed = {n: e for n, e in engines.items() if e.get("cost")}
    taxed = {n: e for n, e in engines.items() if e.get("floors")}
    if not costed and not taxed:
        return []
    lines = ["## Cost and durability tax", ""]
    if costed:
        lines += [
            "CPU seconds per 1,000 completed workflows, from the load start to the end of the drain, by component "
            "(servers: every process of PostgreSQL / Valkey / the Temporal server; workers: every worker process, "
            "killed ones included; driver: the harness process). Peak memory is the proportional set size "
            "(shared pages divided among processes). Store work per completed workflow comes from the servers' own "
            "statistics (pg_stat_database and pg_stat_wal, Valkey INFO, Temporal's metrics endpoint).",
            "",
            "| engine | CPU s total | servers | workers | driver | peak MiB servers / workers / driver | "
            "store work per workflow |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, e in costed.items():
            c = e["cost"]
            g = c["groups"]

            def cpu(group: str, g: dict[str, Any] = g) -> str:
                return _f(g[group]["cpu_s_per_1000_workflows"]) if g.get(group) else "-"

            def mem(group: str, g: dict[str, Any] = g) -> str:
                if not g.get(group):
                    return "-"
                return _mib(g[group]["peak_pss_bytes"] or g[group]["peak_rss_bytes"])

            lines.append(f"| {name} | {_f(c['total_cpu_s_per_1000_workflows'])} | {cpu('servers')} | "
                         f"{cpu('workers')} | {cpu('driver')} | {mem('servers')} / {mem('workers')} / "
                         f"{mem('driver')} | {_store_work(c['stores'])} |")
        lines.append("")
    if taxed:
        lines += [
            "Floors were measured at the start of each engine's run on the same servers (harness/run/floors.py): the "
            "round trip of one durable write to the engine's store (PostgreSQL: an autocommit INSERT; Valkey: a SET "
            "with the profile's AOF fsync; Temporal: a commit to a SQLite file beside the dev server's, with its "
            "pragmas), and the unloaded workflow (the same workflow, one at a time). **Durability tax** = per-step "
            "orchestration overhead (p50) / the store's write floor (p50): how many raw durable writes one step "
            "costs in time, unloaded and under the measured load. **Roofline** = steps/s achieved / the write rate "
            "the same store reached with N connections. Ratios from one run are what carry across machines; the "
            "absolute times do not.",
            "",
            "| engine | store | write floor p50 ms | step overhead p50 ms, unloaded / loaded | tax unloaded | "
            "tax loaded | steps/s | store writes/s (N conns) | roofline |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, e in taxed.items():
            t = e.get("durability_tax")
            wf = (e["floors"].get("workflow") or {}).get("step_overhead_ms") or {}
            if t is None:
                lines.append(f"| {name} | - | - | {_f(wf.get('p50'), 2)} / "
                             f"{_f((e.get('step_overhead_ms') or {}).get('p50'), 2)} | - | - | "
                             f"{_f(e.get('steps_per_s'))} | - | - |")
                continue
            lines.append(
                f"| {name} | {t['store']} | {_f(t['store_floor_ms'], 3)} | {_f(t['unloaded_step_overhead_ms'], 2)} / "
                f"{_f(t['step_overhead_ms'], 2)} | {_f(t['unloaded_tax'])}x | {_f(t['tax'])}x | "
                f"{_f(t['steps_per_s'])} | {_f(t['store_write_rate_per_s'])} ({t['connections']}) | "
                f"{_f(t['roofline'], 3)} |")
        lines.append("")
        floor_rows = []
        for name, e in taxed.items():
            fl = e["floors"]
            for store, entry in fl.items():
                if store in ("workflow", "errors"):
                    continue
                for key, value in entry.items():
                    if key.endswith("_rtt_ms"):
                        floor_rows.append(f"| {name} | {store} | {key.removesuffix('_ms')} | {_f(value['p50'], 3)} | "
                                          f"{_f(value['p99'], 3)} | {value['count']} |")
        if floor_rows:
            lines += ["| engine | store | round trip | p50 ms | p99 ms | n |", "|---|---|---|---|---|---|",
                      *floor_rows, ""]
    return lines
