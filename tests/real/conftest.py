"""Fixtures shared by the container tests: the Docker daemon and the runtime image of this tree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.run import image
from tests.docker_support import docker_client


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A client of the daemon: required in CI, a skip with the reason elsewhere (tests/docker_support.py)."""
    c = docker_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def runtime_image(client: Any) -> str:
    """The image of this source tree: built once (minutes), then found by its content hash."""
    return image.ensure(client, lambda line: print(line, flush=True))
