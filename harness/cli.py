"""The ``durabench`` command line.

    durabench run SCENARIO [--engines a,b] [--out DIR] [--duration 20s] [--rate N] [--workers K]
                           [--durability strict|relaxed|volatile] [--quiet]
    durabench engines
    durabench check SCENARIO...
    durabench analyze RUN_DIR
    durabench report RUN_DIR... [--out DIR]
    durabench compare RUN_DIR RUN_DIR... [--force]
    durabench ls [DIR]
    durabench saturate SCENARIO [--engines a,b] [--start-rate R] [--factor 1.5] [--max-rate M]
                                [--p99-target-ms T] [--repetitions N] [--step-duration 10s] [--refine K]

A user error prints one line (what is wrong and how to fix it) and exits with code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from harness import compare, htmlreport, registry, report, results, runs, saturate, scenario
from harness.errors import UserError

DEFAULT_OUT = Path("results")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's is NoReturn too
        raise UserError(f"{message} (see durabench {self.prog.split()[-1]} --help)")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    if args.engines is not None and not engines:
        raise UserError("--engines is empty; give a comma-separated list such as dbos,temporal")
    return {"engines": engines, "duration": args.duration, "rate": args.rate, "workers": args.workers,
            "durability": args.durability}


def cmd_run(args: argparse.Namespace) -> int:
    from harness import runner

    sc = scenario.load(args.scenario, _overrides(args))
    run_dir = runner.run(sc, Path(args.out), progress=not args.quiet)
    summary = results.read_json(run_dir / "summary.json")
    print(report.text_table(report.headline_rows(summary)))
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
    print(report.text_table(rows))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness import runner

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
    summary = results.analyze(run_dir)
    path = report.write(run_dir, manifest, summary)
    print(report.text_table(report.headline_rows(summary)))
    print(f"\nreport: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="durabench", description="Benchmark durable workflow engines under faults.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run a scenario against engines")
    p.add_argument("scenario")
    p.add_argument("--engines", help="comma-separated engine names (overrides the scenario)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results directory (default: results)")
    p.add_argument("--duration", help="measured load duration, e.g. 30s")
    p.add_argument("--rate", type=float, help="offered rate, workflows/s")
    p.add_argument("--workers", type=int, help="worker processes per engine")
    p.add_argument("--durability", help="strict | relaxed | volatile")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("engines", help="list installed engine adapters and what each needs")
    p.set_defaults(func=cmd_engines)
    p = sub.add_parser("check", help="validate scenario files without running them")
    p.add_argument("scenarios", nargs="+")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("analyze", help="rebuild summary and report of a run from its files")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_analyze)
    htmlreport.register(sub)
    compare.register(sub)
    runs.register(sub)
    saturate.register(sub)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: workers and servers are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except UserError as exc:
        print(f"durabench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("durabench: interrupted; every server and worker it started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
