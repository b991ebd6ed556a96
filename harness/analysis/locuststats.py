"""Locust's own statistics of a run (``engines/<engine>/locust/stats_stats.csv``), for the summary.

Locust times each request from the moment it sent it to its answer: that is the front door's
HTTP round trip, not durabench's latency (which runs from the *intended* start and so includes any
lateness of the load generator). The report shows both side by side.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

STATS_CSV = Path("locust") / "stats_stats.csv"
FAILURES_CSV = Path("locust") / "stats_failures.csv"
PERCENTILES = {"p50": "50%", "p90": "90%", "p99": "99%", "p99.9": "99.9%", "max": "100%"}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # Locust writes "N/A" for empty percentiles
        return None


def _pcts(values: list[int]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1e6, 3)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] / 1e6, 3)}


def split_lateness(events: list[dict[str, Any]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """The lateness of Locust runs (intended start to the front door's receipt) split in two, over the
    arrivals intended inside the measured window: ``send_lateness_ms`` (intended to Locust's send) and
    ``http_hop_ms`` (Locust's send to the front door's receipt). Both read Locust's clock: across hosts,
    clock skew shifts them (the sum, durabench's lateness, is unaffected by the split)."""
    send, hop = [], []
    for r in events:
        if r["ev"] == "invoke" and "client_sent_ns" in r and start_ns <= r["intended_ns"] < end_ns:
            send.append(max(0, r["client_sent_ns"] - r["intended_ns"]))
            hop.append(max(0, r["ns"] - r["client_sent_ns"]))
    return {"send_lateness_ms": _pcts(send), "http_hop_ms": _pcts(hop)}


def read(engine_dir: Path) -> dict[str, Any] | None:
    """The Aggregated row of Locust's statistics (times in ms) and its failures; None without a Locust run."""
    path = engine_dir / STATS_CSV
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"]
    if not rows:
        return None
    row = rows[0]
    out: dict[str, Any] = {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": round(float(row["Requests/s"]), 3),
        "response_time_ms": {"mean": round(float(row["Average Response Time"]), 3),
                             **{k: _number(row[col]) for k, col in PERCENTILES.items()}},
        "html": str(Path("locust") / "report.html"),
    }
    failures = engine_dir / FAILURES_CSV
    if failures.is_file():
        with failures.open(newline="") as fh:
            out["failure_kinds"] = {r["Error"]: int(r["Occurrences"]) for r in csv.DictReader(fh)}
    return out
