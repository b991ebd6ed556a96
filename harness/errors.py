"""Errors the harness raises on purpose.

The tree::

    DurabenchError            base of everything below
    ├── UserError             bad input (scenario, flags, paths): the CLI prints one line, exit 2
    │   └── ScenarioError     a scenario file is invalid (file, field path, expected, given)
    ├── ServiceError          a server the harness started failed to start or died
    └── EngineUnavailable     an adapter cannot run here (missing package or binary)

    RunInterrupted            (a KeyboardInterrupt) Ctrl-C or SIGTERM stopped a run part-way; the manifest
                              names the engine it stopped and ``durabench analyze`` reads what was recorded

Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DurabenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class UserError(DurabenchError):
    """Bad input from the user; the message is one line saying what is wrong and how to fix it."""


class ScenarioError(UserError):
    """A scenario file failed validation."""


class ServiceError(DurabenchError):
    """A harness-owned server failed to start or died."""


class EngineUnavailable(DurabenchError):
    """An engine adapter cannot run on this machine; the message says why."""


class SubmitRejected(DurabenchError):
    """An engine definitely refused a submission: the workflow will not run (a `fail`, not `unknown`)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run while ``engine`` ran; ``run_dir`` holds its partial results."""

    def __init__(self, run_dir: object, engine: str) -> None:
        super().__init__(f"interrupted while {engine} ran")
        self.run_dir = run_dir
        self.engine = engine
