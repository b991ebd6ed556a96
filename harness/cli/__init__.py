"""The ``durabench`` command line.

    durabench run SCENARIO [--engines a,b] [--out DIR] [--duration 20s] [--rate N] [--workers K]
                           [--durability strict|relaxed|volatile] [--generator pacer|locust] [--locust-ui]
                           [--deploy processes|containers]
                           [--workers-docker-host URL|CONTEXT --advertise IP]
                           [--quiet] [--repeat N] [--fail-on violations,slo] [--junit FILE]
    durabench engines [--cost [--scenario FILE] [--idle 2s]]
    durabench check SCENARIO...
    durabench analyze RUN_DIR|SUITE_DIR [--fail-on violations,slo] [--junit FILE]
    durabench report RUN_DIR... [--out DIR]
    durabench compare RUN_DIR RUN_DIR... [--force] [--fail-on-regression]
    durabench ls [DIR]
    durabench front --config FRONT.json [--host 127.0.0.1] [--port 0]
    durabench locust-worker --master HOST:PORT
    durabench worker --config WORKER.json --collector URL [--spool DIR]
    durabench collect --dir HISTORY_DIR [--host 127.0.0.1] [--port 0]
    durabench suite DIR_OR_FILE... [--engines a,b] [--out DIR] [--name NAME] [--fail-on violations,slo]
    durabench image build [--base IMAGE] [--force]
    durabench serve postgres|redis|temporal|restate|temporal-server [--durability D] [--set KEY=VALUE]
                                                                (inside a container)
    durabench saturate SCENARIO [--engines a,b] [--start-rate R] [--factor 1.5] [--max-rate M]
                                [--p99-target-ms T] [--repetitions N] [--step-duration 10s] [--refine K]

A user error prints one line (what is wrong and how to fix it) and exits with code 2. Exit codes
(EXIT_CODES_HELP, README.md): 0 pass, 1 a gate failed, 2 user error, 3 an engine failed to run,
130 interrupted, 141 standard output closed (``durabench ls | head``): stopped quietly, as a process
killed by SIGPIPE would be (the Python docs' recipe: the rest of the output goes to /dev/null).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from types import FrameType

from harness.cli import containers, run, saturate, suite
from harness.cli.run import cmd_check, cmd_engines, cmd_run
from harness.errors import RunInterrupted, UserError
from harness.report import compare
from harness.report import html as htmlreport
from harness.run import front, locustload, shipping


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's is NoReturn too
        raise UserError(f"{message} (see durabench {self.prog.split()[-1]} --help)")


EXIT_CODES_HELP = """exit codes:
  0    pass (every engine ran; every gate of --fail-on passed)
  1    a gate of --fail-on failed (violations: the checker's verdict; slo: a limit of the scenario's slo block)
  2    user error: bad input (scenario, flags, paths, run directory), one line on stderr
  3    an engine failed to run (its logs are in the run directory); suite: a scenario failed
  130  interrupted (Ctrl-C or SIGTERM); every server and worker durabench started is stopped
  141  standard output closed by its reader (e.g. piped into head): stopped quietly"""
EXIT_STDOUT_CLOSED = 128 + signal.SIGPIPE  # what a shell reports for a process killed by SIGPIPE


def _gate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fail-on", metavar="GATES",
                   help="exit 1 when a gate fails: violations (the checker's verdict: lost or unexpected workflows, "
                        "missing or replayed steps), slo (the scenario's slo limits); e.g. violations,slo")
    p.add_argument("--junit", metavar="FILE", help="write the gates as JUnit XML (one test case per engine and gate)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="durabench", description="Benchmark durable workflow engines under faults.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run a scenario against engines", epilog=EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario")
    p.add_argument("--engines", help="comma-separated engine names (overrides the scenario)")
    p.add_argument("--out", default=str(run.DEFAULT_OUT), help="results directory (default: results)")
    p.add_argument("--duration", help="measured load duration, e.g. 30s")
    p.add_argument("--rate", type=float, help="offered rate, workflows/s")
    p.add_argument("--workers", type=int, help="worker processes per engine")
    p.add_argument("--durability", help="strict | relaxed | volatile")
    p.add_argument("--generator", help="pacer | locust: who sends the load (docs/scenarios.md)")
    p.add_argument("--locust-ui", action="store_true", help="serve Locust's web UI (loopback) during a Locust run")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="run every engine N times, interleaved (A B A B ...); the report shows medians with min-max")
    _gate_flags(p)
    p.add_argument("--deploy", choices=["processes", "containers"],
                   help="servers and workers as child processes (default) or as containers (docs/scenarios.md)")
    p.add_argument("--workers-docker-host", metavar="URL|CONTEXT",
                   help="with --deploy containers: the Docker daemon that runs the worker containers (servers stay "
                        "on this machine's daemon); needs --advertise (docs/containers.md, Multi-host)")
    p.add_argument("--advertise", metavar="IP",
                   help="this machine's address as the workers' daemon host reaches it: the servers' ports are "
                        "published there too (only when given)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("engines", help="list installed engine adapters and what each needs")
    p.add_argument("--cost", action="store_true",
                   help="integration cost: workflow lines, servers and their idle CPU/memory, defaults changed")
    p.add_argument("--scenario", help="size the settings for this scenario's workload and workers "
                   "(default: the scenario defaults, 3 steps x 50 ms, 2 workers)")
    p.add_argument("--idle", default="2s",
                   help="idle window per server for --cost (default 2s; 0s skips starting them)")
    p.set_defaults(func=cmd_engines)
    p = sub.add_parser("check", help="validate scenario files without running them")
    p.add_argument("scenarios", nargs="+")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("analyze", help="rebuild summary and report of a run from its files; re-judge its gates",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory, a directory of repeated runs (run --repeat N), or a suite "
                   "directory (durabench suite): every run in it, then its index")
    _gate_flags(p)
    p.set_defaults(func=suite.cmd_analyze)  # a suite directory there, any other in run.cmd_analyze
    htmlreport.register(sub)
    front.register(sub)
    locustload.register(sub)
    shipping.register(sub)
    compare.register(sub)
    run.register_ls(sub)
    saturate.register(sub)
    suite.register(sub, EXIT_CODES_HELP)
    containers.register(sub, _Parser)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: workers and servers are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away shows here, not as "Exception ignored" at exit
        return code
    except UserError as exc:
        print(f"durabench: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt as exc:
        print("durabench: interrupted; every server and worker it started has been stopped", file=sys.stderr)
        if isinstance(exc, RunInterrupted):
            print(f"durabench: partial results of {exc.engine} in {exc.run_dir}: durabench analyze {exc.run_dir}",
                  file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():  # a socket's EPIPE, say: a real error, not the reader of stdout gone
            raise
        # the reader of stdout went away (``| head``): no traceback, and no second error when Python
        # flushes stdout at exit (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        _stdout_to_devnull()
        return EXIT_STDOUT_CLOSED


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports POLLERR on it)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor, or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
