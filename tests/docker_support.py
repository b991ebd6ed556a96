"""The Docker daemon of the container tests: required in CI, a clear skip elsewhere."""

from __future__ import annotations

import os
from typing import Any

import pytest

from harness import dockerhost


def docker_client() -> Any:
    """A client of the daemon; without one, fail in CI (CI=true: .ci/run starts dockerd) and skip
    with the reason on a developer machine."""
    reason = dockerhost.available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the container tests, but: {reason}")
        pytest.skip(f"no Docker daemon here: {reason}")
    return dockerhost.connect()
