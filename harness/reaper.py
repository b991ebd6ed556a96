"""The reaper: kills every registered process group when the harness's pipe closes.

Protocol on stdin: ``+PGID`` registers a group, ``-PGID`` forgets it, ``DPID`` says that the harness
process PID owns Docker containers (harness/dockerhost.py). End of file (the harness exited, crashed
or was SIGKILLed) kills every group still registered, then removes every container and network
labelled with an owner it was told about.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    docker_owners: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip().decode()
        if text.startswith("+"):
            groups.add(int(text[1:]))
        elif text.startswith("-"):
            groups.discard(int(text[1:]))
        elif text.startswith("D"):
            docker_owners.add(int(text[1:]))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if docker_owners:
        from harness import dockerhost

        try:
            client = dockerhost.connect()
        except dockerhost.UserError:
            return  # no daemon: nothing of ours can be running there
        for owner in docker_owners:
            dockerhost.remove_owned(client, owner)


if __name__ == "__main__":
    main()
