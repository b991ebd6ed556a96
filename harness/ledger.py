"""The side-effect ledger: append-only JSON-lines files, one per process.

Every record is one line of JSON written with a single ``os.write`` on a file opened with
``O_APPEND``: a SIGKILL of the writer never loses a record already written and never leaves
half a record behind that a reader would take for whole (a reader skips a final line without
its newline). The format is language-neutral; Go workers write the same lines.

Common fields of every record (see docs/engines.md for the full list):

``ev``   the event kind (``ready``, ``step_start``, ``step_end``, ``submit``, ``fault_start`` ...)
``ns``   wall-clock time, integer nanoseconds since the Unix epoch
``src``  who wrote it: ``worker:0``, ``driver``, ``nemesis``, ``supervisor``
``pid``  the writing process
"""

from __future__ import annotations

import json
import operator
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson  # parses a long history ~5x faster than json (same values; analysis reads millions of records)

from harness.errors import UserError

LEDGER_SUFFIX = ".jsonl"


class Ledger:
    """Appends records to ``<dir>/<src>.<pid>.jsonl``; safe across ``fork`` (reopens per pid)."""

    def __init__(self, directory: Path | str, src: str) -> None:
        self.directory = Path(directory)
        self.src = src
        self._fd: int | None = None
        self._pid = -1

    def _open(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            name = f"{self.src.replace(':', '-')}.{pid}{LEDGER_SUFFIX}"
            self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = pid
        return self._fd

    def write(self, ev: str, ns: int | None = None, **fields: Any) -> int:
        """Append one record and return its timestamp (ns)."""
        fd = self._open()
        ts = time.time_ns() if ns is None else ns
        record = {"ev": ev, "ns": ts, "src": self.src, "pid": self._pid, **fields}
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        return ts

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def read_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """Complete records of one ledger file, and whether its last line is torn (a writer killed
    mid-write: no newline; skipped). A complete line that is not a JSON record is corruption no
    crash produces: a UserError naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    try:  # the fast path: every line a record (a long run has millions)
        loads = orjson.loads
        out: list[dict[str, Any]] = [loads(line) for line in lines[:-1] if line]  # (blank: the slow path)
        if all(isinstance(r, dict) and isinstance(r.get("ns"), int) for r in out):
            return out, bool(lines[-1].strip())
    except orjson.JSONDecodeError:
        pass
    out = []  # a bad line: find it and say which
    for i, line in enumerate(lines[:-1]):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("ns"), int):
            raise UserError(f"{path}:{i + 1}: corrupt record (not a JSON object with an integer ns): "
                            f"{line[:60]!r}; the history of this run is damaged (run the scenario again)")
        out.append(record)
    return out, bool(lines[-1].strip())


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """Complete records of one ledger file; a torn last line (no newline) is skipped."""
    yield from read_records(path)[0]


def read_dir(directory: Path) -> list[dict[str, Any]]:
    """All complete records of every ledger file in a directory, sorted by time (stable: records with the
    same ``ns`` keep the order of the sorted file names, then of the file)."""
    records: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob(f"*{LEDGER_SUFFIX}")):
        records.extend(read_records(path)[0])
    records.sort(key=operator.itemgetter("ns"))  # each file is in time order already: timsort merges the runs
    return records


def torn_records(directory: Path) -> int:
    """Ledger files of a directory whose last record is torn (a crash mid-write): each lost one record."""
    torn = 0
    for path in Path(directory).glob(f"*{LEDGER_SUFFIX}"):
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if size:
                fh.seek(size - 1)
                torn += fh.read(1) != b"\n"
    return torn


def _parse(data: bytes) -> list[dict[str, Any]]:
    loads = orjson.loads
    return [loads(line) for line in data.split(b"\n")[:-1] if line.strip()]


class Follower:
    """Reads new complete records from every ledger file of a directory, incrementally.

    Used by the driver while a run is live (progress, drain, closed-loop completions).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._offsets: dict[Path, int] = {}

    def poll(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.directory.glob(f"*{LEDGER_SUFFIX}"):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            out.extend(_parse(chunk[: end + 1]))
            self._offsets[path] = offset + end + 1
        return out
