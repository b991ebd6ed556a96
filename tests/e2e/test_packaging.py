"""A non-editable install (a built wheel) carries every source its Go workers need, and builds them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps .`` of a copy of this tree (the build leaves build/ and egg-info behind)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "results", "build", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache",
                                                             ".pytest_cache", "notebooks"))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(src)]
    if importlib.util.find_spec("setuptools"):
        argv.append("--no-build-isolation")  # build with the venv's setuptools: nothing to download
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    (whl,) = (base / "dist").glob("durabench-*.whl")
    return whl


def _go_modules_of_repo() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / "engines").rglob("*")
                  if p.is_file() and (p.suffix == ".go" or p.name in ("go.mod", "go.sum")))


def test_wheel_lists_every_go_source(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.as_posix() for p in _go_modules_of_repo()}
    assert "engines/gocommon/durabench/durabench.go" in wanted  # the shared module outside every adapter
    assert wanted <= names, sorted(wanted - names)


def test_gobuild_finds_and_builds_the_sources_of_an_unpacked_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {"PYTHONPATH": str(site), "DURABENCH_CACHE": str(tmp_path / "cache"), "PATH": os.environ.get("PATH", ""),
           "HOME": str(Path.home())}
    build = shutil.which("go") is not None
    code = (
        "import json, sys\n"
        "from harness import gobuild\n"
        "assert gobuild.__file__.startswith(sys.argv[1]), gobuild.__file__\n"
        "srcs = gobuild.go_sources()\n"
        "files = {s.name: [str(f) for f in gobuild.source_files(s)] for s in srcs}\n"
        "out = {'root': str(gobuild.ROOT), 'sources': files}\n"
        "if sys.argv[2] == '1':\n"
        "    src = next(s for s in srcs if s.name == 'dbos_go')\n"
        "    out['binary'] = str(gobuild.build(src, src.name))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(site), "1" if build else "0"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["root"] == str(site)
    assert set(out["sources"]) == {"dbos_go", "temporal_go"}
    for files in out["sources"].values():
        assert all(f.startswith(str(site)) for f in files)
        assert str(site / "engines" / "gocommon" / "durabench" / "durabench.go") in files
    if build:
        binary = Path(out["binary"])
        assert binary.is_file() and binary.parent == tmp_path / "cache" / "go"
