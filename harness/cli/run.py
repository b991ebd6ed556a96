"""The commands around one run: ``run``, ``check``, ``engines``, ``analyze`` and ``ls``.

``run`` is the whole flow: the run stage (harness/run/runner.py) writes the history, the analysis
(harness/analysis/summary.py) writes summary.json, then the report (harness/report/html.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness import registry, results, scenario
from harness.analysis import runs
from harness.analysis import summary as analysis_summary
from harness.errors import UserError
from harness.report import html as htmlreport
from harness.report.markdown import headline_rows
from harness.report.tables import text_table
from harness.scenario import Scenario

DEFAULT_OUT = Path("results")


def run_and_analyze(sc: Scenario, out: Path, progress: bool = True) -> Path:
    """Run a scenario, then analyze it and write its report; returns the run directory."""
    from harness.run import runner  # engine client libraries load only when a run starts

    run_dir = runner.run(sc, out, progress=progress)
    manifest = results.load_manifest(run_dir)
    htmlreport.write_run(run_dir, manifest, analysis_summary.analyze(run_dir))
    return run_dir


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    if args.engines is not None and not engines:
        raise UserError("--engines is empty; give a comma-separated list such as dbos,temporal")
    return {"engines": engines, "duration": args.duration, "rate": args.rate, "workers": args.workers,
            "durability": args.durability}


def cmd_run(args: argparse.Namespace) -> int:
    sc = scenario.load(args.scenario, _overrides(args))
    run_dir = run_and_analyze(sc, Path(args.out), progress=not args.quiet)
    summary = results.read_json(run_dir / "summary.json")
    print(text_table(headline_rows(summary)))
    print(f"\nresults: {run_dir}\nreport:  {run_dir / 'report.md'}")
    failed = [n for n, e in summary["engines"].items() if e.get("status") != "ok"]
    if failed:
        names = ", ".join(failed)
        print(f"engines that failed to run: {names} (see their logs in {run_dir}/engines/)", file=sys.stderr)
        return 1
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    rows = [["engine", "available", "needs", "description"]]
    for name in registry.names():
        engine = registry.load(name)
        reason = engine.unavailable_reason()
        rows.append([name, "yes" if reason is None else f"no: {reason}", ", ".join(engine.services) or "-",
                     engine.description])
    print(text_table(rows))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.run import runner

    for path in args.scenarios:
        sc = scenario.load(path)
        try:
            runner.validate(sc)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        print(f"{path}: ok ({', '.join(sc.engines)}; {sc.total_load_s:g}s of load, {len(sc.faults)} faults)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    manifest = results.load_manifest(run_dir)
    summary = analysis_summary.analyze(run_dir)
    path = htmlreport.write_run(run_dir, manifest, summary)
    print(text_table(headline_rows(summary)))
    print(f"\nreport: {path}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such results directory")
    rows = runs.ls_rows(root)
    if len(rows) == 1:
        print(f"{root}: no runs")
        return 0
    print(text_table(rows))
    return 0


def register_ls(sub: Any) -> None:
    p = sub.add_parser("ls", help="list the runs in a results directory: scenario, engines, date, verdict")
    p.add_argument("dir", nargs="?", default="results", help="results directory (default: results)")
    p.set_defaults(func=cmd_ls)
