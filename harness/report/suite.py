"""The index of a suite (``durabench suite``): ``index.md`` and a self-contained ``index.html`` that
link every scenario's run report and gather each scenario's answer table on one page.

A pure function of the suite's entries and of the run directories they name. The answer table of
a scenario is its use-case table (harness/report/usecase.py) when it has a ``usecase`` key, else
the run's headline table (one row per engine: verdict, throughput, latency percentiles, lost,
duplicated and replayed steps, recovery), the table ``durabench run`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import usecase
from harness.report.html import REPORT_HTML, REPORT_MD, to_html
from harness.report.markdown import headline_rows
from harness.report.tables import md_table

INDEX_MD = "index.md"
INDEX_HTML = "index.html"

OK, FAILED, NOT_RUN, INTERRUPTED = "ok", "failed", "not run", "interrupted"


@dataclass
class SuiteEntry:
    """One scenario of a suite and what became of it."""

    path: str  # the scenario file as given
    name: str  # the scenario's name
    status: str = NOT_RUN  # OK, FAILED, INTERRUPTED (while it ran) or NOT_RUN (the suite was interrupted before it)
    message: str = ""  # why it failed, or the gates that failed
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None
    usecase: str | None = None  # the scenario's usecase key
    elapsed_s: float | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def answer_table(usecase_name: str | None, summary: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """(title, rows) of the table that answers the scenario's question."""
    if usecase_name in usecase.USE_CASES:
        return f"Use case {usecase_name}: {usecase.USE_CASES[usecase_name].question}", usecase.table(
            usecase_name, summary)
    return "Headline (per engine)", headline_rows(summary)


def _link(entry: SuiteEntry, suite_dir: Path, report: str) -> str:
    if entry.run_dir is None or not (entry.run_dir / report).is_file():
        return "-"
    try:
        rel = entry.run_dir.relative_to(suite_dir)
    except ValueError:
        rel = entry.run_dir
    return f"[{report}]({rel.as_posix()}/{report})"


def markdown(title: str, entries: list[SuiteEntry], suite_dir: Path, started_at: str) -> str:
    done = sum(1 for e in entries if e.status in (OK, FAILED))
    failed = [e for e in entries if e.failed]
    lines = [f"# {title}", "",
             f"Started {started_at}; {done} of {len(entries)} scenarios run, {len(failed)} failed. "
             "Each scenario is an ordinary run (`durabench run`) with its own directory and report; "
             "`durabench analyze <run>` rebuilds any of them from its files.", ""]
    rows = [["scenario", "file", "status", "minutes", "report", "run directory"]]
    for e in entries:
        status = e.status if not e.message else f"{e.status}: {e.message}"
        rows.append([e.name, e.path, status, "-" if e.elapsed_s is None else f"{e.elapsed_s / 60:.1f}",
                     _link(e, suite_dir, REPORT_HTML) + " " + _link(e, suite_dir, REPORT_MD),
                     "-" if e.run_dir is None else f"`{e.run_dir.name}`"])
    lines += [md_table(rows), ""]
    if failed:
        lines += ["Failed: " + ", ".join(f"**{e.name}**" for e in failed)
                  + " (their logs are in their run directories).", ""]
    lines += ["## Answers", ""]
    for e in entries:
        lines += [f"### {e.name}", ""]
        if e.summary is None:
            lines += [f"No results ({e.status}{': ' + e.message if e.message else ''}).", ""]
            continue
        table_title, table = answer_table(e.usecase, e.summary)
        end = "" if table_title.endswith(("?", ".")) else "."
        lines += [f"{table_title}{end} Report: {_link(e, suite_dir, REPORT_HTML)}", "", md_table(table), ""]
    return "\n".join(lines)


def write_index(suite_dir: Path, title: str, entries: list[SuiteEntry], started_at: str) -> tuple[Path, Path]:
    """``index.md`` and ``index.html`` in ``suite_dir``; rewritten after every scenario."""
    md = markdown(title, entries, suite_dir, started_at)
    md_path, html_path = suite_dir / INDEX_MD, suite_dir / INDEX_HTML
    md_path.write_text(md)
    html_path.write_text(to_html(md, suite_dir, title))
    return md_path, html_path
