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

1. first format.
"""

from __future__ import annotations

import json
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

SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent


def new_run_dir(out: Path, scenario_name: str) -> Path:
    """Create a fresh run directory; an existing one is never reused."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = out / (f"{stamp}-{scenario_name}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{out}: could not create a new run directory")


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


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def load_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a durabench run directory (no manifest.json)")
    manifest: dict[str, Any] = read_json(path)
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(f"{run_dir}: results schema version {version} is newer than this durabench reads "
                        f"({SCHEMA_VERSION}); upgrade durabench (pip install -U durabench) to read it")
    return manifest


def engine_dir(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / engine


def save_reconcile(path: Path, records: dict[str, EngineRecord]) -> None:
    write_json(path, {wf: asdict(rec) for wf, rec in records.items()})


def load_reconcile(path: Path) -> dict[str, EngineRecord]:
    if not path.is_file():
        return {}
    return {wf: EngineRecord(**rec) for wf, rec in read_json(path).items()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
