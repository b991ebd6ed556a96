"""The open-loop plan a Locust run follows: the pacer's schedule, split across Locust workers.

Written by the harness as JSON (``engines/<engine>/locust/plan.json``) and read by the locustfile
in every Locust process (harness/run/locustfile.py). Arrival ``i`` (1-based, warmup included) gets the
intended time ``t0 + offset[i]`` from :func:`harness.driver.arrival_offsets`, exactly the pacer's
schedule for the same scenario and seed, and the workflow id ``<prefix>-<i:07d>``, the pacer's id.
Locust worker ``k`` of ``n`` sends the arrivals with ``i % n == k`` to front door ``i % len(fronts)``.
The rate is split across workers; the schedule is not: no arrival waits for another's answer.

This module must stay importable under gevent and without a Temporal client: no engine imports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.run.driver import arrival_offsets
from harness.scenario import LoadSpec

CONNECTIONS = 100  # HTTP connections per Locust worker (more requests in flight wait: lateness, visible)


@dataclass(frozen=True)
class Plan:
    load_spec: dict[str, object]  # the scenario's LoadSpec, dumped
    seed: int
    prefix: str  # workflow ids are <prefix>-<i:07d>
    fronts: list[str]  # front-door base URLs, http://127.0.0.1:P
    workers: int  # Locust worker processes
    ledger_dir: str  # where the master writes load_start (src: locust)
    lead_s: float  # t0 is this long after the master starts the test, so every worker has it in time
    connections: int  # HTTP connections per Locust worker

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> Plan:
        return cls(**json.loads(Path(path).read_text()))

    @property
    def spec(self) -> LoadSpec:
        return LoadSpec.model_validate(self.load_spec)

    def arrivals(self, worker_index: int) -> list[tuple[str, float, str]]:
        """(workflow id, offset s from t0, front-door URL) of every arrival worker ``worker_index`` sends."""
        out = []
        for i, offset in enumerate(arrival_offsets(self.spec, self.seed), start=1):
            if i % self.workers == worker_index % self.workers:
                out.append((f"{self.prefix}-{i:07d}", offset, self.fronts[i % len(self.fronts)]))
        return out
