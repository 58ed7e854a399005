"""A ReleaseWorkflow runs packaging and push only on a CI host's own queue; the main worker (its real wiring, every
activity registered) serves neither. The registry is a name only: every release here is refused before any call."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from ferry.release import new_ci_task_queue
from tests.kit.stack import NO_REGISTRY, settings_for
from workers.worker import all_activities, build_worker

CI_ONLY = {"package_bundle", "push_artifact", "sign_artifact"}


def _crafted(ci_task_queue: str, bundle_dir: Path) -> dict[str, Any]:
    """What someone with Temporal rights to start releases could send: plain JSON, no model in between."""
    return {
        "repository": f"{NO_REGISTRY}/stolen/{uuid.uuid4().hex[:8]}",
        "version": "1.0.0",
        "ci_task_queue": ci_task_queue,
        "bundle_dir": str(bundle_dir),
        "publisher": "mallory",
        "timeout_seconds": 60,
    }


async def _refused(client: Client, task_queue: str, input: dict[str, Any]) -> tuple[str, list[Any]]:
    handle = await client.start_workflow(
        "ReleaseWorkflow", input, id=f"release/crafted/{uuid.uuid4().hex[:8]}", task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    events = [event.event_type async for event in handle.fetch_history_events()]
    cause = err.value.cause
    return f"{cause}: {getattr(cause, 'cause', '')}", events


def test_the_main_worker_registers_no_ci_activity(tmp_path: Path) -> None:
    names = {
        fn.__temporal_activity_definition.name
        for fn in all_activities(settings_for(NO_REGISTRY, tmp_path), client=None)  # type: ignore[attr-defined]
    }  # type: ignore[arg-type]
    assert not names & CI_ONLY, names & CI_ONLY
    assert {"pull_artifact", "verify_artifact", "reconcile_environment"} <= names


@pytest.mark.parametrize("queue", ["main", "ferry"])
async def test_a_crafted_release_naming_the_main_queue_is_refused_on_the_record(
    time_env: WorkflowEnvironment, tmp_path: Path, task_queue: str, queue: str
) -> None:
    """Issue 11: a crafted ReleaseWorkflow whose ci_task_queue is the main worker's queue packaged a directory
    of the worker host and pushed it anywhere. Now the workflow fails at once, having scheduled nothing."""
    secrets = tmp_path / "worker-secrets"
    secrets.mkdir()
    (secrets / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n")
    settings = settings_for(NO_REGISTRY, tmp_path)
    settings.temporal.task_queue = task_queue
    async with build_worker(time_env.client, settings):
        message, events = await _refused(
            time_env.client, task_queue, _crafted(task_queue if queue == "main" else "ferry", secrets)
        )
    assert "not a CI host's queue" in message
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED in events
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in events
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in events, "refused on the record, not a stuck task"


async def test_a_ci_shaped_queue_that_is_the_workflows_own_is_refused(
    time_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    own = new_ci_task_queue()
    settings = settings_for(NO_REGISTRY, tmp_path)
    async with build_worker(time_env.client, settings, task_queue=own):
        message, events = await _refused(time_env.client, own, _crafted(own, tmp_path))
    assert "is this worker's own queue" in message
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in events
