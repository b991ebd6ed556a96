"""Run one step of .ci/run (a command) so that nothing of it outlives .ci/run, whatever ends that shell.

``python3 .ci/step.py COMMAND...``: this process leaves the shell's process group (a group SIGKILL or a
terminal's Ctrl-C aimed at .ci/run does not reach it), asks the kernel for SIGTERM when the shell dies
(PR_SET_PDEATHSIG: also after a SIGKILL of the shell), and runs COMMAND in a process group of its own
with SIGINT at its default (a background job of a non-interactive shell starts with SIGINT ignored, and
a Python started so never raises KeyboardInterrupt). SIGINT, SIGTERM and SIGHUP it receives reach that
whole group as one SIGINT, the interrupt each tool there handles in order: pytest runs its teardowns, the
durabench runs under it remove what they started, make waits for them (a SIGTERM would make make send
its own SIGTERM to pytest again, interrupting the teardowns). It exits with COMMAND's status (128 + N
after signal N). Standard library only: it runs before the project is installed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: step.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    os.setpgid(0, 0)
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # a signal that came before the command started: passed on once it has

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            pending.append(signum)
            return
        try:
            os.killpg(child.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    # caught, not ignored: the command starts with each at its default (a caught signal is reset by
    # exec), so Ctrl-C works there
    for sig in FORWARDED:
        signal.signal(sig, forward)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the shell died before the parent-death signal was armed
        return 128 + signal.SIGTERM
    child = subprocess.Popen(argv, process_group=0)
    if pending:
        forward(pending[0], None)
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
