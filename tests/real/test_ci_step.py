""".ci/step.py, how .ci/run runs its steps so that nothing outlives it: a signal to the wrapper, or the
death of the shell that started it (SIGKILL included), reaches the step's whole process group as one
SIGINT, which the step (a Python started in the background of a shell, where SIGINT starts ignored) turns
into KeyboardInterrupt and cleans up after."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

STEP = ROOT / ".ci" / "step.py"
# a step: a child in the step's process group (as pytest's durabench runs are), a mark after Ctrl-C's cleanup
STEP_PROGRAM = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
print(child.pid, flush=True)
try:
    time.sleep(600)
except KeyboardInterrupt:
    child.terminate()
    child.wait()
    open(sys.argv[1], "w").write("interrupted")
    raise
"""
DEADLINE_S = 20.0


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of wrappers and steps' children a test started: SIGKILLed (with their groups) after it, whatever
    it found, so that a failing test leaves nothing running either."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


def _start(tmp_path: Path, started: list[int]) -> tuple[subprocess.Popen[bytes], int, int]:
    """The step under .ci/step.py, started as .ci/run starts it (in the background of sh, where SIGINT starts
    ignored); returns the shell, the wrapper's pid and the step's child's pid."""
    out = tmp_path / "out"
    with out.open("w") as fh:
        shell = subprocess.Popen(["sh", "-c", '"$@" & echo $! >&2; wait $!', "sh", sys.executable, str(STEP),
                                  sys.executable, "-c", STEP_PROGRAM, str(tmp_path / "mark")],
                                 stdout=fh, stderr=subprocess.PIPE)
    assert shell.stderr is not None
    wrapper = int(shell.stderr.readline())
    started.append(wrapper)
    deadline = time.monotonic() + DEADLINE_S
    while not out.read_text().strip():
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.02)
    child = int(out.read_text().split()[0])
    started.append(child)
    return shell, wrapper, child


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_reaches_the_step_as_an_interrupt(sig: int, tmp_path: Path, started: list[int]) -> None:
    shell, wrapper, child = _start(tmp_path, started)
    psutil.Process(wrapper).send_signal(sig)
    assert shell.wait(DEADLINE_S) == 128 + signal.SIGINT  # the step died of the interrupt, after its cleanup
    assert (tmp_path / "mark").read_text() == "interrupted"
    assert _gone(child)


def test_the_shell_s_death_interrupts_the_step(tmp_path: Path, started: list[int]) -> None:
    """SIGKILL of the shell (nothing of it can run): the kernel's SIGTERM to the wrapper becomes the interrupt."""
    shell, wrapper, child = _start(tmp_path, started)
    shell.kill()
    shell.wait()
    assert _gone(wrapper) and _gone(child)
    assert (tmp_path / "mark").read_text() == "interrupted"
