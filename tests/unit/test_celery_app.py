"""The Celery app of engines/celery/app.py: several apps in one process (the harness builds a client app per
engine run; a worker with an event consumer builds a second one) each keep their own tasks."""

from __future__ import annotations

import warnings

from engines.celery import CeleryEngine
from engines.celery.app import STAGE_TASKS, make_app
from engines.celery.app import workflow as celery_workflow
from harness import scenario


def test_apps_built_in_one_process_keep_their_own_tasks_without_a_duplicate_name_warning() -> None:
    program = [{"kind": "work"}, {"kind": "sleep", "duration": "1s"}]
    doc = {"name": "t", "engines": ["celery"], "workload": {"program": program}}
    workload = scenario.parse(doc, "t.yaml").workload.to_workload(1)
    settings = CeleryEngine().default_settings(workload, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # celery's DuplicateTaskNameWarning fails the test
        first = make_app("redis://127.0.0.1:1/0", settings)
        celery_workflow(first, "wf-1", workload.program)  # finalizes the app, as a client's first submit does
        second = make_app("redis://127.0.0.1:2/0", settings)
        celery_workflow(second, "wf-2", workload.program)
    names = [*STAGE_TASKS.values(), "durabench.fire", "durabench.join"]
    for name in names:
        assert first.tasks[name].app is first and second.tasks[name].app is second
        # each app runs the functions made for it (sleep replaces itself with its own app's fire task)
        assert first.tasks[name]._decorated_fun is not second.tasks[name]._decorated_fun, name
