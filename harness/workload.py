"""The step body every Python engine runs: the same code, whatever the engine.

A step writes ``step_start``, does its work (sleep ``step_duration_s``), writes ``step_end``
and returns the payload for the next step. ``attempt`` is the engine's own attempt counter
where it has one (informational; the checker counts executions from the ledger itself).
"""

from __future__ import annotations

import asyncio
import time

from harness.contract import WorkerConfig
from harness.ledger import Ledger


class StepRunner:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.ledger_dir, config.worker_id)
        self._payload = "x" * config.workload.payload_bytes

    def ready(self) -> None:
        """Signal that this worker takes work."""
        self.ledger.write("ready")

    def run(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt)
        if self.config.workload.step_duration_s > 0:
            time.sleep(self.config.workload.step_duration_s)
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)
        return self._payload

    async def arun(self, workflow_id: str, step: int, attempt: int | None = None) -> str:
        self.ledger.write("step_start", wf=workflow_id, step=step, attempt=attempt)
        if self.config.workload.step_duration_s > 0:
            await asyncio.sleep(self.config.workload.step_duration_s)
        self.ledger.write("step_end", wf=workflow_id, step=step, attempt=attempt)
        return self._payload
