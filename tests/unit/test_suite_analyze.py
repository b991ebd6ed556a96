"""``durabench analyze SUITE_DIR`` on synthetic suites (tests/unit/runbuilder.py run directories): every run
re-analyzed and the index rewritten with the new figures; a suite written before ``suite.json``; a run moved
in by hand; gates as for a suite; bad input refused with nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import results
from harness.analysis import gates, runs
from harness.cli import main
from harness.report import suite as index
from tests.unit import runbuilder

ONE, TWO = "20260101T000000Z-one", "20260101T000100Z-two"


def _suite(tmp_path: Path) -> Path:
    """A suite as ``durabench suite`` leaves it: two runs (1 and 2 lost workflows per engine), one scenario
    not run (the suite was interrupted before it)."""
    suite_dir = tmp_path / "20260101T000000Z-suite-x"
    one = runbuilder.make_run(suite_dir, ONE, lost=1)
    two = runbuilder.make_run(suite_dir, TWO, lost=2)
    entries = [index.SuiteEntry("x/one.yaml", "one", status=index.OK, run_dir=one, elapsed_s=12.0),
               index.SuiteEntry("x/two.yaml", "two", status=index.OK, run_dir=two, elapsed_s=30.0),
               index.SuiteEntry("x/three.yaml", "three")]
    for e in entries[:2]:
        e.summary = results.load_summary(e.run_dir)  # type: ignore[arg-type]  # set just above
    index.write_index(suite_dir, "durabench suite: x", entries, "2026-01-01T00:00:00+00:00", "x")
    return suite_dir


def _lost(index_md: str, scenario: str) -> list[int]:
    """The lost column of a scenario's answer table in index.md, one value per engine."""
    section = index_md.split(f"### {scenario}\n", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return [int(row[header.index("lost")]) for row in rows]


def _rewrite_history(run_dir: Path, lost: int) -> None:
    """The run's raw history changed on disk (as if analysis of other files changed the figures)."""
    for engine in ("alpha", "beta"):
        events = runbuilder.history(lost=lost).sorted()
        path = results.engine_dir(run_dir, engine) / "history" / "all.1.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_suite_json_records_the_entries(tmp_path: Path) -> None:
    suite_dir = _suite(tmp_path)
    data = json.loads((suite_dir / index.SUITE_JSON).read_text())
    assert data["name"] == "x" and data["title"] == "durabench suite: x"
    assert data["started_at"] == "2026-01-01T00:00:00+00:00"
    assert [(e["name"], e["path"], e["status"], e["run_dir"], e["elapsed_s"]) for e in data["entries"]] == [
        ("one", "x/one.yaml", "ok", ONE, 12.0), ("two", "x/two.yaml", "ok", TWO, 30.0),
        ("three", "x/three.yaml", "not run", None, None)]
    loaded = index.load(suite_dir)
    assert [(e.name, e.run_dir) for e in loaded.entries] == [
        ("one", suite_dir / ONE), ("two", suite_dir / TWO), ("three", None)]


def test_reanalyzed_suite_shows_the_new_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_dir = _suite(tmp_path)
    before = (suite_dir / index.INDEX_MD).read_text()
    assert _lost(before, "one") == [1, 1] and _lost(before, "two") == [2, 2]
    _rewrite_history(suite_dir / TWO, lost=0)
    assert main(["analyze", str(suite_dir)]) == gates.EXIT_PASS
    err = capsys.readouterr().err
    assert "[analyze 1/3] one: " + ONE in err and "[analyze 2/3] two: " + TWO in err  # a progress line per run
    assert "[analyze 3/3] three: no run directory to analyze" in err
    after = (suite_dir / index.INDEX_MD).read_text()
    assert _lost(after, "one") == [1, 1] and _lost(after, "two") == [0, 0]
    assert results.load_summary(suite_dir / TWO)["engines"]["alpha"]["lost"] == 0  # the run's own summary
    assert "x/two.yaml" in after and "| 0.5 |" in after  # file and minutes kept from suite.json
    assert "2 of 3 scenarios run, 0 failed" in after
    assert "<table>" in (suite_dir / index.INDEX_HTML).read_text()
    # the gates of --fail-on, as for a suite: run one still loses workflows
    assert main(["analyze", str(suite_dir), "--fail-on", "violations"]) == gates.EXIT_GATE_FAILED
    assert "one | x/one.yaml | ok: gates failed: alpha violations; beta violations" in (
        suite_dir / index.INDEX_MD).read_text()


def test_suite_without_suite_json_is_rebuilt_from_its_runs(tmp_path: Path) -> None:
    suite_dir = _suite(tmp_path)
    (suite_dir / index.SUITE_JSON).unlink()  # a suite written before suite.json existed
    assert index.is_suite_dir(suite_dir)
    _rewrite_history(suite_dir / ONE, lost=3)
    assert main(["analyze", str(suite_dir)]) == gates.EXIT_PASS
    md = (suite_dir / index.INDEX_MD).read_text()
    assert md.startswith("# durabench suite: x\n") and "Started 2026-01-01T00:00:00+00:00;" in md
    # entries from the manifests, in name (time) order; elapsed from the engines' wall_s (2 x 9 s)
    table = [line for line in md.split("## Answers")[0].splitlines() if line.startswith("| synthetic")]
    assert [row.split("|")[6].strip() for row in table] == [f"`{ONE}`", f"`{TWO}`"]
    assert all(row.split("|")[4].strip() == "0.3" for row in table)
    assert "2 of 2 scenarios run" in md
    # the scenario files, which the manifests of these runs do not record, from the old index's table
    assert [row.split("|")[2].strip() for row in table] == ["x/one.yaml", "x/two.yaml"]
    data = json.loads((suite_dir / index.SUITE_JSON).read_text())  # written now
    assert [e["run_dir"] for e in data["entries"]] == [ONE, TWO]
    sections = md.split("### synthetic\n")[1:]
    assert [_lost("### synthetic\n" + s, "synthetic") for s in sections] == [[3, 3], [2, 2]]


def test_run_moved_into_a_suite_is_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_dir = _suite(tmp_path)
    other = runbuilder.make_run(tmp_path / "elsewhere", "20260101T000200Z-moved", lost=0)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["scenario_file"] = "scenarios/moved.yaml"  # as durabench run records it
    results.write_json(other / "manifest.json", manifest)
    other.rename(suite_dir / other.name)
    assert main(["analyze", str(suite_dir)]) == gates.EXIT_PASS
    err = capsys.readouterr().err
    assert "1 not in suite.json (moved in)" in err
    assert "[analyze 4/4] synthetic: 20260101T000200Z-moved (moved in: not in suite.json, added)" in err
    data = json.loads((suite_dir / index.SUITE_JSON).read_text())
    assert [e["name"] for e in data["entries"]] == ["one", "two", "three", "synthetic"]
    md = (suite_dir / index.INDEX_MD).read_text()
    assert "| synthetic | scenarios/moved.yaml | ok |" in md  # its file, from its manifest
    assert "[report.html](20260101T000200Z-moved/report.html)" in md and (
        suite_dir / "20260101T000200Z-moved" / "report.html").is_file()
    assert _lost(md, "synthetic") == [0, 0]


@pytest.mark.parametrize("broken, says", [
    ('{"entries": 3', "corrupt or truncated JSON"),
    ('{"title": "t", "started_at": "s", "entries": [{"name": "a", "path": "p", "status": "weird"}]}',
     "entries[0].status 'weird' is not one of"),
    ('{"title": "t", "started_at": "s", "entries": [{"name": "a", "path": "p", "status": "ok", "run_dir": "../x"}]}',
     "is not the name of a directory in the suite"),
    ("[]", "expected a JSON object"),
])
def test_broken_suite_json_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str,
                                           says: str) -> None:
    suite_dir = _suite(tmp_path)
    (suite_dir / index.SUITE_JSON).write_text(broken)
    _rewrite_history(suite_dir / ONE, lost=0)
    files = {p: p.read_bytes() for p in suite_dir.rglob("*") if p.is_file()}
    assert main(["analyze", str(suite_dir)]) == gates.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("durabench: error: ") and says in err and len(err.strip().splitlines()) == 1
    assert "delete" in err  # the fix: without suite.json the entries are rebuilt from the run directories
    assert {p: p.read_bytes() for p in suite_dir.rglob("*") if p.is_file()} == files


def test_a_broken_run_manifest_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_dir = _suite(tmp_path)
    (suite_dir / TWO / "manifest.json").write_text("{")
    files = {p: p.read_bytes() for p in suite_dir.rglob("*") if p.is_file()}
    assert main(["analyze", str(suite_dir)]) == gates.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("durabench: error: ") and "manifest.json: corrupt or truncated JSON" in err
    assert {p: p.read_bytes() for p in suite_dir.rglob("*") if p.is_file()} == files


def test_gates_junit_interrupted_and_missing_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_dir = _suite(tmp_path)
    manifest = json.loads((suite_dir / ONE / "manifest.json").read_text())
    manifest["interrupted"] = {"engine": "beta", "at": "2026-01-01T00:00:09+00:00"}  # Ctrl-C during the suite
    results.write_json(suite_dir / ONE / "manifest.json", manifest)
    (suite_dir / TWO).rename(tmp_path / TWO)  # moved out of the suite by hand
    junit_xml = tmp_path / "junit.xml"
    assert main(["analyze", str(suite_dir), "--fail-on", "violations", "--junit", str(junit_xml)]) == (
        gates.EXIT_GATE_FAILED)
    err = capsys.readouterr().err
    assert f"[analyze 2/3] two: no run directory to analyze, kept as recorded (ok: run directory {TWO} missing)" in (
        err)
    md = (suite_dir / index.INDEX_MD).read_text()
    assert "| one | x/one.yaml | interrupted: interrupted while beta ran; gates failed: alpha violations" in md
    assert f"run directory {TWO} missing" in md
    assert "1 of 3 scenarios run, 0 failed" in md  # an interrupted run is not counted as run
    xml = junit_xml.read_text()
    assert 'classname="durabench.x.one.alpha" name="violations"' in xml  # scenario and engine per test case
    assert "durabench.x.two." not in xml


def test_analyze_refuses_a_directory_that_is_no_run_suite_or_repeat_group(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A suite's parent (results/) and a directory of unrelated runs were pooled as repetitions of one run."""
    parent = tmp_path / "results"
    suite_dir = _suite(parent)
    runbuilder.make_run(parent, "20260102T000000Z-lone", lost=0)
    loose = tmp_path / "loose"
    for name in ("20260101T000000Z-a", "20260101T000100Z-b"):  # same scenario, not made by --repeat
        runbuilder.make_run(loose, name, lost=0)
    for target, says in ((parent, f"it holds the suite {suite_dir.name}; analyze it: durabench analyze {suite_dir}"),
                         (loose, "it holds 2 run directories that are not repetitions of one run; analyze each run, "
                                 f"e.g. durabench analyze {loose / '20260101T000100Z-b'}")):
        files = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert main(["analyze", str(target)]) == gates.EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith(f"durabench: error: {target}: not a run directory, a suite directory or a directory "
                              "of repeated runs") and says in err and len(err.strip().splitlines()) == 1, err
        assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == files  # no report written there
    # a group made before manifests recorded the repetition: its runs' names say it
    old_group = tmp_path / "20260101T000000Z-synthetic-x2"
    for i in (1, 2):
        runbuilder.make_run(old_group, f"2026010{i}T000000Z-synthetic-rep{i}", lost=0)
    assert runs.repeated_runs(old_group) == sorted(old_group.iterdir())
    assert runs.repeated_runs(loose) is None and runs.repeated_runs(parent) is None
    # a directory of repeated runs is still analyzed as one: marked as repetitions by their manifests
    for i, run_dir in enumerate(sorted(loose.iterdir()), 1):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        manifest["repetition"] = {"index": i, "of": 2}
        results.write_json(run_dir / "manifest.json", manifest)
    assert main(["analyze", str(loose)]) == gates.EXIT_PASS
    assert (loose / "report.md").is_file()


def test_a_scenario_loaded_from_a_file_is_recorded_in_the_manifest(tmp_path: Path) -> None:
    from harness import scenario
    from harness.run import runner

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nengines: [memory]\n")
    sc = scenario.load(str(path))
    assert sc.source_file == str(path) and "source_file" not in sc.model_dump()
    assert runner._manifest(sc, tmp_path / "run", None)["scenario_file"] == str(path)
    assert scenario.parse({"name": "x", "engines": ["memory"]}, "x").source_file is None
