"""Temporal's timeouts sized against the workload: the activity's start-to-close follows the step, the
workflow task timeout never goes above the server's default (a workflow task runs no step)."""

from __future__ import annotations

import pytest

from engines.temporal_common import WORKFLOW_TASK_TIMEOUT_DEFAULT_S, workflow_settings
from harness.contract import Workload


@pytest.mark.parametrize(("step_s", "start_to_close_s", "task_timeout_s"),
                         [(0.05, 2.0, 2.0), (0.3, 6.0, 6.0), (1.0, 20.0, 10.0), (60.0, 1200.0, 10.0)])
def test_timeouts_follow_the_step_and_the_task_timeout_stays_at_most_the_default(
        step_s: float, start_to_close_s: float, task_timeout_s: float) -> None:
    s = workflow_settings(Workload(steps=1, step_duration_s=step_s, payload_bytes=16))
    assert s["activity_start_to_close_s"] == start_to_close_s
    assert s["workflow_task_timeout_s"] == task_timeout_s <= WORKFLOW_TASK_TIMEOUT_DEFAULT_S
