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
