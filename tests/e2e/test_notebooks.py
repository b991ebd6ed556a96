"""Every notebook in notebooks/ executes without error against a run: the newest committed
reference run under results/reference/ if there is one, else a smoke run made here.

The kernel is this interpreter (a kernel spec written to a temporary JUPYTER_PATH), so the test
needs no preinstalled Jupyter kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness.analysis import runs
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "durabench-test"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if runs.REFERENCE_DIR.is_dir() and runs.find_runs(runs.REFERENCE_DIR):
        return runs.newest_run(runs.REFERENCE_DIR)
    out = tmp_path_factory.mktemp("results")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios/smoke.yaml", "--out", str(out),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs.newest_run(out)


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "durabench test kernel", "language": "python"}))
    return root


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"overview", "latency", "recovery", "cost"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, run_dir: Path, jupyter_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("DURABENCH_RUN", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
    NotebookClient(nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert str(run_dir) in "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    shown = sum(1 for o in outputs if "image/png" in o.get("data", {}))
    not_drawn = sum(1 for o in outputs if "not drawn:" in o.get("text", ""))
    assert shown + not_drawn > 0, f"{path.name} showed no chart"
