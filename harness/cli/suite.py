"""``durabench suite DIR_OR_FILES...``: several scenarios one after another, each an ordinary run
(:func:`harness.cli.run.run_and_analyze`), into one suite directory with an index page.

Every scenario file is loaded and checked before anything runs (a bad one is a user error, exit 2,
nothing started). A scenario that then fails (an engine that fails to run, an engine unavailable
here, a server that does not start) is recorded and the suite goes on with the next one; the exit
code says the worst outcome (README, "Exit codes"): 3 when a scenario failed, else 1 when a gate of
``--fail-on`` failed, else 0. The index (harness/report/suite.py) is rewritten after every
scenario, so an interrupted suite still links what it ran, and so is ``suite.json`` (the entries).

``durabench analyze SUITE_DIR`` (:func:`analyze_suite`) re-analyzes every run directory of a suite, as
``analyze RUN_DIR`` does, and rewrites the index; gates and exit code as for the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness import results, scenario
from harness.analysis import gates
from harness.errors import UserError
from harness.report import suite as index
from harness.scenario import Scenario, SloSpec

SCENARIO_SUFFIXES = (".yaml", ".yml")


def scenario_files(args: list[str]) -> list[Path]:
    """The scenario files named, a directory standing for its ``*.yaml`` files (sorted by name)."""
    files: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SCENARIO_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path}: a directory with no scenario files (*.yaml); give scenario files or "
                                "a directory holding them")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such scenario file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _load_all(files: list[Path], overrides: dict[str, object]) -> list[Scenario]:
    from harness.run import runner  # engine client libraries load only when a run starts

    loaded = []
    for path in files:
        sc = scenario.load(str(path), overrides)
        try:
            runner.validate(sc)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        loaded.append(sc)
    names = [sc.name for sc in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"scenario name {dupes[0]!r} appears in more than one file; every scenario of a suite "
                        "needs its own name (its run directory and index entry are named after it)")
    return loaded


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")


def run_entry(sc: Scenario, entry: index.SuiteEntry, suite_dir: Path, fail_on: list[str], progress: bool) -> int:
    """Run one scenario into ``suite_dir``; fills ``entry`` and returns its exit code (never raises
    but for an interrupt)."""
    from harness.cli.run import run_and_analyze

    started = time.monotonic()
    before = set(suite_dir.iterdir())
    try:
        run_dir = run_and_analyze(sc, suite_dir, progress=progress)
    except KeyboardInterrupt:
        entry.status, entry.elapsed_s = index.INTERRUPTED, time.monotonic() - started
        raise
    except Exception as exc:  # the suite records any failure of one scenario and goes on
        entry.elapsed_s = time.monotonic() - started
        entry.status, entry.message = index.FAILED, _one_line(str(exc) or type(exc).__name__)
        new = sorted(p for p in set(suite_dir.iterdir()) - before if p.is_dir())
        entry.run_dir = new[0] if new else None
        log = (entry.run_dir or suite_dir) / f"suite-error-{sc.name}.log"
        log.write_text(traceback.format_exc())
        return gates.EXIT_ENGINE_FAILED
    entry.elapsed_s = time.monotonic() - started
    entry.run_dir = run_dir
    entry.summary = results.load_summary(run_dir)
    return judge_entry(entry, sc.slo, fail_on)[0]


def judge_entry(entry: index.SuiteEntry, slo: SloSpec, fail_on: list[str]) -> tuple[int, list[gates.GateResult]]:
    """Status, message and exit code of an entry whose run has a summary, from its gates (as after a run)."""
    assert entry.summary is not None
    judged = gates.evaluate([entry.summary], slo, fail_on)
    code = gates.exit_code(judged)
    bad = [r for r in judged if r.failed]
    if code == gates.EXIT_ENGINE_FAILED:
        entry.status = index.FAILED
        entry.message = "engines that failed to run: " + ", ".join(r.engine for r in bad if r.gate == "ran")
    else:
        entry.status = index.OK
        entry.message = "gates failed: " + "; ".join(_one_line(f"{r.engine} {r.gate}") for r in bad) if bad else ""
    return code, judged


def worst(codes: list[int]) -> int:
    if gates.EXIT_ENGINE_FAILED in codes:
        return gates.EXIT_ENGINE_FAILED
    if gates.EXIT_GATE_FAILED in codes:
        return gates.EXIT_GATE_FAILED
    return gates.EXIT_PASS


def cmd_suite(args: argparse.Namespace) -> int:
    from harness.cli.run import scenario_overrides

    fail_on = gates.parse_fail_on(args.fail_on)
    files = scenario_files(args.scenarios)
    loaded = _load_all(files, scenario_overrides(args))
    for path, sc in zip(files, loaded, strict=True):
        gates.require_slo(sc.slo, fail_on, str(path))
    out = Path(args.out)
    results.check_out_dir(out)
    label = args.name or (Path(args.scenarios[0]).resolve().name if len(args.scenarios) == 1 else "suite")
    suite_dir = results.new_run_dir(out, f"suite-{Path(label).stem}")
    entries = [index.SuiteEntry(str(path), sc.name, usecase=sc.usecase) for path, sc in zip(files, loaded, strict=True)]
    title = f"durabench suite: {label}"
    started_at = results.now_iso()
    codes: list[int] = []
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.quiet else (lambda line: None)
    say(f"[suite] {len(loaded)} scenarios into {suite_dir}: {', '.join(sc.name for sc in loaded)}")
    try:
        for i, (sc, entry) in enumerate(zip(loaded, entries, strict=True), 1):
            say(f"[suite {i}/{len(loaded)}] {sc.name}: {', '.join(sc.engines)} ({entry.path})")
            codes.append(run_entry(sc, entry, suite_dir, fail_on, progress=not args.quiet))
            outcome = f"{entry.status}{': ' + entry.message if entry.message else ''}"
            say(f"[suite {i}/{len(loaded)}] {sc.name}: {outcome} ({(entry.elapsed_s or 0) / 60:.1f} min)")
            index.write_index(suite_dir, title, entries, started_at, label)
    finally:
        md_path, html_path = index.write_index(suite_dir, title, entries, started_at, label)
    _print_summary(entries)
    print(f"\nsuite:  {suite_dir}\nindex:  {html_path}\n        {md_path}")
    failed = [e.name for e in entries if e.failed]
    if failed:
        print(f"scenarios that failed: {', '.join(failed)} (see {md_path})", file=sys.stderr)
    return worst(codes)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``durabench analyze DIR``: a suite directory here (:func:`analyze_suite`), any other in
    :func:`harness.cli.run.cmd_analyze`."""
    from harness.cli.run import cmd_analyze as analyze_runs
    from harness.report import junit

    target = Path(args.run_dir)
    if not index.is_suite_dir(target):
        return analyze_runs(args)
    fail_on = gates.parse_fail_on(args.fail_on)
    if args.junit:
        junit.check_path(Path(args.junit))
    return analyze_suite(target, fail_on, args.junit)


def analyze_suite(suite_dir: Path, fail_on: list[str], junit_path: str | None) -> int:
    """``durabench analyze SUITE_DIR``: every run directory re-analyzed (summary and report), then the index
    and ``suite.json`` rewritten. Everything is read and checked first: bad input changes nothing."""
    from harness.cli.run import _analyze_and_report
    from harness.report import junit

    if (suite_dir / index.SUITE_JSON).is_file():
        suite = index.load(suite_dir)
        known = {e.run_dir.name for e in suite.entries if e.run_dir is not None}
        moved_in = [index.entry_from_run(d) for d in index.run_dirs_in(suite_dir) if d.name not in known]
    else:
        suite = index.rebuild(suite_dir)
        moved_in = []
    entries = suite.entries + moved_in
    slos: dict[int, SloSpec] = {}
    interrupted: dict[int, str] = {}  # the engine a run was interrupted in (Ctrl-C during the suite)
    for i, e in enumerate(entries):
        if e.run_dir is not None and e.run_dir.is_dir():
            manifest = results.load_manifest(e.run_dir)
            slos[i] = gates.slo_of(manifest["scenario"])
            gates.require_slo(slos[i], fail_on, f"the scenario of {e.run_dir}")
            if isinstance(manifest.get("interrupted"), dict):
                interrupted[i] = str(manifest["interrupted"].get("engine"))
    if not slos:
        raise UserError(f"{suite_dir}: a suite directory with no run directories to analyze")
    codes: list[int] = []
    judged_all: list[gates.GateResult] = []
    n = len(entries)
    print(f"[analyze] suite {suite_dir}: {len(slos)} run directories of {n} scenarios"
          + (f", {len(moved_in)} not in {index.SUITE_JSON} (moved in)" if moved_in else ""), file=sys.stderr,
          flush=True)
    for i, e in enumerate(entries):
        where = f"[analyze {i + 1}/{n}] {e.name}"
        if i not in slos:
            if e.run_dir is not None:  # named in suite.json, since deleted or moved out
                e.message = "; ".join(m for m in (e.message, f"run directory {e.run_dir.name} missing") if m)
                e.run_dir, e.summary = None, None
            print(f"{where}: no run directory to analyze, kept as recorded ({e.status}"
                  f"{': ' + e.message if e.message else ''})", file=sys.stderr, flush=True)
            if e.failed:
                codes.append(gates.EXIT_ENGINE_FAILED)
            continue
        assert e.run_dir is not None
        note = f" (moved in: not in {index.SUITE_JSON}, added)" if i >= len(suite.entries) else ""
        print(f"{where}: {e.run_dir.name}{note}", file=sys.stderr, flush=True)
        try:
            e.summary = _analyze_and_report(e.run_dir, [e.run_dir])[0]
        except UserError as exc:  # one broken run: recorded, the others are still re-analyzed
            e.summary, e.status, e.message = None, index.FAILED, _one_line(f"analyze: {exc}")
            codes.append(gates.EXIT_ENGINE_FAILED)
        else:
            code, judged = judge_entry(e, slos[i], fail_on)
            codes.append(code)
            judged_all += [dataclasses.replace(r, engine=f"{e.name}.{r.engine}") for r in judged]
            if i in interrupted and not e.failed:  # its partial results, as the suite left them
                e.status = index.INTERRUPTED
                e.message = "; ".join(m for m in (f"interrupted while {interrupted[i]} ran", e.message) if m)
        print(f"{where}: {e.status}{': ' + e.message if e.message else ''}", file=sys.stderr, flush=True)
    md_path, html_path = index.write_index(suite_dir, suite.title, entries, suite.started_at, suite.name)
    _print_summary(entries)
    print(f"\nsuite:  {suite_dir}\nindex:  {html_path}\n        {md_path}")
    if fail_on:
        print(f"\ngates (--fail-on {','.join(fail_on)}):")
        print("\n".join(gates.lines(judged_all)))
    if junit_path:
        junit.write(Path(junit_path), judged_all, suite.name, results.now_iso())
        print(f"junit:   {junit_path}")
    failed = [e.name for e in entries if e.failed]
    if failed:
        print(f"scenarios that failed: {', '.join(failed)} (see {md_path})", file=sys.stderr)
    return worst(codes)


def _print_summary(entries: list[index.SuiteEntry]) -> None:
    from harness.report.tables import text_table

    rows: list[list[str]] = [["scenario", "status", "run directory"]]
    rows += [[e.name, e.status + (f": {e.message}" if e.message else ""), str(e.run_dir or "-")] for e in entries]
    print(text_table(rows))


def register(sub: Any, epilog: str) -> None:
    p = sub.add_parser("suite", help="run several scenarios one after another; an index page links their reports",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="+", metavar="DIR_OR_FILE",
                   help="scenario files, or directories standing for their *.yaml files")
    p.add_argument("--engines", help="comma-separated engine names (overrides every scenario)")
    p.add_argument("--out", default="results", help="results directory (default: results); the suite gets a "
                   "directory of its own in it")
    p.add_argument("--name", help="the suite's name (default: the directory given)")
    p.add_argument("--duration", help="measured load duration of every scenario, e.g. 30s")
    p.add_argument("--rate", type=float, help="offered rate of every scenario, workflows/s")
    p.add_argument("--workers", type=int, help="worker processes per engine")
    p.add_argument("--durability", help="strict | relaxed | volatile")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--fail-on", metavar="GATES", help="exit 1 when a gate fails in any scenario: violations, slo")
    p.set_defaults(func=cmd_suite)
