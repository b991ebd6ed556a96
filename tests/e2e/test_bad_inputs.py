"""Every malformed input the CLI reads is refused in one line, exit 2, no traceback, nothing lost.

The table covers scenario files of any bytes, every flag of every subcommand, output paths, and
run directories with missing, corrupt or truncated files. Cases fail before any server starts, so
they run in-process through ``harness.cli.main`` (the same entry point as the ``durabench``
script; an exception escaping it would be the traceback a user sees). Run directories are the
synthetic runs of tests/unit/runbuilder.py. A torn last ledger line (a crash mid-write) is not an
error: the run is analyzed and the torn record counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli import main
from tests.conftest import ROOT
from tests.unit import runbuilder

pytestmark = pytest.mark.e2e

GOOD = "name: t\nengines: [memory]\nload: {duration: 1s}\n"


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # "{s}" is the scenario file, "{run}" a copy of a synthetic run, "{tmp}" a scratch directory
    message: str  # a part of the one error line
    scenario: bytes = GOOD.encode()
    damage: Callable[[Path], None] | None = None  # applied to the run copy before the command


def write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = run / rel
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return apply


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = run / rel
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * keep)])
    return apply


def remove(rel: str) -> Callable[[Path], None]:
    return lambda run: (run / rel).unlink()


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        data = json.loads((run / "manifest.json").read_text())
        change(data)
        (run / "manifest.json").write_text(json.dumps(data))
    return apply


A = "engines/alpha"
CASES = [
    # -- scenario files: bytes, YAML, fields
    Case("scenario-binary", ["check", "{s}"], "not UTF-8 text", b"name: t\n\xff\xfe\x00\x81garbage"),
    Case("scenario-latin1", ["run", "{s}"], "not UTF-8 text", "name: caf\u00e9\n".encode("latin-1")),
    Case("scenario-nul-bytes", ["check", "{s}"], "not valid YAML", b"name: t\x00\x01\x02\n"),
    Case("scenario-empty", ["check", "{s}"], "expected a mapping", b""),
    Case("scenario-list", ["check", "{s}"], "expected a mapping", b"- a\n- b\n"),
    Case("scenario-bad-yaml", ["check", "{s}"], "not valid YAML", b"name: t\nengines: [memory\n"),
    Case("scenario-python-tag", ["check", "{s}"], "not valid YAML", b"name: !!python/object:os.system x\n"),
    Case("scenario-duplicate-key", ["check", "{s}"], ":4: not valid YAML: duplicate key 'engines'",
         b"name: t\nengines: [memory]\nseed: 1\nengines: [dbos]\n"),
    Case("scenario-duplicate-nested-key", ["run", "{s}"], "duplicate key 'rate' (first given on line 3)",
         b"name: t\nengines: [memory]\nload: {rate: 5,\n  rate: 6}\n"),
    Case("scenario-engine-twice", ["check", "{s}"], "'memory' is listed twice",
         b"name: t\nengines: [memory, memory]\n"),
    Case("flag-engine-twice", ["run", "{s}", "--engines", "memory,memory"], "'memory' is listed twice"),
    Case("scenario-unknown-setting", ["check", "{s}"], "has no setting 'durabel'; its settings are: durable",
         (GOOD + "engine_settings: {memory: {durabel: true}}\n").encode()),
    Case("run-unknown-setting", ["run", "{s}", "--out", "{tmp}/out"], "has no setting 'durabel'",
         (GOOD + "engine_settings: {memory: {durabel: true}}\n").encode()),
    Case("variant-unknown-setting", ["check", "{s}"], "variants.0.engine_settings.memory.nope",
         (GOOD + "variants: [{name: v, engine_settings: {memory: {nope: 1}}}]\n").encode()),
    Case("scenario-unknown-field", ["check", "{s}"], "wrkers is not a known field", (GOOD + "wrkers: {}\n").encode()),
    Case("scenario-unknown-durability", ["check", "{s}"], "durability", (GOOD + "durability: paranoid\n").encode()),
    Case("scenario-steps-nan", ["check", "{s}"], "workload.steps", (GOOD + "workload: {steps: .nan}\n").encode()),
    Case("slo-unknown-key", ["check", "{s}"], "slo.all.max_p99 is not a known field",
         (GOOD + "slo: {all: {max_p99: 1s}}\n").encode()),
    Case("slo-unknown-engine", ["check", "{s}"], "slo.engines.dbos: expected one of the scenario's engines",
         (GOOD + "slo: {engines: {dbos: {max_lost: 0}}}\n").encode()),
    Case("slo-negative", ["check", "{s}"], "slo.all.max_lost", (GOOD + "slo: {all: {max_lost: -1}}\n").encode()),
    Case("scenario-is-directory", ["run", "{tmp}"], "is a directory, not a scenario file"),
    Case("scenario-missing", ["check", "{tmp}/nope.yaml"], "no such scenario file"),
    # -- flags of run
    Case("rate-negative", ["run", "{s}", "--rate", "-3"], "load.rate"),
    Case("rate-zero", ["run", "{s}", "--rate", "0"], "load.rate"),
    Case("rate-nan", ["run", "{s}", "--rate", "nan"], "load.rate"),
    Case("rate-inf", ["run", "{s}", "--rate", "inf"], "load.rate"),
    Case("rate-word", ["run", "{s}", "--rate", "fast"], "invalid float value: 'fast'"),
    Case("workers-zero", ["run", "{s}", "--workers", "0"], "workers.count"),
    Case("workers-negative", ["run", "{s}", "--workers", "-2"], "workers.count"),
    Case("workers-word", ["run", "{s}", "--workers", "two"], "invalid int value"),
    Case("duration-zero", ["run", "{s}", "--duration", "0s"], "load.duration must be longer than 0s"),
    Case("duration-negative", ["run", "{s}", "--duration=-5s"], "expected a duration"),
    Case("duration-nan", ["run", "{s}", "--duration", "nan"], "expected a duration"),
    Case("durability-unknown", ["run", "{s}", "--durability", "paranoid"], "durability"),
    Case("engines-empty", ["run", "{s}", "--engines", ","], "--engines is empty"),
    Case("engines-unknown", ["run", "{s}", "--engines", "memory,nosuch"], "unknown engine 'nosuch'"),
    Case("repeat-zero", ["run", "{s}", "--repeat", "0"], "--repeat 0: expected a number of repetitions"),
    Case("repeat-negative", ["run", "{s}", "--repeat", "-2"], "--repeat -2"),
    Case("repeat-huge", ["run", "{s}", "--repeat", "1000"], "from 1 to 100"),
    Case("fail-on-unknown", ["run", "{s}", "--fail-on", "slo,bogus"], "unknown gate 'bogus'"),
    Case("fail-on-empty", ["run", "{s}", "--fail-on", ""], "--fail-on is empty"),
    Case("fail-on-slo-without-slo", ["run", "{s}", "--fail-on", "slo"], "sets no limit"),
    Case("out-is-file", ["run", "{s}", "--out", "{s}"], "is a file, not a directory"),
    Case("out-under-file", ["run", "{s}", "--out", "{s}/sub"], "cannot create the results directory"),
    Case("junit-is-directory", ["run", "{s}", "--junit", "{tmp}"], "is a directory"),
    Case("junit-under-file", ["run", "{s}", "--junit", "{s}/j.xml"], "is a file, not a directory"),
    Case("unknown-flag", ["run", "{s}", "--bogus"], "unrecognized arguments: --bogus"),
    Case("run-no-scenario", ["run"], "the following arguments are required: scenario"),
    Case("unknown-command", ["frobnicate"], "invalid choice"),
    # -- flags of saturate, ls, report, compare
    Case("saturate-factor-one", ["saturate", "{s}", "--factor", "1"], "bad saturate setting"),
    Case("saturate-start-negative", ["saturate", "{s}", "--start-rate", "-1"], "bad saturate setting"),
    Case("saturate-repetitions-zero", ["saturate", "{s}", "--repetitions", "0"], "bad saturate setting"),
    Case("saturate-refine-negative", ["saturate", "{s}", "--refine", "-1"], "--refine -1"),
    Case("saturate-max-rate-nan", ["saturate", "{s}", "--max-rate", "nan"], "bad saturate setting"),
    Case("saturate-p99-negative", ["saturate", "{s}", "--p99-target-ms", "-5"], "bad saturate setting"),
    Case("saturate-workers-zero", ["saturate", "{s}", "--workers", "0"], "workers.count"),
    Case("saturate-step-duration", ["saturate", "{s}", "--step-duration", "soon"], "--step-duration"),
    Case("saturate-out-is-file", ["saturate", "{s}", "--out", "{s}"], "is a file, not a directory"),
    Case("ls-missing", ["ls", "{tmp}/nope"], "no such results directory"),
    Case("report-out-is-file", ["report", "{run}", "--out", "{run}/manifest.json"], "is a file, not a directory"),
    Case("analyze-group-not-repetitions", ["analyze", "{tmp}/.."], "not a repetition of",
         damage=lambda run: _other_scenario(run, run.parent / "run2", repetitions=True)),
    Case("analyze-runs-not-a-group", ["analyze", "{tmp}/.."],
         "holds 2 run directories that are not repetitions of one run; analyze each run",
         damage=lambda run: _other_scenario(run, run.parent / "run2")),
    Case("compare-one-run", ["compare", "{run}"], "at least two runs"),
    Case("compare-missing", ["compare", "{run}", "{tmp}/nope"], "holds no runs"),
    # -- run directories: missing, corrupt, truncated files
    Case("analyze-missing-dir", ["analyze", "{tmp}/nope"], "not a durabench run directory"),
    Case("analyze-empty-dir", ["analyze", "{tmp}"], "holds no runs"),
    Case("manifest-truncated", ["analyze", "{run}"], "manifest.json: corrupt or truncated JSON",
         damage=truncate("manifest.json")),
    Case("manifest-binary", ["analyze", "{run}"], "manifest.json: corrupt (not UTF-8",
         damage=write("manifest.json", b"\xff\xd8\xff\xe0")),
    Case("manifest-list", ["analyze", "{run}"], "no valid schema_version", damage=write("manifest.json", "[1, 2]")),
    Case("manifest-no-scenario", ["analyze", "{run}"], "field scenario is missing",
         damage=edit_manifest(lambda m: m.pop("scenario"))),
    Case("manifest-steps-string", ["analyze", "{run}"], "scenario.workload.steps is missing or not a int",
         damage=edit_manifest(lambda m: m["scenario"]["workload"].update(steps="3"))),
    Case("manifest-newer", ["analyze", "{run}"], "newer than this durabench reads",
         damage=edit_manifest(lambda m: m.update(schema_version=999))),
    Case("manifest-bad-slo", ["analyze", "{run}", "--fail-on", "slo"], "slo block this durabench cannot read",
         damage=edit_manifest(lambda m: m["scenario"].update(slo={"all": {"nope": 1}}))),
    Case("analyze-fail-on-slo-without-slo", ["analyze", "{run}", "--fail-on", "slo"], "sets no limit"),
    Case("analyze-junit-is-directory", ["analyze", "{run}", "--junit", "{tmp}"], "is a directory"),
    Case("reconcile-truncated", ["analyze", "{run}"], "reconcile.json: corrupt or truncated JSON",
         damage=write(f"{A}/reconcile.json", '{"wf-001": {"status": "compl')),
    Case("reconcile-wrong-shape", ["analyze", "{run}"], "reconcile.json: expected a JSON object",
         damage=write(f"{A}/reconcile.json", "[]")),
    Case("reconcile-bad-record", ["analyze", "{run}"], "not in the reconcile format",
         damage=write(f"{A}/reconcile.json", '{"wf-001": {"state": "done"}}')),
    Case("floors-truncated", ["analyze", "{run}"], "floors.json: corrupt or truncated JSON",
         damage=write(f"{A}/floors.json", '{"stores": {"postgres": {"commit_rtt_us": [1, 2')),
    Case("floors-wrong-shape", ["analyze", "{run}"], "not in the floors format",
         damage=write(f"{A}/floors.json", '{"stores": [1]}')),
    Case("history-corrupt-line", ["analyze", "{run}"], "all.1.jsonl:2: corrupt record",
         damage=lambda run: _corrupt_line(run / A / "history" / "all.1.jsonl", 1)),
    Case("resources-corrupt-line", ["report", "{run}"], "resources.jsonl:1: corrupt record",
         damage=write(f"{A}/resources.jsonl", '{"ns": 1, "component": "x"\n')),
    Case("summary-truncated-report", ["report", "{run}"], "rebuild it with: durabench analyze",
         damage=truncate("summary.json")),
    Case("summary-missing-report", ["report", "{run}"], "summary.json: missing", damage=remove("summary.json")),
    Case("summary-wrong-shape-compare", ["compare", "{run}", "{run}"], "field engines is missing",
         damage=write("summary.json", '{"engines": []}')),
    Case("histograms-truncated-report", ["report", "{run}"], "histograms.json: corrupt or truncated JSON",
         damage=truncate(f"{A}/histograms.json", 0.3)),
    Case("histograms-undecodable-report", ["report", "{run}"], "histograms.json: histogram",
         damage=write(f"{A}/histograms.json", '{"histograms": {"e2e_latency": "not base64!"}}')),
]


def _corrupt_line(path: Path, index: int) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[index] = b"{not json"
    path.write_bytes(b"\n".join(lines))


def _other_scenario(run: Path, copy: Path, repetitions: bool = False) -> None:
    """A second run beside ``run`` with another rate; both marked as repetitions of `run --repeat 2` or not."""
    shutil.copytree(run, copy)
    edit_manifest(lambda m: m["scenario"]["load"].update(rate=99.0))(copy)
    if repetitions:
        for i, r in enumerate((run, copy), 1):
            edit_manifest(lambda m, i=i: m.update(repetition={"index": i, "of": 2}))(r)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runbuilder.make_run(tmp_path_factory.mktemp("base"), engines=("alpha",))


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    yield
    signal.signal(signal.SIGTERM, saved)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(case: Case, base_run: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scenario = tmp_path / "scenario.yaml"
    scenario.write_bytes(case.scenario)
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    if case.damage is not None:
        case.damage(run)
    before = _snapshot(run)
    args = [a.replace("{s}", str(scenario)).replace("{run}", str(run)).replace("{tmp}", str(scratch))
            for a in case.args]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durabench: error: "), err
    assert case.message in lines[0], lines[0]
    assert "Traceback" not in err + out
    after = _snapshot(run)
    assert {k: after.get(k) for k in before} == before  # nothing of the run was changed or removed
    assert list(scratch.iterdir()) == []  # nothing was created where the error was


def test_torn_last_ledger_line_is_analyzed_and_counted(base_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A crash mid-write leaves a partial last line: the run is still analyzed, the record counted and
    reported. Derived files that are corrupt are simply rebuilt."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    before = json.loads((run / "summary.json").read_text())["engines"]["alpha"]
    with (run / A / "history" / "all.1.jsonl").open("ab") as fh:
        fh.write(b'{"ev":"step_start","ns":17960228671894')  # the writer died mid-record
    (run / A / "checker.json").write_text("{trunc")
    (run / "summary.json").write_text('{"engines": {')
    assert main(["analyze", str(run)]) == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())["engines"]["alpha"]
    assert summary["torn_ledger_records"] == 1 and before["torn_ledger_records"] == 0
    assert summary["completed"] == before["completed"]  # every complete record still counts
    json.loads((run / A / "checker.json").read_text())
    assert "1 ledger record(s) torn by a crash mid-write" in (run / "report.md").read_text()


def test_shipped_scenarios_still_pass_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The stricter loader (duplicate keys, engine settings) accepts every shipped scenario."""
    files = sorted(str(p) for p in (ROOT / "scenarios").glob("*.yaml"))
    assert main(["check", *files]) == 0, capsys.readouterr().err
