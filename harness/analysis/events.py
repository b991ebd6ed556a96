"""The figures of an event-driven run (``load.source: kafka``), a pure function of its files.

- **applied 0 / 1 / >1**: per acknowledged event (its produce acknowledged by the broker, or its outcome
  resolved because it ran) and effect stage, the rows the application table holds for it
  (``effects.json``); ``rows_unknown_events``: rows of an event never acknowledged.
- **produce-to-effect latency**: from the produce acknowledgement (the driver's ``ack`` record, outcome
  ``ok``: an event whose acknowledgement the driver stopped waiting for has no such time) to the first
  effect row of the event (``applied_ns``, the row's commit-time clock in PostgreSQL), p50/p99/max
  in ms. With several effect stages, the first stage's row.
- **consumer lag**: the samples of ``kafka-lag.jsonl`` (harness/run/eventsource.py): peak, last, the
  number of samples and of failed samples (the broker restarting).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from harness.analysis.program_checks import _pct
from harness.run.eventsource import read_lag


def figures(trs: dict[str, Any], acknowledged: list[str], program: list[dict[str, Any]],
            effects: list[dict[str, Any]] | None, edir: Path, load_start_ns: int) -> dict[str, Any]:
    effect_steps = [s["step"] for s in program if s["kind"] == "effect"]
    out: dict[str, Any] = {"events_acknowledged": len(acknowledged), "effect_stages": len(effect_steps)}
    if effects is None or not effect_steps:
        out.update(applied_0=None, applied_1=None, applied_more=None, rows=None, rows_unknown_events=None,
                   produce_to_effect_ms=_pct([]), measured=False)
    else:
        rows: Counter[tuple[str, int]] = Counter()
        first: dict[str, int] = {}
        for row in effects:
            rows[(row["wf"], int(row["step"]))] += 1
            if int(row["step"]) == effect_steps[0]:
                first[row["wf"]] = min(first.get(row["wf"], row["applied_ns"]), row["applied_ns"])
        applied: Counter[str] = Counter()
        for wf in acknowledged:
            for step in effect_steps:
                n = rows.get((wf, step), 0)
                applied["0" if n == 0 else "1" if n == 1 else "more"] += 1
        accepted = set(acknowledged)
        latencies = [(first[wf] - trs[wf].ack_ns) / 1e6 for wf in acknowledged
                     if wf in first and trs[wf].outcome == "ok" and trs[wf].ack_ns is not None]
        out.update(applied_0=applied["0"], applied_1=applied["1"], applied_more=applied["more"],
                   rows=sum(rows.values()), rows_unknown_events=sum(n for (wf, _), n in rows.items()
                                                                    if wf not in accepted),
                   produce_to_effect_ms=_pct(latencies), measured=True)
    samples = read_lag(edir)
    good = [s for s in samples if "lag" in s]
    out["lag"] = {
        "samples": len(samples),
        "failed_samples": len(samples) - len(good),
        "peak": max((s["lag"] for s in good), default=None),
        "last": good[-1]["lag"] if good else None,
        # a failed sample (the broker down) is a gap in the line: [t, null]
        "series": [[round((s["ns"] - load_start_ns) / 1e9, 3), s.get("lag")] for s in samples],
    }
    return out
