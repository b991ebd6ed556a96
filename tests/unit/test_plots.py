"""Charts, the run loader and the report on synthetic runs (tests/unit/runbuilder.py): every plot
function draws what it says from the files of a run and every figure carries its context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from harness.analysis import runs
from harness.errors import UserError
from harness.report import html as htmlreport
from harness.report import plots
from tests.unit import runbuilder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runbuilder.make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run(run_dir: Path) -> runs.Run:
    return runs.load_run(run_dir)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> list[runs.Run]:
    root = tmp_path_factory.mktemp("repeated")
    return [runs.load_run(runbuilder.make_run(root, f"2026010{i}T000000Z-synthetic", slow_ms=5.0 * i,
                                              created_at=f"2026-01-0{i}T00:00:00+00:00")) for i in (1, 2, 3)]


def _ax() -> Axes:
    return Figure().add_subplot()


def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_loader_reads_every_file_of_a_run(run: runs.Run) -> None:
    assert run.scenario_name == "synthetic" and run.durability == "strict"
    alpha = run.engines["alpha"]
    assert alpha.ok and alpha.steps == 3
    wf = alpha.workflows
    assert len(wf) == 70
    assert wf["e2e_ms"].notna().sum() == 69  # the lost workflow has no latency
    assert wf["measured"].sum() == 60  # intended starts inside the 6 s measured window
    assert alpha.histograms["e2e_latency"].get_total_count() == alpha.summary["e2e_latency_ms"]["count"]
    assert len(alpha.sub_windows) == runs.SUB_WINDOWS
    assert sum(w["e2e_latency_ms"]["count"] for w in alpha.sub_windows) == alpha.summary["e2e_latency_ms"]["count"]
    assert len(alpha.per_second_throughput()) == 6
    assert alpha.resources is None
    assert run.verdicts() == {"alpha": "violations", "beta": "violations"}


def test_loader_refuses_a_run_without_summary(tmp_path: Path, run_dir: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text((run_dir / "manifest.json").read_text())
    with pytest.raises(UserError, match="durabench analyze"):
        runs.load_run(bare)
    with pytest.raises(UserError, match="not a durabench run directory"):
        runs.load_run(tmp_path / "nothing")


def test_latency_spectrum_is_log_log_with_a_line_per_engine(run: runs.Run) -> None:
    ax = plots.latency_spectrum(_ax(), run)
    labels = [str(line.get_label()) for line in ax.get_lines() if not str(line.get_label()).startswith("_")]
    assert [label.split(" ")[0] for label in labels] == ["alpha", "beta"]
    assert "p99" in labels[0] and "(n=59)" in labels[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "ms" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0%", "50%", "90%"]  # 59 samples: no p99 tick


def test_throughput_over_time_shades_and_labels_the_fault(run: runs.Run) -> None:
    ax = plots.throughput_over_time(_ax(), run)
    legend = _legend(ax)
    assert any(t.startswith("alpha: 9.8 wf/s") for t in legend)
    assert "offered 10 wf/s" in legend and "fault window (fault to heal)" in legend
    texts = [t.get_text() for t in ax.texts]
    assert any("f0 kill-worker worker:0" in t for t in texts)
    assert "warmup" in texts
    spans = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.698, 0.133, 0.133), abs=0.01)]
    assert spans, "the fault window is shaded"
    assert ax.get_ylabel() == "completed workflows/s"


def test_latency_over_time_marks_workflows_that_never_completed(run: runs.Run) -> None:
    ax = plots.latency_over_time(_ax(), run, "alpha")
    legend = _legend(ax)
    assert "never completed (1)" in legend and "per-second p99" in legend
    assert ax.get_yscale() == "log"
    assert ax.get_title(loc="left") == "alpha"


def test_recovery_has_a_row_per_engine_and_fault(run: runs.Run) -> None:
    ax = plots.recovery(_ax(), run)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["alpha\nf0 kill-worker worker:0 at 3.0s", "beta\nf0 kill-worker worker:0 at 3.0s"]
    texts = [t.get_text() for t in ax.texts]
    assert any("never (1 affected workflows unfinished)" in t for t in texts)
    assert any(t.strip() == "1.10s" for t in texts)  # first progress of the re-run workflow
    assert ax.get_xlabel().startswith("seconds after the fault")


def test_a_fault_repeated_many_times_is_one_row_over_its_strikes(run: runs.Run) -> None:
    for er in run.engines.values():
        first = er.faults[0]
        er.summary["recovery"] = [{**first, "fault_id": f"f0.{i}", "start_s": 3.0 + i, "affected": 1,
                                   "all_done_s": 1.0 + i} for i in range(8)]
    ax = plots.recovery(_ax(), run)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [f"{name}\nf0 kill-worker worker:0 x8 from 3.0s\n(median, min-max of the strikes)"
                     for name in ("alpha", "beta")]
    assert any(t.get_text().strip() == "4.50s" for t in ax.texts)  # the median of 1.0 ... 8.0


def test_a_repeated_fault_is_labelled_once_with_its_strikes() -> None:
    from harness.report.plots.common import shade_faults

    strikes = [{"fault_id": f"f0.{i}", "kind": "reset-connections", "target": "link:store", "start_s": 2.0 + 0.7 * i,
                "end_s": 2.0 + 0.7 * i} for i in range(5)]
    other = {"fault_id": "f1", "kind": "kill-worker", "target": "worker:0", "start_s": 9.0, "end_s": 10.0}
    ax = shade_faults(_ax(), [*strikes, *strikes[:2], other])  # the same strikes seen in a second engine
    assert [t.get_text().strip() for t in ax.texts] == ["f0 x5 reset-connections link:store",
                                                        "f1 kill-worker worker:0"]
    assert len(ax.lines) == 8  # every strike still drawn


def test_step_overhead_and_rates_draw_bars_per_engine(run: runs.Run) -> None:
    ax = plots.step_overhead(_ax(), run)
    assert len(ax.patches) == 2 * len(plots.PERCENTILE_BARS)
    legend = ax.get_legend()
    assert legend is not None and "slices of the measured window" in legend.get_title().get_text()
    assert ax.get_yscale() == "log"
    ax = plots.offered_vs_achieved(_ax(), run)
    assert len(ax.patches) == 2 * 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alpha", "beta"]


PROGRAM_CHARTS = ("timer-lateness", "wasted-calls", "effect-duplicates")  # drawn only for workflow programs


def test_every_figure_states_its_context(run: runs.Run) -> None:
    for spec in plots.CHARTS:
        fig = plots.figure(spec.name, run)
        if spec.name in ("resources", "database", "use-case", *PROGRAM_CHARTS):
            assert fig is None  # not measured in this run; not a use-case scenario; no workflow program
            continue
        assert fig is not None, spec.name
        text = _texts(fig)
        for needle in ("Scenario synthetic", "durability profile: strict", "n=1 run",
                       "alpha: alpha 1.0 + postgres 18.6", "2 CPUs (Test CPU)",
                       "Limits: the Temporal dev server is single-shard SQLite", "Valkey stands in for Redis"):
            assert needle in text, (spec.name, needle)
    with pytest.raises(KeyError):
        plots.figure("nope", run)


def test_resource_usage_is_drawn_only_when_measured(tmp_path: Path) -> None:
    run_dir = runbuilder.make_run(tmp_path, engines=("alpha",))
    run = runs.load_run(run_dir)
    assert plots.figure("resources", run) is None
    t0 = run.engines["alpha"].window.load_start_ns
    samples = [{"ns": t0 + i * 500_000_000, "component": comp, "cpu_s": i * share, "rss_bytes": (50 + i) * 2**20}
               for i in range(10) for comp, share in (("postgres", 0.2), ("worker:0", 0.4))]
    (run_dir / "engines/alpha" / runs.RESOURCES_FILE).write_text("".join(json.dumps(s) + "\n" for s in samples))
    run = runs.load_run(run_dir)
    frame = run.engines["alpha"].resources
    assert frame is not None and set(frame["component"]) == {"postgres", "worker:0"}
    assert frame[frame["component"] == "worker:0"]["cpu_percent"].dropna().round(3).unique().tolist() == [80.0]
    fig = plots.figure("resources", run)
    assert fig is not None
    cpu, rss = fig.axes[:2]
    assert {line.get_label() for line in cpu.get_lines()} >= {"postgres", "worker:0"}
    assert rss.get_ylabel() == "RSS (MiB)"


def test_repeated_runs_show_their_spread(repeated: list[runs.Run]) -> None:
    fig = plots.figure("latency-spectrum", repeated)
    assert fig is not None
    assert "(n=3 runs)" in _texts(fig)
    ax = fig.axes[0]
    assert len([ln for ln in ax.get_lines() if ln.get_drawstyle() == "steps-post"]) == 2 * 3
    assert "3 runs" in _legend(ax)[0]
    rows, how = htmlreport.headline_table(repeated)
    assert "median over the runs" in how
    p50 = rows[1][3]
    assert "[" in p50 and "-" in p50  # median [min-max]
    runs.check_repetitions(repeated)


def test_single_run_headline_shows_per_second_spread(run: runs.Run) -> None:
    rows, how = htmlreport.headline_table([run])
    assert rows[0][:3] == ["engine", "verdict", "throughput wf/s"]
    alpha = rows[1]
    assert alpha[0] == "alpha" and alpha[1] == "violations"
    assert alpha[2].startswith("9.83 (") and "/" in alpha[2]  # per-second min / median / max
    assert alpha[-1] == "not measured" and alpha[-2] == "f0: never (1 unfinished)"
    assert "n=1 run" in how
    lines = htmlreport.verdict_lines([run])
    assert lines[0].startswith("- **alpha**: **NOT correct** under f0 kill-worker worker:0 at 3.0s: 69 of 70")
    assert "1 lost" in lines[0] and "1 duplicated steps" in lines[0]


def test_report_is_self_contained_html_and_markdown(tmp_path: Path) -> None:
    run_dir = runbuilder.make_run(tmp_path)
    run = runs.load_run(run_dir)
    md_path, html_path = htmlreport.write_report([run], run_dir)
    md = md_path.read_text()
    html = html_path.read_text()
    charts = sorted(p.name for p in (run_dir / "charts").glob("*.png"))
    assert charts == sorted(f"{s.name}.png" for s in plots.CHARTS
                            if s.name not in ("resources", "database", "use-case", *PROGRAM_CHARTS))
    for name in charts:
        assert f"](charts/{name})" in md
    assert md.index("## Charts") < md.index("## Headline")
    assert "Not drawn: resource usage over time: the run did not measure resource usage (no engines/" in md
    assert "no engines/<engine>/statements.json" in md
    assert html.count('src="data:image/png;base64,') == len(charts)
    assert 'src="charts/' not in html
    assert "<table>" in html and "<h2>Verdicts</h2>" in html and "Valkey stands in for Redis" in html


def test_markdown_subset_to_html() -> None:
    md = ("# Title\n\nA **bold** `code` <script>x</script> [link](http://e.x)\nsecond line\n\n"
          "| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n  - nested\n- two\n")
    html = htmlreport.to_html(md)
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong> <code>code</code> &lt;script&gt;x&lt;/script&gt;" in html
    assert '<a href="http://e.x">link</a>' in html
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>" in html
    assert "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>" in html


def test_scenario_differences_name_the_fields(tmp_path: Path) -> None:
    a = runs.load_run(runbuilder.make_run(tmp_path / "a", engines=("alpha",)))
    b = runs.load_run(runbuilder.make_run(tmp_path / "b", engines=("alpha",), rate=20.0, durability="relaxed"))
    assert runs.scenario_differences(a, a) == []
    assert runs.scenario_differences(a, b) == ["durability: 'strict' vs 'relaxed'", "load.rate: 10.0 vs 20.0"]
    with pytest.raises(UserError, match="not a repetition"):
        runs.check_repetitions([a, b])


def test_database_chart_stacks_wal_by_category_and_transactions_by_database(tmp_path: Path) -> None:
    import json

    from harness import results
    from harness.analysis import summary

    run_dir = runbuilder.make_run(tmp_path)
    row = {"toplevel": True, "rows": 1, "total_exec_time": 0.1, "wal_records": 1, "wal_fpi": 0}
    window = {"start_ns": 0, "end_ns": 10 * 10**9, "start_xid": 0, "end_xid": 100, "stats_reset": None,
              "start_databases": {"temporal": {"xact_commit": 0, "xact_rollback": 0}},
              "end_databases": {"temporal": {"xact_commit": 300, "xact_rollback": 0},
                                "temporal_visibility": {"xact_commit": 50, "xact_rollback": 0}},
              "statements": [
                  {**row, "db": "temporal", "queryid": 1, "query": "INSERT INTO history_node VALUES ($1)",
                   "calls": 100, "wal_bytes": 40_000},
                  {**row, "db": "temporal_visibility", "queryid": 2,
                   "query": "INSERT INTO executions_visibility VALUES ($1)", "calls": 50, "wal_bytes": 90_000}]}
    edir = results.engine_dir(run_dir, "alpha")
    (edir / "statements.json").write_text(json.dumps({"windows": {"load": window}}))
    summary.analyze(run_dir)
    run = runs.load_run(run_dir)
    fig = plots.figure("database", run)
    assert fig is not None
    wal_ax, tx_ax = fig.axes[0], fig.axes[1]
    assert "WAL" in wal_ax.get_ylabel() and "transactions" in tx_ax.get_ylabel()
    heights = sorted(round(p.get_height()) for p in wal_ax.patches if p.get_height() > 0)
    completed = run.engines["alpha"].summary["completed"]
    steps = run.engines["alpha"].steps
    assert heights == sorted([round(40_000 / completed / steps), round(90_000 / completed / steps)])
    assert [t.get_text() for t in wal_ax.get_xticklabels()] == ["alpha"]  # beta has no statements


def test_latency_over_time_of_an_engine_that_completed_nothing(run: runs.Run, tmp_path: Path) -> None:
    """A job longer than its timeout never completes: the log axis must still draw (it raised before)."""
    er = run.engines["alpha"]
    er.workflows["e2e_ms"] = float("nan")
    fig = plots.figure("latency-over-time", run)
    assert fig is not None
    fig.savefig(tmp_path / "chart.png")  # drawing is where an empty log axis fails
    assert "no workflow completed" in _texts(fig)


def test_variants_are_shades_of_their_engine_and_never_share_a_colour() -> None:
    from harness.report.plots.common import ENGINE_COLORS, color

    names = ["temporal@timeout-shorter", "temporal@maintainers", "celery@timeout-shorter", "celery@maintainers",
             "dbos", "temporal", "celery"]
    colours = [color(n) for n in names]
    assert len(set(colours)) == len(names), colours
    assert color("temporal") == ENGINE_COLORS["temporal"] and color("temporal@maintainers") == colours[1]
    assert all(c.startswith("#") and len(c) == 7 for c in colours)
