"""Builds the Go programs of engine adapters (workers, submitters) into a content-keyed cache.

A Go adapter keeps its sources in the repository (``engines/<name>/`` with a ``go.mod``); the
harness builds them with ``go build`` into ``<cache>/<binary>-<hash>``, where ``hash`` is the
first 16 hex digits of a SHA-256 over the Go toolchain's version (``go env GOVERSION``) and every
``*.go``, ``go.mod`` and ``go.sum`` under the source directory and under every local module its
``go.mod`` replaces with a path (``replace ... => ../gocommon/durabench``), paths and contents.
An unchanged source tree built by the same toolchain is never rebuilt; an edited one, or a new
toolchain, gets a new binary. The cache is ``$DURABENCH_CACHE/go`` (default
``~/.cache/durabench/go``).

Two builders may race (two runs, ``make`` and a test): each builds to a private temporary name
and renames it into place, so a reader never sees half a binary and the last rename wins with
identical content.

``python -m harness.gobuild [SRC_DIR ...]`` builds every Go adapter of this repository (each
``engines/*/go.mod``, binary named after its directory), or the directories given; without a
``go`` toolchain it says so and exits 0 (those engines then show as unavailable).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.errors import EngineUnavailable

ROOT = Path(__file__).resolve().parent.parent
HASH_CHARS = 16
BUILD_TIMEOUT_S = 900.0  # a first build downloads modules through the Go proxy
_SOURCE_SUFFIXES = (".go",)
_SOURCE_NAMES = ("go.mod", "go.sum")


def cache_dir() -> Path:
    """Where built binaries live: ``$DURABENCH_CACHE/go`` or ``~/.cache/durabench/go``."""
    base = os.environ.get("DURABENCH_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "durabench"
    return root / "go"


def go_unavailable_reason() -> str | None:
    """None when a ``go`` toolchain is on PATH, else one line saying what is missing."""
    if shutil.which("go") is None:
        return ("the Go toolchain (go >= 1.26) is not on PATH: install it from https://go.dev/dl;"
                " durabench builds the Go workers")
    return None


@functools.cache
def toolchain_version() -> str:
    """``go env GOVERSION`` (e.g. ``go1.26.8``), ``absent`` without ``go``, ``unknown`` if it does not answer.
    Asked once per process."""
    if shutil.which("go") is None:
        return "absent"
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60,
                              check=True, stdin=subprocess.DEVNULL).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_REPLACE_PATH = re.compile(r"=>\s*(\.{1,2}/\S*)")


def local_modules(src_dir: Path) -> list[Path]:
    """The directories of the local modules that ``src_dir/go.mod`` replaces with a relative path: sources
    the build needs from outside ``src_dir`` (``engines/gocommon/durabench``). Raises
    :class:`EngineUnavailable` when one is missing (an install that left it out)."""
    out = []
    for line in (Path(src_dir) / "go.mod").read_text().splitlines():
        match = _REPLACE_PATH.search(line.split("//", 1)[0])
        if match:
            path = (Path(src_dir) / match.group(1)).resolve()
            if not (path / "go.mod").is_file():
                raise EngineUnavailable(f"{src_dir}/go.mod replaces a module with {match.group(1)}, but {path} has "
                                        "no go.mod: the install lacks that Go source (reinstall durabench)")
            out.append(path)
    return out


def source_files(src_dir: Path) -> list[Path]:
    """Every Go source file the build of ``src_dir`` reads from this install: its own and its local modules'."""
    return sorted(
        p for d in (Path(src_dir), *local_modules(src_dir)) for p in d.rglob("*")
        if p.is_file() and (p.suffix in _SOURCE_SUFFIXES or p.name in _SOURCE_NAMES)
    )


def source_hash(src_dir: Path, go_version: str | None = None) -> str:
    """First 16 hex digits of SHA-256 over the toolchain version (``go_version``, default the one on PATH) and
    the relative path and content of every Go source file of the build."""
    digest = hashlib.sha256()
    version = (go_version or toolchain_version()).encode()
    digest.update(len(version).to_bytes(8, "big") + version)
    for path in source_files(src_dir):
        rel = Path(os.path.relpath(path, src_dir)).as_posix().encode()
        data = path.read_bytes()
        digest.update(len(rel).to_bytes(8, "big") + rel + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:HASH_CHARS]


def binary_path(src_dir: Path, binary_name: str) -> Path:
    """Where the binary of this exact source tree is (or will be) cached."""
    return cache_dir() / f"{binary_name}-{source_hash(src_dir)}"


def cached(src_dir: Path, binary_name: str) -> Path | None:
    """The cached binary of this source tree if it was built already, else None."""
    if go_unavailable_reason() is not None:
        return None  # without a toolchain, which one built a cached binary cannot be told
    path = binary_path(src_dir, binary_name)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def build(src_dir: Path, binary_name: str) -> Path:
    """Build ``src_dir`` (a Go main package) unless its cached binary exists; return the binary.

    Raises :class:`EngineUnavailable` with one line (and the path of the build log) when ``go``
    is missing or the build fails.
    """
    src_dir = Path(src_dir).resolve()
    target = binary_path(src_dir, binary_name)
    if target.is_file():
        return target
    reason = go_unavailable_reason()
    if reason is not None:
        raise EngineUnavailable(reason)
    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.with_name(target.name + ".log")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    argv = ["go", "build", "-trimpath", "-o", str(tmp), "."]
    try:
        with log.open("wb") as out:
            out.write(f"$ cd {src_dir} && {' '.join(argv)}\n".encode())
            out.flush()
            try:
                code = subprocess.run(argv, cwd=src_dir, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S, check=False).returncode
            except subprocess.TimeoutExpired:
                raise EngineUnavailable(
                    f"go build of {src_dir} took more than {BUILD_TIMEOUT_S:.0f}s; see {log}") from None
        if code != 0:
            raise EngineUnavailable(f"go build of {src_dir} failed (exit {code}); see {log}")
        tmp.chmod(0o755)
        os.replace(tmp, target)  # atomic: a concurrent builder's rename leaves the same content
    finally:
        tmp.unlink(missing_ok=True)
    return target


def go_sources(root: Path = ROOT) -> list[Path]:
    """Every Go adapter of this repository: the directories ``engines/*`` holding a ``go.mod``."""
    return sorted(p.parent for p in (root / "engines").glob("*/go.mod"))


def main(argv: list[str] | None = None) -> int:
    dirs = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or go_sources()
    reason = go_unavailable_reason()
    if reason is not None and not all(cached(src, src.resolve().name) for src in dirs):
        # Not an error: the Go engines show as unavailable and every other engine still runs.
        print(f"durabench: Go engines not built: {reason}", file=sys.stderr)
        return 0
    failed = 0
    for src in dirs:
        try:
            path = build(src, src.resolve().name)
        except EngineUnavailable as exc:
            print(f"durabench: {src}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
