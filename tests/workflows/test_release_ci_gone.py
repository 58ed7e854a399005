"""If the `ferry release` process on the CI host dies, the release fails within a bounded time."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType
from temporalio.testing import WorkflowEnvironment

from ferry.release import ReleaseInput
from tests.kit.stack import NO_REGISTRY, settings_for
from workers.worker import build_worker
from workflows import policies
from workflows.release import ReleaseWorkflow


async def test_release_fails_when_nobody_serves_the_ci_queue(
    time_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    settings = settings_for(NO_REGISTRY, tmp_path)  # the release never reaches the registry
    async with build_worker(time_env.client, settings, task_queue=task_queue):
        handle = await time_env.client.start_workflow(
            ReleaseWorkflow.run,
            ReleaseInput(
                repository=f"{NO_REGISTRY}/team/gone",
                version="1.0.0",
                ci_task_queue=f"ferry-ci/dead-host/{uuid.uuid4().hex[:8]}",
                bundle_dir="/nonexistent",
                publisher="ci-bot",
                timeout_seconds=3600,
            ),
            id=f"release/gone/{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        # a real minute (CI_SCHEDULE_TO_START): the test server skips no time while an activity is outstanding
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    cause = err.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, TimeoutError)
    assert cause.cause.type == TimeoutType.SCHEDULE_TO_START
    describe = await handle.describe()
    assert describe.close_time is not None and describe.start_time is not None
    elapsed = describe.close_time - describe.start_time
    assert elapsed <= policies.CI_SCHEDULE_TO_START * 2, f"release hung for {elapsed} (release timeout was 1h)"
