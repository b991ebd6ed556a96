"""Builds the production Temporal server and its SQL tool from the Go module proxy, once, into a cache.

``go install go.temporal.io/server/cmd/server@<version>`` and ``.../cmd/tools/sql@<version>``
(``GOTOOLCHAIN=local``: never a toolchain download) into
``<cache>/temporal-server/<version>-<go version>/`` (``temporal-server``, ``temporal-sql-tool``),
where ``<cache>`` is ``$DURABENCH_CACHE`` or ``~/.cache/durabench`` (as harness/gobuild.py) and the
Go version is ``go env GOVERSION``: a new toolchain builds anew, an unchanged one never rebuilds.

A cold build takes about 5 minutes on 2 cores (the modules come from the Go proxy); :func:`build`
prints a progress line every ``PROGRESS_EVERY_S`` to stderr. Two builders (a run and a test) are
serialized by a lock file; the second finds the binaries done. The binaries appear in place only
when both are built (a directory rename), so a reader never sees half a build.

``python -m harness.temporalbuild`` (``make temporal-server``) builds them and prints their paths.
Server versions after v1.32.0 need Go 1.26.10 (measured here with Go 1.26.8), hence the pin.

Without a Go toolchain, ``$DURABENCH_TEMPORAL_SERVER_DIR`` names a directory of binaries built
elsewhere, laid out as a build directory (``<version>-<go version>/``): the runtime image of
``deploy: containers`` carries the host's build that way (harness/run/image.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness import gobuild
from harness.errors import EngineUnavailable

SERVER_VERSION = "v1.32.0"
SERVER_MODULE = "go.temporal.io/server"
PACKAGES = {"temporal-server": "cmd/server", "temporal-sql-tool": "cmd/tools/sql"}
BUILD_TIMEOUT_S = 1800.0
PROGRESS_EVERY_S = 15.0
COLD_BUILD_HINT = "about 5 min the first time on 2 cores"
PREBUILT_ENV = "DURABENCH_TEMPORAL_SERVER_DIR"


def prebuilt(version: str = SERVER_VERSION) -> dict[str, Path] | None:
    """The binaries of ``$DURABENCH_TEMPORAL_SERVER_DIR`` (a build directory made elsewhere), if it names one
    of this version."""
    where = os.environ.get(PREBUILT_ENV)
    if not where or not Path(where).name.startswith(f"{version}-"):
        return None
    paths = {name: Path(where) / name for name in PACKAGES}
    return paths if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()) else None


def built_with(paths: dict[str, Path]) -> str:
    """The Go version that built these binaries (their build directory's name: ``<version>-<go>``)."""
    return paths["temporal-server"].parent.name.split("-", 1)[1]


def go_version() -> str | None:
    """``go env GOVERSION`` (e.g. ``go1.26.8``), or None without a working ``go``."""
    if shutil.which("go") is None:
        return None
    try:
        out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_dir(go: str, version: str = SERVER_VERSION) -> Path:
    """Where the binaries of this server version built by this Go toolchain live."""
    return gobuild.cache_dir().parent / "temporal-server" / f"{version}-{go}"


def binaries(go: str | None = None, version: str = SERVER_VERSION) -> dict[str, Path] | None:
    """The cached binaries (name -> path) if built (or prebuilt, see ``prebuilt``), else None."""
    found = prebuilt(version)
    if found:
        return found
    go = go or go_version()
    if go is None:
        return None
    d = build_dir(go, version)
    paths = {name: d / name for name in PACKAGES}
    return paths if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()) else None


def unavailable_reason() -> str | None:
    """None when the server is built or ``go`` can build it, else one line saying what is missing."""
    if go_version() is None and prebuilt() is None:
        return (f"the Go toolchain (go >= 1.26) is not on PATH: install it from https://go.dev/dl; durabench builds "
                f"the Temporal server {SERVER_VERSION} with it")
    return None


def status() -> str:
    """One line for ``durabench engines``: built (where) or what the first use will do."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    found = binaries()
    if found:
        return f"Temporal server {SERVER_VERSION} built ({found['temporal-server'].parent})"
    return (f"Temporal server {SERVER_VERSION} not built yet: the first use builds it ({COLD_BUILD_HINT}), "
            f"or run `make temporal-server`")


def _say(line: str) -> None:
    print(f"durabench: {line}", file=sys.stderr, flush=True)


def build(version: str = SERVER_VERSION, progress: Callable[[str], None] = _say) -> dict[str, Path]:
    """The server and SQL tool binaries, built first if needed (with progress lines).

    Raises :class:`EngineUnavailable` with one line (and the build log's path) when ``go`` is
    missing or the build fails.
    """
    found = prebuilt(version)
    if found:
        return found
    go = go_version()
    if go is None:
        raise EngineUnavailable(unavailable_reason() or "go is missing")
    found = binaries(go, version)
    if found:
        return found
    target = build_dir(go, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder finishes first; then the binaries are there
        found = binaries(go, version)
        if found:
            return found
        return _build_locked(go, version, target, progress)


def _build_locked(go: str, version: str, target: Path, progress: Callable[[str], None]) -> dict[str, Path]:
    log = target.with_name(target.name + ".log")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    argv = ["go", "install", *(f"{SERVER_MODULE}/{pkg}@{version}" for pkg in PACKAGES.values())]
    env = {**os.environ, "GOBIN": str(tmp), "GOTOOLCHAIN": "local"}
    started = time.monotonic()
    progress(f"building Temporal server {version} with {go} from the Go module proxy ({COLD_BUILD_HINT}); "
             f"log: {log}")
    try:
        with log.open("wb") as out:
            out.write(f"$ GOBIN={tmp} GOTOOLCHAIN=local {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                while True:
                    try:
                        code = proc.wait(PROGRESS_EVERY_S)
                        break
                    except subprocess.TimeoutExpired:
                        elapsed = time.monotonic() - started
                        if elapsed > BUILD_TIMEOUT_S:
                            raise EngineUnavailable(
                                f"building the Temporal server took more than {BUILD_TIMEOUT_S:.0f}s; see {log}"
                            ) from None
                        progress(f"building Temporal server {version}: {elapsed:.0f}s")
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        if code != 0:
            raise EngineUnavailable(f"building the Temporal server {version} failed (exit {code}); see {log}")
        names = {Path(pkg).name: name for name, pkg in PACKAGES.items()}  # go install names by package dir
        for built, name in names.items():
            (tmp / built).rename(tmp / name)
        shutil.rmtree(target, ignore_errors=True)  # a partial leftover (we hold the lock)
        os.replace(tmp, target)  # both binaries appear at once
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"built Temporal server {version} in {time.monotonic() - started:.0f}s: {target}")
    found = binaries(go, version)
    assert found is not None
    return found


def main() -> int:
    try:
        paths = build()
    except EngineUnavailable as exc:
        print(f"durabench: error: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
