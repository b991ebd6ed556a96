"""Analysis: a run's summary.json, rebuilt from the files of its run directory only (pure; re-runnable)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ledger, program, scenario
from harness.analysis import (
    checker,
    cost,
    integration,
    locuststats,
    metrics,
    program_checks,
    reexecution,
    unfinished,
)
from harness.analysis import events as event_figures
from harness.contract import EngineRecord
from harness.results import (
    EFFECTS_FILE,
    SCHEMA_VERSION,
    engine_dir,
    load_manifest,
    load_reconcile,
    read_json,
    write_json,
)
from harness.run.floors import floor_marker


def analyze_engine(run_dir: Path, engine: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Summary of one engine, from its history and reconcile files only (pure; re-runnable)."""
    edir = engine_dir(run_dir, engine)
    history = ledger.read_dir(edir / "history")
    events: list[dict[str, Any]] = []
    floor_records: list[dict[str, Any]] = []  # floor workflows: only in `floors`
    marker = floor_marker()
    for r in history:
        wf = r.get("wf")
        (floor_records if wf is not None and marker in wf else events).append(r)
    del history
    reconcile = load_reconcile(edir / "reconcile.json")
    steps = manifest["scenario"]["workload"]["steps"]
    info = manifest["engines"][engine]
    if info.get("skipped"):
        return {"status": "skipped", "error": None, "skipped": info["skipped"], "settings": {}}
    if not any(r["ev"] == "load_start" for r in events):
        return {"status": "error", "error": info.get("error", "no load was driven"), "settings": info.get("settings")}
    trs = checker.traces(events)
    prog = scenario.program_of(manifest)
    effects_path = edir / EFFECTS_FILE
    effects, effects_error = _effects(effects_path)
    fault_ends = {r["fault_id"]: r["ns"] for r in events if r["ev"] == "fault_end"}
    windows = [(r["ns"], fault_ends.get(r["fault_id"], r["ns"])) for r in events if r["ev"] == "fault_start"]
    verdict = checker.check(trs, steps, reconcile, prog)
    if any(stage["kind"] != "work" for stage in program.walk(prog)):
        program_checks.check_program(verdict, trs, prog, reconcile, effects, windows, effects_error)
    win = metrics.window(events)
    interrupted = bool(info.get("interrupted"))
    if interrupted:  # the measured window ends with the last record: the load stopped there
        win = metrics.truncated(win, events[-1]["ns"])
    hists = metrics.latency_histograms(trs, reconcile, steps, win)
    write_json(edir / "histograms.json", {"unit": "us", "histograms": {k: metrics.encode(h) for k, h in hists.items()}})
    ends = {r["fault_id"]: r for r in events if r["ev"] == "fault_end"}
    starts = [r for r in events if r["ev"] == "fault_start"]
    buckets = metrics.completions_per_second(trs, reconcile, steps, win.load_start_ns)
    reruns = {wf: found for wf, tr in trs.items()  # only the workflows with re-executions
              if (found := checker.reexecutions(tr, steps, rec.completed_ns if (rec := reconcile.get(wf)) else None))
              } if starts else {}
    faults = [metrics.recovery(r, ends.get(r["fault_id"]), trs, reconcile, steps, win,
                               starts[i + 1]["ns"] if i + 1 < len(starts) else None, reruns, buckets)
              for i, r in enumerate(starts)]
    fault_ids = {f["fault_id"]: {"affected": f.pop("affected_ids"), "unfinished": f.pop("unfinished_ids")}
                 for f in faults}
    # what each workflow accepted and never completed was doing when the run ended (a backlog, or stalled)
    held = unfinished.evidence(events, trs, reconcile, verdict.ids["unfinished"])
    gone = unfinished.evidence(events, trs, reconcile, verdict.ids["lost"], classify=False)
    write_json(edir / "checker.json", {"counts": verdict.counts, "ids": verdict.ids, "faults": fault_ids,
                                       "program": verdict.figures, "unfinished_evidence": held,
                                       "lost_evidence": gone})
    c = verdict.counts
    summary: dict[str, Any] = {
        "status": "ok" if info.get("error") is None else "error",
        "error": info.get("error"),
        "verdict": verdict.verdict(interrupted),
        "not_measured": verdict.not_measured,  # check -> why its evidence is missing (verdict unverified)
        "interrupted": interrupted,
        "submitted": c["submitted"],
        "acknowledged": c["acknowledged"],
        "completed": c["completed"],
        "failed": c["failed"],
        "lost": c["lost"],
        "unfinished": c["unfinished"],
        "unfinished_by_state": unfinished.by_state(held),
        "unfinished_groups": unfinished.groups(held),
        "unknown": c["unknown"],
        "resolved_unknown": c["resolved_unknown"],
        "unexpected": c["unexpected"],
        "missing_steps": c["missing_steps"],
        "duplicated_steps": c["duplicated_steps"],
        "extra_step_executions": c["extra_step_executions"],
        "replayed_completed_steps": c["replayed_completed_steps"],
        **metrics.throughput(trs, reconcile, steps, events, win),
        **{f"{name}_ms": metrics.summarize_ms(h) for name, h in hists.items()},
        "completion_source": _completion_source(reconcile),
        "engine_claimed_completed": sum(1 for wf in verdict.ids["submitted"]
                                        if (rec := reconcile.get(wf)) is not None and rec.status == "completed"),
        "completions_per_s": buckets,
        "recovery": faults,
        **({"program": program_summary(verdict)} if verdict.figures else {}),
        **({"events": {**event_figures.figures(trs, verdict.ids["acknowledged"], prog, effects, edir,
                                                win.load_start_ns), "source": info["events"]}}
           if info.get("events") else {}),
        "worker_restarts": sum(1 for r in events if r["ev"] == "worker_exit"),
        "torn_ledger_records": ledger.torn_records(edir / "history"),  # partial last lines (a crash mid-write)
        "load_generator": next(r for r in events if r["ev"] == "load_start").get("generator", "pacer"),
        "locust": _locust(edir, events, win),
        "settings": info.get("settings", {}),
        "integration": integration.summarize(info),
    }
    hits = [(r["ns"], tuple(r.get("workers") or ())) for r in starts]
    # work done twice, and duplicates no fault explains
    summary["reexecution"] = reexecution.figures(trs, hits, max(r["ns"] for r in events))
    summary.update(cost.analyze(edir, events, floor_records, summary, info, steps))  # cost, floors, durability tax
    return summary


def program_summary(verdict: checker.CheckResult) -> dict[str, Any]:
    """The ``program`` object of an engine's summary (docs/results.md): the program checks' counts
    and figures; the ids are in checker.json."""
    figures = dict(verdict.figures)
    if "timers" in figures:
        figures["timers"] = {k: v for k, v in figures["timers"].items() if k != "lateness_values_ms"}
    counts: dict[str, int | None] = {k: verdict.counts[k] for k in program_checks.NEW_IDS}
    if figures.get("effects", {}).get("measured") is False:  # not measured: no figure, not a zero
        counts.update(dict.fromkeys(program_checks.EFFECT_COUNTS))
    return {"counts": counts, **figures}


def _effects(path: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The application table's rows from effects.json, or None and why they are not there (the dump
    failed, or no dump was written)."""
    if not path.is_file():
        return None, f"{path.name} was not written"
    dump = read_json(path)
    if dump.get("error"):
        return None, f"the table dump failed: {dump['error']}"
    return list(dump["rows"]), None


def _completion_source(reconcile: dict[str, EngineRecord]) -> str:
    with_ts = sum(1 for r in reconcile.values() if r.completed_ns is not None)
    return "engine" if with_ts else "ledger (last step end)"


def _locust(edir: Path, events: list[dict[str, Any]], win: metrics.Window) -> dict[str, Any] | None:
    stats = locuststats.read(edir)
    if stats is not None:
        stats.update(locuststats.split_lateness(events, win.start_ns, win.end_ns))
    return stats


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """The history of a long run is millions of small objects that hold no reference cycles: Python's cyclic
    collector would scan them again and again while they are built (a third of the analysis time) and free
    nothing. Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def analyze(run_dir: Path) -> dict[str, Any]:
    """Rebuild summary.json of a run from the files on disk and return it."""
    with _without_gc():
        return _analyze(run_dir)


def _analyze(run_dir: Path) -> dict[str, Any]:
    manifest = load_manifest(run_dir)
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": manifest["run_id"],
        "scenario": manifest["scenario"]["name"],
        "durability": manifest["scenario"]["durability"],
        "analyzed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "interrupted": manifest.get("interrupted"),
        "engines": {name: analyze_engine(run_dir, name, manifest) for name in manifest["engines"]},
    }
    write_json(run_dir / "summary.json", summary)
    return summary
