"""The health deadline is absolute across retries (step 14): a release whose rollout never becomes healthy gets its
verdict no later than health-timeout + HEALTH_GRACE after the apply, measured in workflow time from the history,
however late a retry of the `wait_healthy` activity would start.

The worker that waits for the rollout's health is killed (SIGKILL) at the start of the wait; its attempt ends by the
heartbeat timeout and the retry finds no worker until the deadline has passed (every worker down, as in a node or
zone outage). With the deadline (schedule-to-close) the wait ends on it, unjudged, and the environment judges the
release from its own deadline: rolled back and held. Without it the retry starts when a worker is back and waits a
whole health timeout more: the verdict comes attempts x timeout late, and this test fails.

On the real dev server, registry and Kubernetes API with real `ferry worker` processes: the time-skipping server
keeps real time while an activity is outstanding (heartbeat and activity timeouts included), so it saves nothing
here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, hanging_manifests, publish, start_environment, wait_status
from tests.kit.heartbeats import activity_spans, killable_workers, running, wait_pending
from workflows import policies

HEALTH_TIMEOUT = 15.0  # seconds: the margin by which a retry that waits a whole timeout more misses the bound
# Workflow tasks between the apply's completion and the wait's scheduling, and the server's timer resolution.
SLACK = 5.0


async def test_a_never_healthy_release_is_judged_by_its_absolute_deadline_when_the_retry_starts_late(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    deadline = HEALTH_TIMEOUT + policies.HEALTH_GRACE.total_seconds()
    async with killable_workers(dev_env, registry, kube_server, tmp_path, "hd") as stack:
        good = publish(stack.settings, stack.repository, "1.0.0", app_manifests("web"))
        stack.workers.start("worker-a")
        handle = await start_environment(
            dev_env.client,
            stack.task_queue,
            EnvironmentSpec.model_validate(
                {
                    "name": stack.name,
                    "repository": stack.repository,
                    "namespace": stack.name,
                    "semver": ">=1.0.0",
                    "interval": "5s",
                    "health-timeout": f"{HEALTH_TIMEOUT:.0f}s",
                }
            ),
        )
        await wait_status(
            handle,
            lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == good,
            timeout=60,
            what="1.0.0 healthy",
        )
        bad = publish(stack.settings, stack.repository, "1.1.0", hanging_manifests("web", "nginx:1.26"))
        await wait_pending(handle, "wait_healthy", running(1), 60, "worker A waiting for 1.1.0's health")
        stack.workers.kill("worker-a")
        # no worker until the release's deadline has passed: the retry (after the heartbeat timeout) cannot start
        wait = [s for s in activity_spans((await handle.fetch_history()).events, "wait_healthy") if s.closed is None]
        assert len(wait) == 1, wait
        await asyncio.sleep(max(0.0, wait[0].scheduled.timestamp() + deadline + 2 - time.time()))
        stack.workers.start("worker-b")
        status = await wait_status(
            handle,
            lambda s: "1.1.0" in s.state.holds and s.state.pin is not None and s.state.pin.kind == "auto-rollback",
            timeout=90,
            what="rolled back and held",
        )
        await wait_status(
            handle,
            lambda s: s.state.health.status == "Healthy" and s.state.health.digest == good,
            timeout=60,
            what="1.0.0 healthy again",
        )
        events = (await handle.fetch_history()).events
    reconciles = activity_spans(events, "reconcile_environment")
    # the apply of 1.1.0: the last reconcile closed before the wait for its health was scheduled
    applied = [r for r in reconciles if r.closed is not None and r.closed <= wait[0].scheduled][-1]
    verdict = next(w for w in activity_spans(events, "wait_healthy") if w.scheduled == wait[0].scheduled)
    assert applied.closed is not None and verdict.closed is not None, verdict
    took = (verdict.closed - applied.closed).total_seconds()
    assert took <= deadline + SLACK, (
        f"1.1.0's health wait ended {took:.1f}s after its apply ({verdict.outcome}, attempt {verdict.attempt}): "
        f"past its deadline, health timeout {HEALTH_TIMEOUT:.0f}s + grace {policies.HEALTH_GRACE}"
    )
    rollback = [e for e in status.state.events if e.type == "AutoRollback"][-1]
    assert rollback.version == "1.0.0" and status.state.pin is not None and status.state.pin.digest != bad
    print(
        f"\n1.1.0 never healthy: its health wait ended {took:.1f}s after the apply ({verdict.outcome}; deadline "
        f"{deadline:.0f}s), rolled back to 1.0.0 and held: {rollback.message[:160]}"
    )
