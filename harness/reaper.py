"""The reaper: kills every registered process group when the harness's pipe closes.

Protocol on stdin: ``+PGID`` registers a group, ``-PGID`` forgets it, ``DPID`` says that the harness
process PID owns Docker containers (harness/dockerhost.py) on the docker CLI's daemon, ``DPID DAEMON``
on the daemon DAEMON names (a URL or a Docker context: the workers' daemon of a multi-host run), ``SPATH``
names a scratch directory of the harness (servers' data: ``procs.scratch_dir``). End of file (the harness
exited, crashed or was SIGKILLed) kills every group still registered, then removes every container and
network labelled with an owner it was told about, on every daemon named, then every scratch directory
still there.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

DEATH_WAIT_S = 5.0  # how long the killed groups get to be gone before their data is removed
RMTREE_TRIES = 5


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    docker_owners: set[tuple[int, str]] = set()  # (owner pid, daemon; "" for the docker CLI's)
    scratch: list[str] = []
    for line in sys.stdin.buffer:
        text = line.strip().decode()
        if text.startswith("+"):
            groups.add(int(text[1:]))
        elif text.startswith("-"):
            groups.discard(int(text[1:]))
        elif text.startswith("D"):
            pid, _, daemon = text[1:].partition(" ")
            docker_owners.add((int(pid), daemon))
        elif text.startswith("S"):
            scratch.append(text[1:])
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        _remove_containers(docker_owners)
    finally:  # the servers that wrote there are dead (below) or their containers removed
        _wait_gone(groups, DEATH_WAIT_S)
        for path in scratch:
            for _ in range(RMTREE_TRIES):  # a file created while the tree was being removed: once more
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.exists(path):
                    break
                time.sleep(0.1)


def _wait_gone(groups: set[int], timeout_s: float) -> None:
    """Until no process of ``groups`` is left (a SIGKILLed server may still be exiting, and write), or
    the timeout."""
    deadline = time.monotonic() + timeout_s
    for pgid in groups:
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)


def _remove_containers(docker_owners: set[tuple[int, str]]) -> None:
    if not docker_owners:
        return
    from harness import dockerhost

    for daemon in sorted({d for _, d in docker_owners}):
        try:
            client = dockerhost.connect(where=dockerhost.endpoint_named(daemon) if daemon else None)
        except dockerhost.UserError:
            continue  # no daemon: nothing of ours can be running there
        for owner, on in docker_owners:
            if on == daemon:
                dockerhost.remove_owned(client, owner)


if __name__ == "__main__":
    main()
