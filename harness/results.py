"""The results directory: one per run, never overwritten, in a versioned documented format.

Layout (docs/results.md documents every field)::

    <run>/manifest.json            schema version, resolved scenario, versions, settings, machine
    <run>/summary.json             per-engine figures and verdicts (derived; `durabench analyze`)
    <run>/report.md                the report (derived)
    <run>/engines/<engine>/history/*.jsonl   the history: ledger files of workers, driver, nemesis
    <run>/engines/<engine>/reconcile.json    what the engine's store said about every id
    <run>/engines/<engine>/histograms.json   HdrHistogram encodings (derived)
    <run>/engines/<engine>/checker.json      the ids behind every checker count (derived)
    <run>/engines/<engine>/logs/             server and worker logs

Format history (bump SCHEMA_VERSION on any incompatible change and add a line here):

1. first format. Additions that version-1 readers ignore (no bump): ``manifest.repetition``
   (``durabench run --repeat N``), ``manifest.scenario.slo``, ``summary.engines.<e>.torn_ledger_records``,
   ``summary.engines.<e>.unfinished_by_state`` and ``unfinished_groups``, checker.json ``unfinished_evidence``
   and ``lost_evidence``, reconcile ``detail.claimed`` (a run analyzed before them reports its unfinished
   workflows without their state; ``durabench analyze`` adds it), ``manifest.duration_draws`` and the
   ``duration_s`` of a ``work`` step's ``step_start`` ledger record (a run made before them drew its
   durations unseeded, per execution).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from harness.contract import EngineRecord
from harness.errors import UserError

EFFECTS_FILE = "effects.json"  # the application table's rows (harness/run/appdb.py writes it)

SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent


def new_run_dir(out: Path, scenario_name: str) -> Path:
    """Create a fresh run directory; an existing one is never reused."""
    check_out_dir(out)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = out / (f"{stamp}-{scenario_name}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{out}: could not create a new run directory")


def check_out_dir(out: Path, flag: str = "--out") -> None:
    """Create the results directory ``out`` (and parents) or refuse it in one line."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out}: is a file, not a directory; give a directory for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {out}: cannot create the results directory: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: not writable; give a directory you can write to")


def machine_facts() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": psutil.cpu_count(logical=True),
        "memory_bytes": vm.total,
        "cpu_model": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


DERIVED_FILES = ("summary.json", "histograms.json", "checker.json")  # rebuilt by `durabench analyze`


def read_json(path: Path, fix: str | None = None) -> Any:
    """A JSON file of a run; a missing, unreadable, truncated or corrupt one is a UserError naming it
    and the fix (derived files are rebuilt by `durabench analyze`; the others cannot be)."""
    if fix is None:
        run = path.parent if path.name == "summary.json" else path.parent.parent.parent
        fix = (f"rebuild it with: durabench analyze {run}" if path.name in DERIVED_FILES
               else "it is written during the run and cannot be rebuilt: run the scenario again")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {fix}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: corrupt (not UTF-8 at byte {exc.start}); {fix}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt or truncated JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                        f"{fix}") from None


def _require(path: Path, data: Any, shape: dict[str, type | tuple[type, ...]], fix: str) -> None:
    """Refuse JSON that parses but lacks the fields the readers need (a file edited or from elsewhere)."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}; {fix}")
    for dotted, kind in shape.items():
        value: Any = data
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            raise UserError(f"{path}: field {dotted} is missing or not a {getattr(kind, '__name__', kind)}; {fix}")


MANIFEST_SHAPE: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "scenario": dict, "scenario.name": str, "scenario.durability": str, "scenario.workload": dict,
    "scenario.workload.steps": int, "scenario.load": dict, "engines": dict}


def load_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: not a durabench run directory (no such directory)")
    if not path.is_file():
        raise UserError(f"{run_dir}: not a durabench run directory (no manifest.json)")
    manifest: dict[str, Any] = read_json(path)
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UserError(f"{run_dir}: results schema version {version} is newer than this durabench reads "
                        f"({SCHEMA_VERSION}); upgrade durabench (pip install -U durabench) to read it")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: no valid schema_version (given {version!r}); not a manifest durabench wrote")
    _require(path, manifest, MANIFEST_SHAPE, "the manifest is written during the run and cannot be rebuilt")
    for name, info in manifest["engines"].items():
        if not isinstance(info, dict):
            raise UserError(f"{path}: engines.{name} is not an object; the manifest cannot be rebuilt")
    return manifest


def load_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json of a run, checked for the fields every reader needs."""
    path = Path(run_dir) / "summary.json"
    fix = f"rebuild it with: durabench analyze {run_dir}"
    if not path.is_file():
        raise UserError(f"{path}: missing (the run did not finish?); {fix}")
    summary: dict[str, Any] = read_json(path)
    _require(path, summary, {"engines": dict}, fix)
    for name, entry in summary["engines"].items():
        if not isinstance(entry, dict):
            raise UserError(f"{path}: engines.{name} is not an object; {fix}")
    return summary


def engine_dir(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / engine


def save_reconcile(path: Path, records: dict[str, EngineRecord]) -> None:
    write_json(path, {wf: asdict(rec) for wf, rec in records.items()})


def load_reconcile(path: Path) -> dict[str, EngineRecord]:
    if not path.is_file():
        return {}
    data = read_json(path)
    fix = "it is written during the run and cannot be rebuilt: run the scenario again"
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of workflow ids, found {type(data).__name__}; {fix}")
    try:
        return {wf: EngineRecord(**rec) for wf, rec in data.items()}
    except TypeError as exc:
        raise UserError(f"{path}: a record is not in the reconcile format ({exc}); {fix}") from None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
