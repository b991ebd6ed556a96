"""Loading runs: the one path from the files of a run to the report, the charts, ``compare`` and
the notebooks (none of them reads a results file any other way).

``load_run(run_dir)`` gives a :class:`Run`: the manifest, the summary and, per engine, an
:class:`EngineRun` whose history, traces, reconcile records and decoded histograms are read from
disk the first time they are used. Per-workflow figures come from the checker's traces and the
metric definitions of :mod:`harness.analysis.metrics`; nothing here defines a metric.

``durabench ls [DIR]`` lists the runs under a results directory.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import ledger, results
from harness.analysis import checker, metrics
from harness.contract import EngineRecord
from harness.errors import UserError

if TYPE_CHECKING:  # pandas and hdrh load only when figures are read, so `durabench ls` starts fast
    import pandas as pd
    from hdrh.histogram import HdrHistogram

REFERENCE_DIR = results.ROOT / "results" / "reference"
SUB_WINDOWS = 5  # a single run's own spread: each figure computed on this many equal slices of the measured window
RESOURCES_FILE = "resources.jsonl"  # per engine, when resource usage is measured (see EngineRun.resources)
SCENARIO_IGNORED = ("engines", "overrides", "description")  # keys that may differ between comparable runs


@dataclass
class EngineRun:
    """One engine's part of a run."""

    run_dir: Path
    name: str
    manifest: dict[str, Any]
    summary: dict[str, Any]  # summary.json engines.<name>

    @property
    def dir(self) -> Path:
        return results.engine_dir(self.run_dir, self.name)

    @property
    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.manifest["engines"].get(self.name, {})
        return info

    @property
    def ok(self) -> bool:
        """The engine ran and was analyzed (charts and tables can use its figures)."""
        return self.summary.get("status") == "ok" and "throughput_per_s" in self.summary

    @property
    def steps(self) -> int:
        steps: int = self.manifest["scenario"]["workload"]["steps"]
        return steps

    @property
    def versions(self) -> dict[str, str]:
        versions = dict(self.info.get("versions", {}))
        for svc, desc in self.info.get("services", {}).items():
            versions.setdefault(svc, str(desc.get("version", "?")))
        return versions

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The summary's recovery entries: fault id, kind, target, start_s, end_s and recovery figures."""
        faults: list[dict[str, Any]] = self.summary.get("recovery", [])
        return faults

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        return ledger.read_dir(self.dir / "history")

    @cached_property
    def traces(self) -> dict[str, checker.WorkflowTrace]:
        return checker.traces(self.events)

    @cached_property
    def reconcile(self) -> dict[str, EngineRecord]:
        return results.load_reconcile(self.dir / "reconcile.json")

    @cached_property
    def window(self) -> metrics.Window:
        win = metrics.window(self.events)
        if self.info.get("interrupted"):  # as the summary measured it: up to the last record
            win = metrics.truncated(win, self.events[-1]["ns"])
        return win

    @cached_property
    def histograms(self) -> dict[str, HdrHistogram]:
        """Decoded HdrHistograms (microseconds) by name: e2e_latency, submit_latency, ..."""
        path = self.dir / "histograms.json"
        if not path.is_file():
            raise UserError(f"{path}: missing; rebuild the derived files with: durabench analyze {self.run_dir}")
        data = results.read_json(path)
        fix = f"rebuild it with: durabench analyze {self.run_dir}"
        if not isinstance(data, dict) or not isinstance(data.get("histograms"), dict):
            raise UserError(f"{path}: no histograms object; {fix}")
        try:
            return {name: metrics.decode(text) for name, text in data["histograms"].items()}
        except Exception as exc:  # hdrh raises bare ValueError/TypeError/zlib.error on bad input
            raise UserError(f"{path}: histogram {exc.__class__.__name__} while decoding ({exc}); {fix}") from None

    def seconds(self, ns: int | None) -> float | None:
        """Seconds from the load start (the origin of every time axis)."""
        return None if ns is None else (ns - self.window.load_start_ns) / 1e9

    @cached_property
    def workflows(self) -> pd.DataFrame:
        """One row per submitted workflow: times in seconds from the load start, e2e latency in ms.

        ``completed_s`` is the completion time the metrics use (the engine's durable timestamp when
        it has one, else the ledger's last step end); ``e2e_ms`` is set where the e2e histogram
        records one; ``measured`` marks intended starts inside the measured window.
        """
        import pandas as pd

        rows = []
        for wf, tr in self.traces.items():
            if tr.intended_ns is None:
                continue
            done = metrics.completion_ns(tr, self.reconcile.get(wf), self.steps)
            counted = done is not None and tr.ledger_completed_ns(self.steps) is not None
            rows.append({
                "wf": wf,
                "intended_s": self.seconds(tr.intended_ns),
                "sent_s": self.seconds(tr.sent_ns),
                "outcome": tr.outcome,
                "first_start_s": self.seconds(tr.first_start_ns()),
                "completed_s": self.seconds(done),
                "e2e_ms": (done - tr.intended_ns) / 1e6 if counted and done is not None else None,
                "measured": self.window.contains(tr.intended_ns),
            })
        columns = ["wf", "intended_s", "sent_s", "outcome", "first_start_s", "completed_s", "e2e_ms", "measured"]
        frame = pd.DataFrame(rows, columns=columns)
        for col in ("intended_s", "sent_s", "first_start_s", "completed_s", "e2e_ms"):
            frame[col] = frame[col].astype(float)
        return frame.sort_values("intended_s", ignore_index=True)

    @cached_property
    def sub_windows(self) -> list[dict[str, Any]]:
        """The run's own spread: throughput and latency summaries on SUB_WINDOWS equal slices of
        the measured window, each computed with the metric definitions of harness.metrics."""
        win = self.window
        step = (win.end_ns - win.start_ns) // SUB_WINDOWS
        out = []
        for i in range(SUB_WINDOWS):
            sub = metrics.Window(win.load_start_ns, win.start_ns + i * step, win.start_ns + (i + 1) * step)
            hists = metrics.latency_histograms(self.traces, self.reconcile, self.steps, sub)
            figures = metrics.throughput(self.traces, self.reconcile, self.steps, self.events, sub)
            figures.update({f"{name}_ms": _percentiles_ms(h) for name, h in hists.items()})
            out.append(figures)
        return out

    def per_second_throughput(self) -> list[int]:
        """Completed workflows per 1-s bucket inside the measured window (summary's completions_per_s)."""
        load = self.manifest["scenario"]["load"]
        buckets: list[int] = self.summary.get("completions_per_s", [])
        first = round(load["warmup"])
        last = first + int(load["duration"])
        if self.info.get("interrupted"):  # the window ended with the run's last record
            last = min(last, int((self.window.end_ns - self.window.load_start_ns) // 1_000_000_000))
        return (buckets + [0] * last)[first:last]

    @cached_property
    def resources(self) -> pd.DataFrame | None:
        """Resource usage over time, or None when the run did not measure it (runs made before
        resource sampling existed). File: ``engines/<engine>/resources.jsonl``
        (harness/run/resources.py), one record per sample and component:
        ``{"ns", "component", "cpu_s" (cumulative) or "cpu_percent", "rss_bytes", "pss_bytes"}``.
        Returns columns t_s, component, cpu_percent, rss_bytes, pss_bytes (NaN where not sampled)."""
        import pandas as pd

        path = self.dir / RESOURCES_FILE
        if not path.is_file():
            return None
        frame = pd.DataFrame(list(ledger.read_file(path)))
        if frame.empty or "component" not in frame:
            return None
        frame["t_s"] = (frame["ns"] - self.window.load_start_ns) / 1e9
        frame = frame.sort_values(["component", "t_s"])
        if "cpu_percent" not in frame and "cpu_s" in frame:
            grouped = frame.groupby("component")
            frame["cpu_percent"] = 100 * grouped["cpu_s"].diff() / grouped["t_s"].diff()
        for col in ("cpu_percent", "rss_bytes", "pss_bytes"):
            if col not in frame:
                frame[col] = float("nan")
        return frame[["t_s", "component", "cpu_percent", "rss_bytes", "pss_bytes"]].reset_index(drop=True)


def _percentiles_ms(hist: HdrHistogram) -> dict[str, float | int | None]:
    """metrics.summarize_ms without the mean (hdrh computes the mean by iterating every bucket in Python)."""
    n = hist.get_total_count()
    out: dict[str, float | int | None] = {"count": n}
    for name, pct in metrics.PERCENTILES.items():
        out[name] = round(hist.get_value_at_percentile(pct) / 1000, 3) if n else None
    out["max"] = round(hist.get_max_value() / 1000, 3) if n else None
    return out


@dataclass
class Run:
    """A run directory: manifest, summary and its engines."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    engines: dict[str, EngineRun]

    @property
    def run_id(self) -> str:
        run_id: str = self.manifest.get("run_id", self.path.name)
        return run_id

    @property
    def scenario(self) -> dict[str, Any]:
        scenario: dict[str, Any] = self.manifest["scenario"]
        return scenario

    @property
    def scenario_name(self) -> str:
        return str(self.scenario["name"])

    @property
    def durability(self) -> str:
        return str(self.scenario.get("durability", self.manifest.get("durability")))

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    @property
    def machine(self) -> dict[str, Any]:
        machine: dict[str, Any] = self.manifest.get("machine", {})
        return machine

    def ok_engines(self) -> dict[str, EngineRun]:
        return {name: e for name, e in self.engines.items() if e.ok}

    def verdicts(self) -> dict[str, str]:
        return {name: (e.summary.get("verdict", "?") if e.ok else "error") for name, e in self.engines.items()}


def load_run(run_dir: Path | str) -> Run:
    """Read a run directory (refuses a newer schema, or a run without its derived files)."""
    path = Path(run_dir)
    manifest = results.load_manifest(path)
    return make_run(path, manifest, results.load_summary(path))


def make_run(path: Path, manifest: dict[str, Any], summary: dict[str, Any]) -> Run:
    """A Run from a manifest and summary already in memory (the end of a run)."""
    engines = {name: EngineRun(path, name, manifest, summary["engines"].get(name, {"status": "error"}))
               for name in manifest["engines"]}
    return Run(path, manifest, summary, engines)


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def find_runs(root: Path | str, depth: int = 3) -> list[Path]:
    """Run directories at or under ``root`` (down to ``depth`` levels), oldest first."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        level = sorted(p for d in level if d.is_dir() for p in d.iterdir() if p.is_dir())
        found += [p for p in level if is_run_dir(p)]
        level = [p for p in level if not is_run_dir(p)]
    return sorted(found, key=_created_at)


REPETITION_DIR = re.compile(r"-rep\d+$")  # <stamp>-<scenario>-rep<i>: harness/run/runner.py run_repeated


def repeated_runs(group: Path) -> list[Path] | None:
    """The runs of a directory of repeated runs (``durabench run --repeat N``), oldest first: run directories
    directly in it, each a repetition (its manifest's ``repetition``, or for a run made before the
    manifest recorded it, a directory named ``...-rep<i>``), and no other run below it. None for any
    other directory: a run directory itself, a suite's parent, runs gathered by hand."""
    found = find_runs(group)
    if not found or found == [group] or any(p.parent != group for p in found):
        return None
    for p in found:
        if "repetition" not in results.load_manifest(p) and not REPETITION_DIR.search(p.name):
            return None
    return found


def _created_at(path: Path) -> str:
    try:
        return str(json.loads((path / "manifest.json").read_text()).get("created_at", "")) + path.name
    except (OSError, ValueError):
        return path.name


def newest_run(root: Path | str = REFERENCE_DIR) -> Path:
    runs = find_runs(root)
    if not runs:
        raise UserError(f"{root}: no durabench run found; produce one with: durabench run scenarios/quick.yaml")
    return runs[-1]


def from_env(var: str = "DURABENCH_RUN") -> list[Run]:
    """The runs a notebook shows: ``$DURABENCH_RUN`` (a run directory or a directory of repeated
    runs), else the newest run under results/reference/."""
    path = os.environ.get(var) or newest_run(REFERENCE_DIR)
    group = load_group([path])
    check_repetitions(group)
    return group


def summary_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run and engine with the headline figures of summary.json."""
    import pandas as pd

    rows = []
    for run in runs:
        for name, er in run.engines.items():
            e = er.summary
            lat = e.get("e2e_latency_ms") or {}
            rows.append({
                "run": run.run_id, "engine": name, "status": e.get("status"), "verdict": e.get("verdict"),
                "throughput_per_s": e.get("throughput_per_s"), "offered_rate_per_s": e.get("offered_rate_per_s"),
                "achieved_rate_per_s": e.get("achieved_rate_per_s"),
                **{f"e2e_{k}_ms": lat.get(k) for k in ("p50", "p90", "p99", "p99.9", "max")},
                **{k: e.get(k) for k in ("completed", "lost", "unknown", "duplicated_steps",
                                         "replayed_completed_steps", "worker_restarts")},
                "cost_per_1000_workflows": e.get("cost_per_1000_workflows"),
                "durability_tax": (e.get("durability_tax") or {}).get("tax"),
                "store_floor_ms": (e.get("durability_tax") or {}).get("store_floor_ms"),
                "wall_s": er.info.get("wall_s"),
            })
    return pd.DataFrame(rows)


def recovery_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, engine and fault with the recovery figures of summary.json."""
    import pandas as pd

    rows = []
    for run in runs:
        for name, er in run.engines.items():
            for f in er.faults:
                rd = f.get("resume_delay_s") or {}
                rows.append({"run": run.run_id, "engine": name,
                             **{k: f.get(k) for k in ("fault_id", "kind", "target", "start_s", "end_s", "affected",
                                                      "affected_unfinished", "first_progress_s")},
                             **{f"resume_{k}_s": rd.get(k) for k in ("p50", "p99", "max")},
                             "all_done_s": f.get("all_done_s"),
                             "throughput_recovered_s": f.get("throughput_recovered_s")})
    return pd.DataFrame(rows)


def load_group(paths: Iterable[Path | str]) -> list[Run]:
    """Runs from a list of run directories and/or directories holding runs (repetitions)."""
    found: list[Path] = []
    for p in paths:
        runs = find_runs(p)
        if not runs:
            raise UserError(f"{p}: not a durabench run directory and holds no runs (no manifest.json)")
        found += runs
    return [load_run(p) for p in found]


def scenario_key(run: Run) -> dict[str, Any]:
    """The resolved scenario without the keys that may differ between comparable runs."""
    return {k: v for k, v in run.scenario.items() if k not in SCENARIO_IGNORED}


def scenario_differences(a: Run, b: Run) -> list[str]:
    """``load.rate: 20.0 vs 50.0``-style lines for every resolved scenario field that differs.

    A field present in only one of the two (a field added to the scenario format since the other
    run, resolved to its default) does not count as a difference."""
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) & set(y)):
                walk(x[key], y[key], f"{where}.{key}" if where else str(key))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
                walk(xi, yi, f"{where}[{i}]")
        elif x != y:
            out.append(f"{where}: {x!r} vs {y!r}")

    walk(scenario_key(a), scenario_key(b), "")
    return out


def check_repetitions(runs: Sequence[Run]) -> None:
    """Runs pooled as repetitions must share scenario and durability profile."""
    base = runs[0]
    for run in runs[1:]:
        diffs = scenario_differences(base, run)
        if diffs:
            raise UserError(f"{run.path}: not a repetition of {base.path} (scenario differs: {'; '.join(diffs[:3])})")


def fault_group(fault_id: object) -> str:
    """The scenario fault a fault record belongs to: ``f0`` for ``f0`` and for the strikes ``f0.0``, ``f0.1``
    ... of a repeated one (``every``: harness/run/nemesis.py names them so)."""
    return str(fault_id).split(".", 1)[0]


def spread(values: Sequence[float | None]) -> tuple[float, float, float] | None:
    """min, median, max of the values that are not None (None when there are none)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return min(present), statistics.median(present), max(present)


# ---------------------------------------------------------------- durabench ls

def ls_rows(root: Path | str) -> list[list[str]]:
    rows = [["run", "date", "scenario", "durability", "engines", "verdict"]]
    root = Path(root)
    for path in find_runs(root):
        try:
            manifest = results.load_manifest(path)
        except UserError as exc:
            rows.append([str(path.relative_to(root)) if path != root else path.name, "-", "-", "-", "-", str(exc)])
            continue
        summary_path = path / "summary.json"
        engines = list(manifest.get("engines") or manifest["scenario"].get("engines", []))
        if summary_path.is_file():
            try:
                summary = results.load_summary(path)["engines"]
                verdict = ", ".join(f"{n}: {_verdict(summary.get(n, {}))}" for n in engines)
            except UserError as exc:
                verdict = str(exc)
        else:
            verdict = "not analyzed (durabench analyze)"
        rows.append([
            str(path.relative_to(root)) if path != root else path.name,
            str(manifest.get("created_at", "-")).replace("+00:00", "Z"),
            str(manifest["scenario"]["name"]),
            str(manifest["scenario"].get("durability", "-")),
            ",".join(engines) or "-",
            verdict,
        ])
    return rows


def _verdict(e: dict[str, Any]) -> str:
    if e.get("status") != "ok":
        return "ERROR"
    if e.get("verdict") in (checker.CORRECT, checker.UNVERIFIED, checker.INTERRUPTED):
        return checker.verdict_label(e)
    counts = {**{k: e.get(k) for k in checker.VIOLATIONS}, **(e.get("program") or {}).get("counts", {})}
    found = [f"{n} {k.replace('_', ' ')}" for k in checker.VIOLATIONS if isinstance(n := counts.get(k), int) and n]
    return f"violations ({', '.join(found)})" if found else "violations"
