"""The Go build cache key: sources, local replaced modules and the toolchain version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import gobuild
from harness.errors import EngineUnavailable


def _tree(tmp_path: Path) -> Path:
    common = tmp_path / "gocommon" / "lib"
    common.mkdir(parents=True)
    (common / "go.mod").write_text("module example.com/lib\n\ngo 1.25.0\n")
    (common / "lib.go").write_text("package lib\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text("module example.com/app\n\ngo 1.25.0\n\nrequire example.com/lib v0.0.0\n\n"
                                "replace example.com/lib => ../gocommon/lib // local\n")
    (app / "main.go").write_text("package main\n\nfunc main() {}\n")
    return app


def test_key_changes_with_the_toolchain_version(tmp_path: Path) -> None:
    app = _tree(tmp_path)
    a = gobuild.source_hash(app, "go1.26.8")
    assert a == gobuild.source_hash(app, "go1.26.8")
    assert a != gobuild.source_hash(app, "go1.26.10")


def test_key_covers_the_replaced_local_module(tmp_path: Path) -> None:
    app = _tree(tmp_path)
    assert {p.name for p in gobuild.source_files(app)} == {"go.mod", "main.go", "lib.go"}
    before = gobuild.source_hash(app, "go1.26.8")
    (tmp_path / "gocommon" / "lib" / "lib.go").write_text("package lib\n\nconst X = 1\n")
    assert gobuild.source_hash(app, "go1.26.8") != before
    shutil.rmtree(tmp_path / "gocommon")
    with pytest.raises(EngineUnavailable, match=r"has no go\.mod"):
        gobuild.source_hash(app, "go1.26.8")


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the go toolchain on PATH")
def test_default_key_uses_the_toolchain_on_path(tmp_path: Path) -> None:
    app = _tree(tmp_path)
    version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    assert gobuild.toolchain_version() == version
    assert gobuild.binary_path(app, "app").name == f"app-{gobuild.source_hash(app, version)}"


def test_repository_adapters_hash_the_shared_module() -> None:
    for src in gobuild.go_sources():
        files = gobuild.source_files(src)
        assert gobuild.ROOT / "engines" / "gocommon" / "durabench" / "durabench.go" in files
