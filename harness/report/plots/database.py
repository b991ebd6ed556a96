"""Chart: what each engine does in PostgreSQL per step: WAL bytes by category, transactions by database.

From the ``statements`` summary field (harness/analysis/statements.py): the per-workflow part
(the idle rate subtracted) divided by the steps. Left: WAL bytes per step stacked by category
(checkpoints, queue and polling, visibility, other). Right: transactions per step stacked by
database (main, visibility: PostgreSQL does not attribute transactions to statements). The
per-second part (idle) is written above each bar.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.analysis.runs import Run
from harness.analysis.statements import CATEGORIES
from harness.report.plots.common import RunsArg, engine_names, engine_runs, new_figure, no_data

CATEGORY_COLORS = {"checkpoints": "#4c72b0", "queue and polling": "#dd8452", "visibility": "#55a868",
                   "other": "#8c8c8c"}
DATABASE_COLORS = {"main": "#4c72b0", "visibility": "#55a868"}

NOT_SUBTRACTED = "idle not measured:\nfixed costs included"  # no baseline window: the bar holds both parts

def _statements(runs: RunsArg, engine: str) -> dict[str, Any] | None:
    for er in engine_runs(runs, engine):
        st = er.summary.get("statements")
        if st and "by_category" in st:
            return dict(st)
    return None


def has_statements(runs: RunsArg) -> bool:
    return any(_statements(runs, n) is not None for n in engine_names(runs))


def _stacked(ax: Axes, names: list[str], parts: list[dict[str, float | None]], keys: tuple[str, ...],
             colors: dict[str, str], notes: list[str]) -> None:
    bottoms = [0.0] * len(names)
    for key in keys:
        values = [max(0.0, p.get(key) or 0.0) for p in parts]
        ax.bar(names, values, bottom=bottoms, color=colors[key], label=key, width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, (top, note) in enumerate(zip(bottoms, notes, strict=True)):
        ax.annotate(note, (x, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7,
                    color="#444444")
    if bottoms and max(bottoms) > 0:
        ax.set_ylim(0, max(bottoms) * 1.18)  # headroom for the notes above the bars
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, frameon=False)


def wal_per_step(ax: Axes, runs: RunsArg) -> Axes:
    names = [n for n in engine_names(runs) if _statements(runs, n) is not None]
    if not names:
        return no_data(ax, "no pg_stat_statements figures in this run")
    parts: list[dict[str, float | None]] = []
    notes: list[str] = []
    for n in names:
        st = _statements(runs, n)
        assert st is not None
        parts.append({c: st["by_category"][c]["wal_bytes"]["per_step"] for c in CATEGORIES})
        idle = sum((st["by_category"][c]["wal_bytes"]["per_s"] or 0.0) for c in CATEGORIES)
        rate = f"{idle / 1024:.0f} KiB/s" if idle >= 1024 else f"{idle:.0f} B/s"
        notes.append(f"+{rate} idle" if st.get("fixed_subtracted") else NOT_SUBTRACTED)
    _stacked(ax, names, parts, CATEGORIES, CATEGORY_COLORS, notes)
    ax.set_ylabel("WAL bytes per step (per-workflow part)")
    ax.set_title("WAL per step, by statement category", loc="left", fontsize=10)
    return ax


def transactions_per_step(ax: Axes, runs: RunsArg) -> Axes:
    names = [n for n in engine_names(runs) if _statements(runs, n) is not None]
    if not names:
        return no_data(ax, "no pg_stat_statements figures in this run")
    parts: list[dict[str, float | None]] = []
    notes: list[str] = []
    for n in names:
        st = _statements(runs, n)
        assert st is not None
        tx = st.get("transactions", {})
        parts.append({db: (tx.get(db) or {}).get("per_step") for db in DATABASE_COLORS})
        idle = sum(((tx.get(db) or {}).get("per_s") or 0.0) for db in DATABASE_COLORS)
        notes.append(f"+{idle:.0f} tx/s idle" if st.get("fixed_subtracted") else NOT_SUBTRACTED)
    _stacked(ax, names, parts, tuple(DATABASE_COLORS), DATABASE_COLORS, notes)
    ax.set_ylabel("transactions per step (per-workflow part)")
    ax.set_title("Transactions per step, by database", loc="left", fontsize=10)
    return ax


def build(rs: list[Run]) -> Figure | None:
    if not has_statements(rs):
        return None
    fig, axes = new_figure(rs, "What each engine does in PostgreSQL, per step", rows=1, cols=2, panel_h=3.8)
    wal_per_step(axes[0], rs)
    transactions_per_step(axes[1], rs)
    return fig
