"""The commands around one run: ``run``, ``check``, ``engines``, ``analyze`` and ``ls``.

``run`` is the whole flow: the run stage (harness/run/runner.py) writes the history, the analysis
(harness/analysis/summary.py) writes summary.json, then the report (harness/report/html.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import registry, results, scenario, temporalbuild
from harness.analysis import gates, runs
from harness.analysis import summary as analysis_summary
from harness.contract import event_consumer, stage_support, unsupported_stages
from harness.errors import UserError
from harness.report import html as htmlreport
from harness.report import junit
from harness.report.markdown import headline_rows
from harness.report.tables import text_table
from harness.scenario import Scenario, SloSpec

DEFAULT_OUT = Path("results")
MAX_REPEAT = 100


def run_and_analyze(sc: Scenario, out: Path, progress: bool = True) -> Path:
    """Run a scenario, then analyze it and write its report; returns the run directory."""
    from harness.run import runner  # engine client libraries load only when a run starts

    run_dir = runner.run(sc, out, progress=progress)
    manifest = results.load_manifest(run_dir)
    htmlreport.write_run(run_dir, manifest, analysis_summary.analyze(run_dir))
    return run_dir


def scenario_overrides(args: argparse.Namespace) -> dict[str, object]:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    if args.engines is not None and not engines:
        raise UserError("--engines is empty; give a comma-separated list such as dbos,temporal")
    return {"engines": engines, "duration": args.duration, "rate": args.rate, "workers": args.workers,
            "durability": args.durability, "generator": getattr(args, "generator", None),
            "deploy": getattr(args, "deploy", None), "workers_daemon": getattr(args, "workers_docker_host", None),
            "advertise": getattr(args, "advertise", None)}


def _repeat(value: int | None) -> int:
    if value is None:
        return 1
    if not 1 <= value <= MAX_REPEAT:
        raise UserError(f"--repeat {value}: expected a number of repetitions from 1 to {MAX_REPEAT}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    fail_on = gates.parse_fail_on(args.fail_on)
    repeat = _repeat(args.repeat)
    sc = scenario.load(args.scenario, scenario_overrides(args))
    gates.require_slo(sc.slo, fail_on, args.scenario)
    if args.locust_ui:
        if sc.load.generator != "locust":
            raise UserError("--locust-ui needs load.generator: locust (add --generator locust)")
        if sc.deploy == "containers":  # the master's web UI would listen inside its container
            raise UserError("--locust-ui needs deploy: processes (under containers Locust runs headless)")
        from harness.run import locustload

        locustload.WEB_UI = True
    from harness.run import runner  # engine client libraries load only when a run starts

    try:
        runner.validate(sc)
    except UserError as exc:
        raise UserError(f"{args.scenario}: {exc}") from None
    if args.junit:
        junit.check_path(Path(args.junit))
    out = Path(args.out)
    results.check_out_dir(out)
    group, run_dirs = runner.run_repeated(sc, out, repeat, progress=not args.quiet)
    summaries = _analyze_and_report(group, run_dirs)
    print(f"\nresults: {group}\nreport:  {group / htmlreport.REPORT_MD}")
    return _judge(summaries, sc.slo, fail_on, args.junit, sc.name, group)


def _analyze_and_report(group: Path, run_dirs: list[Path]) -> list[dict[str, Any]]:
    """summary.json of every run, then the report (of the repetitions together when there are several)."""
    summaries = [analysis_summary.analyze(d) for d in run_dirs]
    if len(run_dirs) == 1:
        htmlreport.write_run(run_dirs[0], results.load_manifest(run_dirs[0]), summaries[0])
        print(text_table(headline_rows(summaries[0])))
        return summaries
    group_runs = [runs.make_run(d, results.load_manifest(d), s) for d, s in zip(run_dirs, summaries, strict=True)]
    htmlreport.write_report(group_runs, group)
    rows, how = htmlreport.headline_table(group_runs)
    print(text_table([[cell.replace("**", "") for cell in row] for row in rows]))
    print(how)
    return summaries


def _judge(summaries: list[dict[str, Any]], slo: SloSpec, fail_on: list[str], junit_path: str | None,
           suite: str, where: Path) -> int:
    """Print the gates of --fail-on, write --junit, and return the exit code (harness/analysis/gates.py)."""
    judged = gates.evaluate(summaries, slo, fail_on)
    if fail_on:
        print(f"\ngates (--fail-on {','.join(fail_on)}):")
        print("\n".join(gates.lines(judged)))
    failed = [r.engine for r in judged if r.gate == "ran" and r.outcome == "error"]
    if failed:
        print(f"engines that failed to run: {', '.join(failed)} (their logs are under {where})", file=sys.stderr)
    if junit_path:
        junit.write(Path(junit_path), judged, suite, results.now_iso())
        print(f"junit:   {junit_path}")
    code = gates.exit_code(judged)
    if fail_on:
        verdict = {gates.EXIT_PASS: "PASS", gates.EXIT_GATE_FAILED: "FAIL: a gate failed",
                   gates.EXIT_ENGINE_FAILED: "FAIL: an engine failed to run"}[code]
        print(f"gates: {verdict} (exit code {code})")
    return code


def cmd_engines(args: argparse.Namespace) -> int:
    if args.cost:
        return _engines_cost(args)
    rows = [["engine", "available", "needs", "description"]]
    server_note = ""
    for name in registry.names():
        engine = registry.load(name)
        reason = engine.unavailable_reason()
        available = "yes" if reason is None else f"no: {reason}"
        if reason is None and "temporal-server" in engine.services and temporalbuild.binaries() is None:
            available = "yes, once built (the first use builds it)"
            server_note = temporalbuild.status()
        rows.append([name, available, ", ".join(engine.services) or "-", engine.description])
    print(text_table(rows))
    if server_note:
        print(f"\ntemporal-server: {server_note}")
    print(_kafka_line())
    consumers = [name for name in registry.names() if event_consumer(registry.load(name))]
    print(f"event consumers (load.source: kafka): {', '.join(consumers) or 'none'}")
    lines = []
    for name in registry.names():
        by_reason: dict[str, list[str]] = {}
        for kind, why in stage_support(registry.load(name)).items():
            if why is not None:
                by_reason.setdefault(why, []).append(kind)
        if by_reason:
            lines.append(f"{name}: program stages it does not run: "
                         + "; ".join(f"{', '.join(kinds)} ({why})" for why, kinds in by_reason.items()))
    if lines:
        print("\n" + "\n".join(lines))
    return 0


def _kafka_line() -> str:
    """One line on the Kafka server (the exactly-once-events scenarios need it): runs here or why not."""
    from harness.run import kafka

    reason = kafka.unavailable_reason()
    if reason is not None:
        return f"kafka (server for event scenarios): no: {reason}"
    where = "jars cached" if kafka.jars_cached() else "jars fetched from Maven Central at first use"
    return (f"kafka (server for event scenarios): yes: Apache Kafka {kafka.KAFKA_VERSION}, "
            f"Java {kafka.java_version()}, {where}")


def cmd_check(args: argparse.Namespace) -> int:
    from harness.run import runner

    for path in args.scenarios:
        sc = scenario.load(path)
        try:
            engines = runner.validate(sc)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        print(f"{path}: ok ({', '.join(sc.engines)}; {sc.total_load_s:g}s of load, {len(sc.faults)} faults)")
        workload = sc.workload.to_workload(sc.seed)
        for name, engine in engines.items():
            reason = unsupported_stages(engine, workload)
            if reason:
                print(f"  {name} will be skipped: {reason}")
            elif sc.load.source == "kafka":
                print(f"  {name} events: {event_consumer(engine)}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    fail_on = gates.parse_fail_on(args.fail_on)
    target = Path(args.run_dir)
    if args.junit:
        junit.check_path(Path(args.junit))
    if runs.is_run_dir(target) or not target.is_dir():
        run_dirs = [target]
    else:  # a directory of repeated runs (durabench run --repeat N)
        found = runs.find_runs(target)
        if not found:
            raise UserError(f"{target}: not a durabench run directory and holds no runs (no manifest.json)")
        run_dirs = runs.repeated_runs(target) or []
        if not run_dirs:
            raise UserError(_not_analyzable(target, found))
    manifests = [results.load_manifest(d) for d in run_dirs]
    if len(run_dirs) > 1:
        runs.check_repetitions([runs.make_run(d, m, {"engines": {}}) for d, m in zip(run_dirs, manifests, strict=True)])
    slo = gates.slo_of(manifests[0]["scenario"])
    gates.require_slo(slo, fail_on, f"the scenario of {target}")
    summaries = _analyze_and_report(target, run_dirs)
    print(f"\nreport: {target / htmlreport.REPORT_MD}")
    return _judge(summaries, slo, fail_on, args.junit, str(manifests[0]["scenario"]["name"]), target)


def _not_analyzable(target: Path, found: list[Path]) -> str:
    """Why ``analyze`` refuses a directory that holds runs but is neither a run, a suite nor a directory of
    repeated runs (a results directory, a suite's parent), and what to analyze instead."""
    from harness.report import suite as suite_index

    parents = sorted({p.parent for p in found if p.parent != target})
    kinds = {d: "suite" for d in parents if suite_index.is_suite_dir(d)}
    kinds.update({d: "directory of repeated runs" for d in parents if d not in kinds and runs.repeated_runs(d)})
    if kinds:
        first = next(iter(kinds))
        more = f" and {len(kinds) - 1} more" if len(kinds) > 1 else ""
        where, fix = f"the {kinds[first]} {first.name}{more}", f"analyze it: durabench analyze {first}"
    elif len(found) == 1:
        where, fix = "one run directory", f"analyze it: durabench analyze {found[0]}"
    else:
        where = f"{len(found)} run directories that are not repetitions of one run"
        fix = f"analyze each run, e.g. durabench analyze {found[-1]}"
    return (f"{target}: not a run directory, a suite directory or a directory of repeated runs (durabench run "
            f"--repeat N): it holds {where}; {fix}")


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


def _engines_cost(args: argparse.Namespace) -> int:
    """``durabench engines --cost``: the integration cost of every engine that can run here. Servers are
    started once each (fresh, loopback) to measure their idle CPU and memory over ``--idle``."""
    from harness import integration
    from harness.report.integration import rows
    from harness.run import idle, services

    try:
        idle_s = scenario.parse_duration(args.idle)
    except ValueError as exc:
        raise UserError(f"--idle {args.idle!r}: {exc}") from None
    sc = scenario.load(args.scenario) if args.scenario else Scenario(name="engines-cost", engines=["memory"])
    workload = sc.workload.to_workload(sc.seed)
    blocks: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name in registry.names():
        engine = registry.load(name)
        reason = engine.unavailable_reason()
        if reason is not None:
            skipped.append(f"{name} ({reason})")
            continue
        blocks[name] = integration.describe(engine, engine.default_settings(workload, sc.workers.count))
    measured: dict[str, dict[str, Any]] = {}
    if idle_s > 0:
        wanted = sorted({svc for b in blocks.values() for svc in b["services"]})
        with tempfile.TemporaryDirectory(prefix="durabench-cost-") as logs:
            for svc_name in wanted:
                print(f"durabench: measuring {svc_name} idle for {idle_s:g}s", file=sys.stderr, flush=True)
                with services.running((svc_name,), Path(logs), sc.durability) as svc:
                    measured.update(idle.measure(svc, idle_s, settle_s=idle.SETTLE_S))
    for block in blocks.values():
        block["services_idle"] = {s: measured[s] for s in block["services"] if s in measured}
    print(text_table(rows(dict(blocks.items()), values=False)))
    wl = f"{workload.steps} steps x {workload.step_duration_s * 1000:g} ms, {sc.workers.count} workers"
    print(f"\nsettings sized for {wl}; durability profile {sc.durability}; idle over {idle_s:g}s per server, "
          f"{idle.SETTLE_S:g}s after it started; the values of changed settings are in `durabench run` reports")
    if skipped:
        print("not available here: " + "; ".join(skipped))
    return 0
