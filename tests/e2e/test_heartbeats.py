"""Heartbeats notice a dead worker (step 14), on the real dev server, registry and Kubernetes API with real `ferry
worker` processes: a worker killed (SIGKILL) while it waits for a rollout's health is noticed within the health
wait's heartbeat timeout, and a second worker process takes the wait over (attempt 2) long before the attempt's
start-to-close timeout would have ended it. Without the heartbeat timeout the dead attempt holds the wait for the
whole start-to-close (health timeout + slack: minutes), and this test fails.

The same for a reconcile killed mid-apply is tests/chaos/test_heartbeats.py: its heartbeat timeout is a minute.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, hanging_manifests, publish, start_environment, wait_status
from tests.kit.heartbeats import heartbeat_seen, killable_workers, taken_over, wait_pending
from workflows import policies

HEALTH_TIMEOUT = "5m"  # the attempt's start-to-close is this plus HEALTH_ATTEMPT_SLACK: far beyond the bound below
# Worker B's start-up and the retry's backoff (1 s) on top of the heartbeat timeout.
SLACK = 15.0


async def test_a_worker_killed_during_a_health_wait_is_noticed_within_the_heartbeat_timeout(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    async with killable_workers(dev_env, registry, kube_server, tmp_path, "hb") as stack:
        good = publish(stack.settings, stack.repository, "1.0.0", app_manifests("web"))
        spec = EnvironmentSpec.model_validate(
            {
                "name": stack.name,
                "repository": stack.repository,
                "namespace": stack.name,
                "semver": ">=1.0.0",
                "interval": "2s",
                "health-timeout": HEALTH_TIMEOUT,
            }
        )
        start_to_close = spec.health_timeout.delta + policies.HEALTH_ATTEMPT_SLACK
        bound = policies.HEALTH_HEARTBEAT.total_seconds() + SLACK
        assert bound < start_to_close.total_seconds() / 4, "the test would not tell a heartbeat from start-to-close"
        stack.workers.start("worker-a")
        handle = await start_environment(dev_env.client, stack.task_queue, spec)
        await wait_status(
            handle,
            lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == good,
            timeout=60,
            what="1.0.0 healthy",
        )
        bad = publish(stack.settings, stack.repository, "1.1.0", hanging_manifests("web", "nginx:1.26"))
        first = await wait_pending(handle, "wait_healthy", heartbeat_seen, 60, "worker A waiting for 1.1.0's health")
        stack.workers.kill("worker-a")
        killed = time.time()
        stack.workers.start("worker-b")
        noticed = await taken_over(
            handle, "wait_healthy", first, killed, bound, "a second worker taking the health wait over"
        )
        status = await wait_status(handle, lambda s: s.state.health.digest == bad, what="1.1.0's rollout waited for")
        assert status.state.health.status == "Progressing", status.state.health
        print(
            f"\nwait_healthy: worker killed, attempt 2 on worker B {noticed:.1f}s later (heartbeat timeout "
            f"{policies.HEALTH_HEARTBEAT.total_seconds():.0f}s, start-to-close "
            f"{start_to_close.total_seconds():.0f}s)"
        )
