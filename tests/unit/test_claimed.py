"""Each adapter's pending record says whether a worker took the workflow (``detail.claimed``,
harness.contract.EngineRecord), from its store's own fields, or says nothing where they cannot tell."""

from __future__ import annotations

from types import SimpleNamespace

from engines.celery import _workflows_of
from engines.dbos_common import record_of
from engines.restate import _claimed
from engines.temporal_common import _record


def test_dbos_pending_is_claimed_enqueued_and_delayed_are_not() -> None:
    taken = record_of("PENDING", None, 1_000, 900, 950, 1, "durabench-run-w1", "v1")
    assert taken.status == "pending" and taken.detail["claimed"] is True
    assert taken.detail["dequeued_by"] == "worker:1" and taken.detail["dequeued_ns"] == 950_000_000
    for status in ("ENQUEUED", "DELAYED"):
        waiting = record_of(status, None, 900, 900, None, 0, None, "v1")
        assert waiting.status == "pending" and waiting.detail["claimed"] is False
        assert "dequeued_by" not in waiting.detail
    assert "claimed" not in record_of("SUCCESS", 1_200, 1_200, 900, 950, 1, "durabench-run-w0", "v1").detail
    assert record_of("ERROR", None, 1_200, 900, 950, 1, "durabench-run-w0", "v1").status == "failed"


def test_temporal_claimed_is_a_first_workflow_task_started() -> None:
    from temporalio.api.workflow.v1 import WorkflowExecutionInfo
    from temporalio.client import WorkflowExecutionStatus

    def running(history_length: int) -> SimpleNamespace:
        return SimpleNamespace(status=WorkflowExecutionStatus.RUNNING, raw_info=WorkflowExecutionInfo(),
                               history_length=history_length)

    assert _record(running(2)).detail["claimed"] is False  # WorkflowExecutionStarted, WorkflowTaskScheduled
    assert _record(running(3)).detail["claimed"] is True  # + WorkflowTaskStarted
    done = SimpleNamespace(status=WorkflowExecutionStatus.COMPLETED, raw_info=WorkflowExecutionInfo(),
                           history_length=11)
    assert "claimed" not in _record(done).detail


def test_restate_says_claimed_only_where_the_status_tells() -> None:
    assert _claimed("running") == _claimed("suspended") == _claimed("backing-off") == {"claimed": True}
    assert _claimed("pending") == _claimed("scheduled") == {"claimed": False}
    assert _claimed("ready") == {}  # before the first attempt, or after a suspension woke: it cannot say


def test_celery_messages_name_their_workflows() -> None:
    messages = [{"headers": {"id": "celery-run-0000001:0"}}, {"headers": {"id": "celery-run-0000002:2"}},
                {"headers": {}}, {"headers": {"id": "no-step"}}]
    assert _workflows_of(messages) == {"celery-run-0000001", "celery-run-0000002"}
