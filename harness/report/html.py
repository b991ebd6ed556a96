"""The report with charts: ``report.md`` (charts linked from ``charts/*.png``) and a self-contained
``report.html`` (the same content, charts embedded), for one run or repeated runs of one scenario.

Written at the end of every run (``durabench run`` and ``analyze`` call :func:`write_run`) and by
``durabench report RUN_DIR...``. Charts first (harness/report/plots/), then tables: a headline table
per engine with spread, a verdict line per engine, and the detail tables of harness/report/markdown.py.
Every table and chart states the scenario, durability profile, versions, machine and the limits
of the embedded stand-ins. A pure function of the files of the runs.

The HTML is rendered from the Markdown (the small subset this package writes: headings,
paragraphs, pipe tables, bullet lists, images, ``**bold**``, ```code``` and links), so the two
never disagree.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.analysis import checker
from harness.analysis.runs import (
    SUB_WINDOWS,
    Run,
    check_repetitions,
    fault_group,
    is_run_dir,
    load_group,
    make_run,
    spread,
)
from harness.errors import UserError
from harness.report import markdown as report
from harness.report import usecase
from harness.report.tables import md_table, text_table
from harness.results import check_out_dir

if TYPE_CHECKING:
    from harness.report import plots

CHART_DIR = "charts"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
NOT_MEASURED = "not measured"
COST_KEY = "cost_per_1000_workflows"  # summary field once resource cost is measured (another issue)


@dataclass(frozen=True)
class Chart:
    spec: plots.ChartSpec
    path: Path | None  # None: not drawn
    reason: str = ""  # why it was not drawn


# ---------------------------------------------------------------- charts

def draw_charts(runs: list[Run], out_dir: Path) -> list[Chart]:
    """Every chart of plots.CHARTS as ``out_dir/charts/<name>.png`` (stale files of charts not drawn are removed)."""
    from harness.report import plots  # matplotlib loads only when charts are drawn

    chart_dir = out_dir / CHART_DIR
    chart_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    for spec in plots.CHARTS:
        path = chart_dir / f"{spec.name}.png"
        fig = spec.build(runs)
        if fig is None:
            path.unlink(missing_ok=True)
            charts.append(Chart(spec, None, not_drawn_reason(spec.name)))
            continue
        fig.savefig(path)
        charts.append(Chart(spec, path))
    return charts


def not_drawn_reason(name: str) -> str:
    if name == "resources":
        return "the run did not measure resource usage (no engines/<engine>/resources.jsonl)"
    if name == "recovery":
        return "no fault was injected"
    if name == "database":
        return "no engine used the harness's PostgreSQL (no engines/<engine>/statements.json)"
    if name == "use-case":
        return "not a use-case scenario (no usecase key)"
    if name in ("timer-lateness", "wasted-calls", "effect-duplicates"):
        return "the workload's program has no such stage (sleep, call, effect)"
    return "nothing to draw (no engine ran)"


# ---------------------------------------------------------------- formatting

def _n(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_spread(values: list[float | None], digits_int: bool = False) -> str:
    """``median [min-max]`` of repeated runs; a single value when they all agree."""
    s = spread(values)
    if s is None:
        return "-"
    lo, mid, hi = s
    fmt = (lambda v: f"{v:g}") if digits_int else _n
    return fmt(mid) if lo == hi else f"{fmt(mid)} [{fmt(lo)}-{fmt(hi)}]"


def _lat(e: dict[str, Any], key: str) -> float | None:
    value = (e.get("e2e_latency_ms") or {}).get(key)
    return None if value is None else float(value)


def headline_table(runs: list[Run]) -> tuple[list[list[str]], str]:
    """Rows of the headline table and the sentence that says how to read its spread."""
    rows = [["engine", "verdict", "throughput wf/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
             "lost", "unknown", "dup steps", "replayed", "recovery s (all affected done)", "cost / 1,000 wf"]]
    single = len(runs) == 1
    for name in _engine_order(runs):
        ers = [r.engines[name] for r in runs if name in r.engines]
        ok = [er for er in ers if er.ok]
        if not ok:
            skipped = any(er.summary.get("status") == "skipped" for er in ers)
            rows.append([name, "SKIPPED" if skipped else "ERROR"] + ["-"] * (len(rows[0]) - 2))
            continue
        sums = [er.summary for er in ok]
        verdicts = [checker.verdict_label(s) for s in sums]
        verdict = verdicts[0] if len(set(verdicts)) == 1 else f"{verdicts.count('correct')}/{len(verdicts)} correct"
        if len(ok) < len(ers):
            verdict += f" ({len(ers) - len(ok)} runs failed)"
        if single:
            er = ok[0]
            per_s = er.per_second_throughput()
            thr = _n(er.summary["throughput_per_s"])
            if per_s:
                lo, mid, hi = spread([float(v) for v in per_s]) or (0.0, 0.0, 0.0)
                thr += f" ({lo:g} / {mid:g} / {hi:g})"
            lats = []
            for key in ("p50", "p90", "p99"):
                sub = spread([(w.get("e2e_latency_ms") or {}).get(key) for w in er.sub_windows])
                value = _lat(er.summary, key)
                lats.append(_n(value) + (f" ({_n(sub[0])}-{_n(sub[2])})" if sub and value is not None else ""))
            lats += [_n(_lat(er.summary, "p99.9")), _n(_lat(er.summary, "max"))]
        else:
            thr = fmt_spread([s["throughput_per_s"] for s in sums])
            lats = [fmt_spread([_lat(s, key) for s in sums]) for key in ("p50", "p90", "p99", "p99.9", "max")]
        counts = [fmt_spread([s[k] for s in sums], digits_int=True)
                  for k in ("lost", "unknown", "duplicated_steps", "replayed_completed_steps")]
        fault_ids = list(dict.fromkeys(f["fault_id"] for s in sums for f in s.get("recovery", [])))
        recovery = ", ".join(
            f"{fid}: " + _recovery_cell([f for s in sums for f in s.get("recovery", []) if f["fault_id"] == fid])
            for fid in fault_ids) or "no fault"
        behind = sum(1 for s in sums if s.get("engine_fell_behind"))
        if behind:
            thr += " **did not keep up**" + (f" in {behind} of {len(sums)} runs" if len(sums) > 1 else "")
        claims = [s.get("engine_claimed_throughput_per_s") for s in sums]
        if any(c is not None and c != s["throughput_per_s"] for c, s in zip(claims, sums, strict=True)):
            thr += f" (engine claims {fmt_spread(claims)})"
        interrupted = sum(1 for s in sums if s.get("interrupted"))
        if interrupted and verdict != "interrupted":  # some repetitions only
            verdict += " **interrupted**" + (f" in {interrupted} of {len(sums)} runs" if len(sums) > 1 else "")
        rows.append([name, verdict, thr, *lats, *counts, recovery, _cost_cell(sums)])
    if single:
        how = (f"n=1 run. Throughput: workflows durably completed in the measured window per second, with the "
               f"per-second min / median / max in brackets. p50-p99: end-to-end latency of the whole measured "
               f"window, with min-max over {SUB_WINDOWS} equal slices of it in brackets "
               f"(p99.9 and max are single extremes).")
    else:
        how = (f"n={len(runs)} runs of the same scenario: every cell is the median over the runs with [min-max] "
               f"in brackets.")
    return rows, how


def _recovery_cell(entries: list[dict[str, Any]]) -> str:
    unfinished = [e for e in entries if e.get("all_done_s") is None and e.get("affected_unfinished")]
    if unfinished:
        return f"never ({max(e['affected_unfinished'] for e in unfinished)} unfinished)"
    if all(e.get("affected") == 0 for e in entries):
        return "0 affected"
    return fmt_spread([e.get("all_done_s") for e in entries])


def _cost_cell(sums: list[dict[str, Any]]) -> str:
    costs: list[dict[str, Any]] = [s[COST_KEY] for s in sums if s.get(COST_KEY)]
    if not costs:
        return NOT_MEASURED
    keys = list(dict.fromkeys(k for c in costs for k in c))
    return "; ".join(f"{k} {fmt_spread([c.get(k) for c in costs])}" for k in keys)


def _engine_order(runs: list[Run]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.engines if n not in names]
    return names


def fault_names(recovery: list[dict[str, Any]]) -> list[str]:
    """Each injected fault once, in order; the repetitions of a repeated fault (``f0.0``, ``f0.1`` ...) as
    one: when it first struck, its interval and how many times."""
    groups: dict[tuple[str, str, str], dict[str, float]] = {}  # -> each strike's id and its earliest start
    for f in recovery:  # (the same strike in several runs or engines: one id, starts ms apart)
        key = (fault_group(f["fault_id"]), f["kind"], f["target"])
        strikes = groups.setdefault(key, {})
        fid = str(f["fault_id"])
        strikes[fid] = min(strikes.get(fid, f["start_s"]), f["start_s"])
    out = []
    for (fid, kind, target), strikes in groups.items():
        starts = sorted(strikes.values())
        if len(starts) == 1:
            out.append(f"{fid} {kind} {target} at {starts[0]:.1f}s")
        else:
            every = (starts[-1] - starts[0]) / (len(starts) - 1)
            out.append(f"{fid} {kind} {target} {len(starts)} times, every {every:.1f}s from {starts[0]:.1f}s")
    return out


def verdict_lines(runs: list[Run]) -> list[str]:
    """One line per engine: correct under the injected faults or not, with the counts."""
    lines = []
    for name in _engine_order(runs):
        ers = [r.engines[name] for r in runs if name in r.engines]
        ok = [er for er in ers if er.ok]
        skipped = [er.summary["skipped"] for er in ers if er.summary.get("status") == "skipped"]
        if not ok and skipped:
            lines.append(f"- **{name}**: skipped, the program needs what it does not run natively: {skipped[0]}")
            continue
        if not ok:
            errors = "; ".join(str(er.summary.get("error") or er.info.get("error") or "unknown error") for er in ers)
            lines.append(f"- **{name}**: did not run: {errors}")
            continue
        sums = [er.summary for er in ok]
        faults = fault_names([f for s in sums for f in s.get("recovery", [])])
        under = f"under {', '.join(faults)}" if faults else "with no fault injected"
        correct = sum(1 for s in sums if s["verdict"] == checker.CORRECT)
        unverified = [s for s in sums if s["verdict"] == checker.UNVERIFIED]
        interrupted = sum(1 for s in sums if s["verdict"] == checker.INTERRUPTED)
        no_anomaly = correct + len(unverified) + interrupted == len(sums)  # no run counted a violation
        cut = f"; {interrupted} interrupted (no verdict)" if interrupted else ""
        if interrupted == len(sums):
            head = "**interrupted** (partial results, no verdict)"
        elif correct == len(sums):
            head = "**correct**"
        elif unverified and no_anomaly:  # no anomaly counted, a check without evidence
            missing = {k: v for s in unverified for k, v in (s.get("not_measured") or {}).items()}
            what = "; ".join(f"{k} not measured: {why}" for k, why in missing.items())
            head = ("**not verified**" + (f" in {len(unverified)} of {len(sums)} runs" if len(sums) > 1 else "")
                    + f" (no anomaly counted, but {what}; no exactly-once claim without that count{cut})")
        elif no_anomaly:  # correct where a verdict was reached, the other runs cut short
            head = f"**correct in {correct} of {len(sums)} runs**{cut}"
        elif correct == 0:
            head = "**NOT correct**"
        else:
            head = f"**correct in {correct} of {len(sums)} runs only**"
        if len(runs) > 1:
            head += f" (n={len(sums)} runs)"

        def c(key: str, sums: list[dict[str, Any]] = sums) -> str:
            return fmt_spread([s.get(key, 0) for s in sums], digits_int=True)

        lines.append(
            f"- **{name}**: {head} {under}: {c('completed')} of {c('acknowledged')} accepted workflows completed; "
            f"{c('lost')} lost, {c('unfinished')} unfinished, {c('failed')} refused, {c('unknown')} unknown, "
            f"{c('unexpected')} unexpected, "
            f"{c('missing_steps')} missing steps, {c('replayed_completed_steps')} replayed completed steps (lost "
            f"checkpoints); {c('duplicated_steps')} duplicated steps (at-least-once re-execution of a step in "
            f"flight)." + "".join(f" {text}" for text in report.findings(sums[0]) if len(sums) == 1))
    return lines


# ---------------------------------------------------------------- the Markdown document

def _sections(md: str) -> tuple[str, list[tuple[str, str]]]:
    """Split Markdown into the text before the first ``## `` heading and (title, body) sections."""
    head: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in md.splitlines():
        if line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return "\n".join(head).strip(), [(t, "\n".join(b).strip()) for t, b in sections]


def _context_block(runs: list[Run]) -> str:
    from harness.report import plots

    return "\n".join(f"<small>{line}</small>  " for line in plots.context_lines(runs, wrap=None)).rstrip()


def usecase_section(runs: list[Run], charts: list[Chart], chart_base: str = CHART_DIR) -> list[str]:
    """The "Use case" section (question, answer table per run, its chart) of a use-case scenario; else nothing."""
    name = runs[0].scenario.get("usecase")
    if name not in usecase.USE_CASES:
        return []
    uc = usecase.USE_CASES[name]
    out = ["## Use case", "", f"**{name}**: {uc.question}", ""]
    for run in runs:
        if len(runs) > 1:
            out += [f"Run `{run.run_id}`:", ""]
        out += [md_table(usecase.table(name, run.summary)), ""]
    out += [uc.reading, ""]
    for chart in charts:
        if chart.spec.name == "use-case" and chart.path is not None:
            out += [f"![{chart.spec.title}]({chart_base}/{chart.path.name})", "", chart.spec.caption, ""]
    return out


def markdown(runs: list[Run], charts: list[Chart], chart_base: str = CHART_DIR) -> str:
    """The report as Markdown: context, verdicts, charts, headline table, then the detail tables."""
    first = runs[0]
    details = [_sections(report.render(run.manifest, run.summary)) for run in runs]
    head, _ = details[0]
    if len(runs) > 1:
        head = (f"# durabench report: {first.scenario_name}, {len(runs)} runs\n\n"
                f"Repeated runs of one scenario, durability profile **{first.durability}**: "
                + ", ".join(f"`{r.run_id}`" for r in runs) + ".")
        if all("repetition" in r.manifest for r in runs):
            head += (" Repetitions of `durabench run --repeat N`, interleaved: repetition 1 of every engine, "
                     "then repetition 2 of every engine, and so on, so machine noise spreads evenly over the engines.")
    out = [head, "", "## Verdicts", "", *verdict_lines(runs), ""]
    out += usecase_section(runs, charts, chart_base)
    out += ["## Charts", ""]
    for chart in charts:
        if chart.path is None or chart.spec.name == "use-case":
            continue
        out += [f"### {chart.spec.title}", "", f"![{chart.spec.title}]({chart_base}/{chart.path.name})", "",
                chart.spec.caption, ""]
    missing = [c for c in charts if c.path is None and c.spec.name != "use-case"]  # only use cases draw it
    if missing:
        out += ["Not drawn: " + "; ".join(f"{c.spec.title.lower()}: {c.reason}" for c in missing) + ".", ""]
    rows, how = headline_table(runs)
    out += ["## Headline", "", md_table(rows), "",
            how + " `dup steps`: steps that ran more than once (at-least-once re-execution of a step in flight at "
            "a crash); `replayed`: completed steps that ran again after the engine had moved past them (a lost "
            "checkpoint); recovery: from each fault to the completion of the last workflow it affected. "
            "Cost (CPU seconds, peak RSS per 1,000 workflows) is shown where the run measured it.",
            "", _context_block(runs), ""]
    limits = ""
    for run, (_, sections) in zip(runs, details, strict=True):
        if len(runs) > 1:
            out += [f"## Run {run.run_id}", ""]
        for title, body in sections:
            if title == "Results":  # the headline above replaces it (same columns, with spread)
                continue
            if title == "Limits" and len(runs) > 1:
                limits = body  # once, at the end
                continue
            level = "###" if len(runs) > 1 else "##"
            text = body.replace("\n### ", "\n#### ") if len(runs) > 1 else body
            out += [f"{level} {title}", "", text, ""]
            if "|---" in text:  # every table states its context
                out += [_context_block([run]), ""]
    if len(runs) > 1 and limits:
        out += ["## Limits", "", limits, ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- Markdown subset to HTML

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; font-size: 90%; }
img { max-width: 100%; border: 1px solid #eee; } small { color: #555; }
""".strip()

_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"&lt;(/?small)&gt;"), r"<\1>"),
)


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _image(alt: str, src: str, base: Path | None) -> str:
    path = (base / src) if base is not None else Path(src)
    if path.is_file():
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="{src}">'


def to_html(md: str, base: Path | None = None, title: str = "durabench report") -> str:
    """HTML of the Markdown subset this package writes; images under ``base`` are embedded."""
    out: list[str] = []
    para: list[str] = []
    lines = md.splitlines()

    def flush() -> None:
        if para:
            out.append("<p>" + "<br>\n".join(_inline(p.rstrip()) for p in para) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"(#{1,6}) (.*)", line)
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if not line.strip():
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            flush()
            out.append(f"<p>{_image(image.group(1), image.group(2), base)}</p>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in block[0]) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                           for r in body) + "</tbody></table>")
            continue
        elif re.match(r"\s*- ", line):
            flush()
            out.append(_list(lines, i))
            while i < len(lines) and re.match(r"\s*- |\s{2,}\S", lines[i]):
                i += 1
            continue
        else:
            para.append(line)
        i += 1
    flush()
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>\n{CSS}\n</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _list(lines: list[str], start: int) -> str:
    """A bullet list with one level of nesting (items indented by two spaces)."""
    html_items: list[str] = []
    nested: list[str] = []
    i = start
    while i < len(lines) and re.match(r"\s*- |\s{2,}\S", lines[i]):
        line = lines[i]
        if line.startswith("- "):
            if nested:
                html_items[-1] += "<ul>" + "".join(nested) + "</ul>"
                nested = []
            html_items.append(_inline(line[2:]))
        elif line.lstrip().startswith("- "):
            nested.append(f"<li>{_inline(line.lstrip()[2:])}</li>")
        elif html_items:
            html_items[-1] += " " + _inline(line.strip())
        i += 1
    if nested and html_items:
        html_items[-1] += "<ul>" + "".join(nested) + "</ul>"
    return "<ul>" + "".join(f"<li>{item}</li>" for item in html_items) + "</ul>"


# ---------------------------------------------------------------- writing

def write_report(runs: list[Run], out_dir: Path) -> tuple[Path, Path]:
    """Charts, report.md and report.html for the runs into ``out_dir``; returns the two report paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(runs, out_dir)
    md = markdown(runs, charts)
    md_path, html_path = out_dir / REPORT_MD, out_dir / REPORT_HTML
    md_path.write_text(md)
    title = f"durabench report: {runs[0].scenario_name}" + (f" ({len(runs)} runs)" if len(runs) > 1 else "")
    html_path.write_text(to_html(md, out_dir, title))
    return md_path, html_path


def write_run(run_dir: Path, manifest: dict[str, Any], summary: dict[str, Any]) -> Path:
    """The report of one run, in its directory (called at the end of every run); returns report.md."""
    md_path, _ = write_report([make_run(run_dir, manifest, summary)], run_dir)
    return md_path


def cmd_report(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.runs]
    runs = load_group(paths)
    if len(runs) > 1:
        check_repetitions(runs)
        if args.out:
            out = Path(args.out)
        elif len(paths) == 1 and not is_run_dir(paths[0]):
            out = paths[0]
        else:
            raise UserError("several runs give one report: say where with --out DIR")
        if is_run_dir(out):
            raise UserError(f"{out}: is a run directory; a report of several runs goes to a directory of its own")
    else:
        out = Path(args.out) if args.out else runs[0].path
    check_out_dir(out)
    md_path, html_path = write_report(runs, out)
    print(text_table([[cell.replace("**", "") for cell in row] for row in headline_table(runs)[0]]))
    print(f"\nreport: {html_path}\n        {md_path}", file=sys.stdout)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write report.html and report.md with charts for a run, or for repeated runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="a run directory, several runs of one scenario, or a directory holding such runs")
    p.add_argument("--out", help="where to write (default: the run directory, or the directory of runs)")
    p.set_defaults(func=cmd_report)
