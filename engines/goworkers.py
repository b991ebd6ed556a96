"""Helpers shared by the adapters whose workers are Go programs (``engines.dbos_go``, ``engines.temporal_go``).

A library, not an adapter (it registers no engine). The Go side of what these adapters share,
the worker boundary (config, ledger, step body), is the Go module ``engines/gocommon/durabench``,
which each adapter's ``go.mod`` requires through a ``replace`` directive.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness import gobuild


def unavailable_reason(src_dir: Path, binary: str) -> str | None:
    """None when the binary of the current sources is cached or ``go`` can build it, else why not."""
    if gobuild.cached(src_dir, binary) is not None:
        return None
    return gobuild.go_unavailable_reason()


def module_version(src_dir: Path, module: str) -> str:
    """The version of ``module`` that ``src_dir/go.mod`` requires, or ``unknown``."""
    text = (src_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def toolchain_version() -> str:
    """``go env GOVERSION``, ``absent`` without ``go``, ``unknown`` if it does not answer (part of the build key)."""
    return gobuild.toolchain_version()
