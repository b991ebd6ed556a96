"""Analysis of the calibration floors: the ``floors`` object of an engine's summary, from floors.json
and the unloaded floor workflows that harness/run/floors.py recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import ledger as ledger_mod
from harness.analysis import metrics
from harness.analysis.checker import traces
from harness.errors import UserError
from harness.results import load_reconcile, read_json
from harness.run.floors import FLOORS_DIR, FLOORS_FILE


def spread_ms(values_us: list[int]) -> dict[str, Any]:
    if not values_us:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    s = sorted(values_us)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, int(p / 100 * len(s)))] / 1000, 3)

    return {"count": len(s), "mean": round(sum(s) / len(s) / 1000, 3), "p50": pct(50), "p90": pct(90),
            "p99": pct(99), "max": round(s[-1] / 1000, 3)}


def analyze(edir: Path, floor_records: list[dict[str, Any]], steps: int) -> dict[str, Any] | None:
    """The ``floors`` object of an engine's summary, from floors.json and the floor workflows' history records."""
    path = edir / FLOORS_FILE
    if not path.is_file():
        return None
    raw = read_json(path, fix="remove it to analyze the run without floors")
    if not isinstance(raw, dict) or not isinstance(raw.get("stores", {}), dict):
        raise UserError(f"{path}: not in the floors format (an object with stores); remove it to analyze the run "
                        "without floors")
    out: dict[str, Any] = {}
    for store, figures in raw.get("stores", {}).items():
        entry: dict[str, Any] = {}
        for key, value in figures.items():
            if key.endswith("_rtt_us"):
                entry[key.removesuffix("_us") + "_ms"] = spread_ms(value)
            else:
                entry[key] = value
        out[store] = entry
    if raw.get("errors"):
        out["errors"] = raw["errors"]
    fdir = edir / FLOORS_DIR
    driver_events = ledger_mod.read_dir(fdir / "history") if (fdir / "history").is_dir() else []
    if any(r["ev"] == "load_start" for r in driver_events):
        events = sorted(driver_events + floor_records, key=lambda r: r["ns"])
        win = metrics.window(events)
        win = metrics.Window(win.load_start_ns, win.start_ns, max(win.end_ns, events[-1]["ns"] + 1))
        reconcile = load_reconcile(fdir / "reconcile.json")
        trs = traces(events)
        hists = metrics.latency_histograms(trs, reconcile, steps, win)
        completed = sum(1 for tr in trs.values() if tr.ledger_completed_ns(steps) is not None)
        out["workflow"] = {
            "mode": "closed loop, 1 in flight (the scenario's workflow, unloaded)",
            "submitted": len([t for t in trs.values() if t.intended_ns is not None]),
            "completed": completed,
            "e2e_latency_ms": metrics.summarize_ms(hists["e2e_latency"]),
            "step_overhead_ms": metrics.summarize_ms(hists["step_overhead"]),
        }
    return out
