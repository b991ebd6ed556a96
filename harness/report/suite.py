"""The index of a suite (``durabench suite``): ``index.md`` and a self-contained ``index.html`` that
link every scenario's run report and gather each scenario's answer table on one page.

A pure function of the suite's entries and of the run directories they name. The entries themselves
are kept in ``suite.json`` (rewritten with the index), so ``durabench analyze SUITE_DIR`` can rebuild the
index after re-analyzing every run; a suite written before ``suite.json`` existed has its entries rebuilt
from the run directories in it (:func:`entries_from_runs`). The answer table of
a scenario is its use-case table (harness/report/usecase.py) when it has a ``usecase`` key, else
the run's headline table (one row per engine: verdict, throughput, latency percentiles, lost,
duplicated and replayed steps, recovery), the table ``durabench run`` prints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import results
from harness.analysis import runs
from harness.errors import UserError
from harness.report import usecase
from harness.report.html import REPORT_HTML, REPORT_MD, to_html
from harness.report.markdown import headline_rows
from harness.report.tables import md_table

INDEX_MD = "index.md"
INDEX_HTML = "index.html"
SUITE_JSON = "suite.json"
# 1: name, title, started_at, entries (path, name, usecase, status, message, run_dir, elapsed_s)
SUITE_SCHEMA_VERSION = 1

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
             "`durabench analyze <run>` rebuilds any of them from its files, `durabench analyze` on this "
             "suite directory all of them and this index.", ""]
    rows = [list(INDEX_COLUMNS)]
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


def write_index(suite_dir: Path, title: str, entries: list[SuiteEntry], started_at: str,
                name: str | None = None) -> tuple[Path, Path]:
    """``index.md``, ``index.html`` and ``suite.json`` in ``suite_dir``; rewritten after every scenario."""
    md = markdown(title, entries, suite_dir, started_at)
    md_path, html_path = suite_dir / INDEX_MD, suite_dir / INDEX_HTML
    md_path.write_text(md)
    html_path.write_text(to_html(md, suite_dir, title))
    results.write_json(suite_dir / SUITE_JSON, {
        "schema_version": SUITE_SCHEMA_VERSION, "name": name or title.removeprefix(TITLE_PREFIX), "title": title,
        "started_at": started_at,
        "entries": [{"path": e.path, "name": e.name, "usecase": e.usecase, "status": e.status, "message": e.message,
                     "run_dir": None if e.run_dir is None else e.run_dir.name, "elapsed_s": e.elapsed_s}
                    for e in entries]})
    return md_path, html_path


TITLE_PREFIX = "durabench suite: "
INDEX_COLUMNS = ["scenario", "file", "status", "minutes", "report", "run directory"]  # the index's first table


def _files_in_index(text: str) -> dict[str, str]:
    """run directory name -> scenario file, from the rows of an index.md's table of scenarios."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    head = "| " + " | ".join(INDEX_COLUMNS) + " |"
    if head not in lines:
        return out
    for line in lines[lines.index(head) + 2:]:  # after the header and its |---| line
        if not line.startswith("| "):
            break  # the end of the table
        row = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split(" | ")]
        if len(row) == len(INDEX_COLUMNS) and row[1] not in ("", "-") and row[-1] not in ("", "-"):
            out[row[-1].strip("`")] = row[1]
    return out


_STATUSES = (OK, FAILED, NOT_RUN, INTERRUPTED)


def is_suite_dir(path: Path) -> bool:
    """A suite directory: it has ``suite.json``, or (written before ``suite.json`` existed) ``index.md`` and
    run directories."""
    if not path.is_dir() or runs.is_run_dir(path):
        return False
    return (path / SUITE_JSON).is_file() or ((path / INDEX_MD).is_file() and bool(run_dirs_in(path)))


def run_dirs_in(suite_dir: Path) -> list[Path]:
    """The run directories directly in ``suite_dir``, in name (= UTC start time) order."""
    return sorted(p for p in suite_dir.iterdir() if p.is_dir() and runs.is_run_dir(p))


@dataclass
class Suite:
    """What ``analyze`` needs to rebuild a suite's index: title, start, entries."""

    name: str
    title: str
    started_at: str
    entries: list[SuiteEntry]


def load(suite_dir: Path) -> Suite:
    """The suite recorded in ``suite.json``; a broken one is a UserError naming it and the fix."""
    path = suite_dir / SUITE_JSON
    fix = f"delete {path} and `durabench analyze {suite_dir}` rebuilds the entries from the run directories"
    data = results.read_json(path, fix)

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}; {fix}")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, int) and version > SUITE_SCHEMA_VERSION:
        raise UserError(f"{path}: suite schema version {version} is newer than this durabench reads "
                        f"({SUITE_SCHEMA_VERSION}); upgrade durabench (pip install -U durabench) to read it")
    for key in ("title", "started_at"):
        if not isinstance(data.get(key), str):
            raise bad(f"field {key} is missing or not a string")
    raw = data.get("entries")
    if not isinstance(raw, list):
        raise bad("field entries is missing or not a list")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad(f"entries[{i}] is not an object")
        for key in ("path", "name"):
            if not isinstance(item.get(key), str):
                raise bad(f"entries[{i}].{key} is missing or not a string")
        for key in ("usecase", "run_dir"):
            if not isinstance(item.get(key), str | None):
                raise bad(f"entries[{i}].{key} is not a string or null")
        if item.get("status") not in _STATUSES:
            raise bad(f"entries[{i}].status {item.get('status')!r} is not one of {list(_STATUSES)}")
        elapsed = item.get("elapsed_s")
        if elapsed is not None and (isinstance(elapsed, bool) or not isinstance(elapsed, int | float)
                                    or not math.isfinite(elapsed) or elapsed < 0):
            raise bad(f"entries[{i}].elapsed_s {elapsed!r} is not a number of seconds or null")
        run_dir = item.get("run_dir")
        if run_dir is not None and (not run_dir or Path(run_dir).name != run_dir or run_dir in (".", "..")):
            raise bad(f"entries[{i}].run_dir {run_dir!r} is not the name of a directory in the suite")
        entries.append(SuiteEntry(item["path"], item["name"], status=item["status"],
                                  message=str(item.get("message") or ""),
                                  run_dir=None if run_dir is None else suite_dir / run_dir,
                                  usecase=item.get("usecase"), elapsed_s=elapsed))
    name = data.get("name")
    if not isinstance(name, str):
        name = data["title"].removeprefix(TITLE_PREFIX)
    return Suite(name, data["title"], data["started_at"], entries)


def entry_from_run(run_dir: Path) -> SuiteEntry:
    """The entry of a run directory found in a suite (no ``suite.json``, or moved in by hand): its
    manifest's scenario name and usecase; ok when it has a summary; elapsed the engines' wall time when
    the manifest records it for every engine that ran, else unknown. The scenario file is the manifest's
    ``scenario_file`` (``-`` for a run made before the manifest recorded it)."""
    manifest = results.load_manifest(run_dir)
    sc = manifest["scenario"]
    source = manifest.get("scenario_file")
    walls = [info.get("wall_s") for info in manifest["engines"].values() if not info.get("skipped")]
    elapsed = (float(sum(walls)) if walls and all(isinstance(w, int | float) and not isinstance(w, bool)
                                                  for w in walls) else None)
    has_summary = (run_dir / "summary.json").is_file()
    return SuiteEntry(source if isinstance(source, str) and source else "-", str(sc["name"]),
                      status=OK if has_summary else FAILED,
                      message="" if has_summary else "no summary.json", run_dir=run_dir,
                      usecase=sc.get("usecase") if isinstance(sc.get("usecase"), str) else None, elapsed_s=elapsed)


def rebuild(suite_dir: Path) -> Suite:
    """A suite written before ``suite.json``: entries from its run directories in name (time) order, title
    and start from its ``index.md`` when they can be read there, and so is a scenario file the run's
    manifest does not record (its row in the index's table, found by run directory)."""
    entries = [entry_from_run(d) for d in run_dirs_in(suite_dir)]
    text = (suite_dir / INDEX_MD).read_text(errors="replace") if (suite_dir / INDEX_MD).is_file() else ""
    files = _files_in_index(text)
    for e in entries:
        if e.path == "-" and e.run_dir is not None:
            e.path = files.get(e.run_dir.name, "-")
    title_m = re.search(r"^# (.+)$", text, re.MULTILINE)
    started_m = re.search(r"^Started (\S+);", text, re.MULTILINE)
    label = suite_dir.name.split("-suite-", 1)[1] if "-suite-" in suite_dir.name else suite_dir.name
    title = title_m.group(1).strip() if title_m else TITLE_PREFIX + label
    started_at = started_m.group(1) if started_m else "-"
    return Suite(title.removeprefix(TITLE_PREFIX), title, started_at, entries)
