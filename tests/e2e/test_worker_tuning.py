"""The fleet tuning settings reach the Temporal worker that build_worker makes (README "Capacity")."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import PollerBehaviorAutoscaling

from workers.settings import load_settings
from workers.worker import build_worker


async def test_fleet_tuning_reaches_the_worker(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    env = {
        "FERRY_MAX_CACHED_WORKFLOWS": "20000",
        "FERRY_MAX_CONCURRENT_WORKFLOW_TASKS": "48",
        "FERRY_MAX_CONCURRENT_LOCAL_ACTIVITIES": "24",
        "FERRY_MAX_TASK_POLLERS": "12",
        "FERRY_MAX_CONCURRENT_ACTIVITIES": "8",
    }
    worker = build_worker(dev_env.client, load_settings(env=env, state_dir=tmp_path), activities=[])
    got = worker.config()
    assert (
        got.get("max_cached_workflows"),
        got.get("max_concurrent_workflow_tasks"),
        got.get("max_concurrent_local_activities"),
        got.get("max_concurrent_activities"),
    ) == (20000, 48, 24, 8)
    pollers = got.get("workflow_task_poller_behavior")
    assert isinstance(pollers, PollerBehaviorAutoscaling) and pollers.maximum == 12
    assert got.get("activity_executor")._max_workers == 8 + 24  # type: ignore[union-attr]
