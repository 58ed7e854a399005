"""A worker killed mid-reconcile is noticed within the reconcile's heartbeat timeout (step 14), on the real dev
server, registry and Kubernetes API with real `ferry worker` processes: worker A is killed (SIGKILL) while it applies
a release of many objects (some applied, its inventory not yet written), a second worker process takes the reconcile
over (attempt 2, its last failure a heartbeat timeout) within RECONCILE_HEARTBEAT and a little, long before the
attempt's start-to-close (the spec's timeout) would have ended it, and the release is applied in full. Without the
heartbeat timeout the dead attempt holds the reconcile for the whole start-to-close, and this test fails.

In the fault tier because the heartbeat timeout is a minute; the health wait's (30 s) is tests/e2e/test_heartbeats.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.spec import EnvironmentSpec
from tests.kit.environments import publish, start_environment, wait_status
from tests.kit.heartbeats import heartbeat_seen, killable_workers, taken_over, wait_pending
from tests.kit.processes import eventually
from workflows import policies

OBJECTS = 400  # ConfigMaps: a reconcile of ~15 s (a dry run and an apply each), long enough to kill mid-apply
KILL_AFTER = 20  # objects applied: the kill lands in the middle of the apply, not in the fetch or the dry runs
TIMEOUT = "10m"  # the reconcile's start-to-close: far beyond the bound below
# Worker B's start-up and the retry's backoff (1 s) on top of the heartbeat timeout.
SLACK = 20.0


def config_maps(count: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i:05d}"}, "data": {"i": str(i)}}
        for i in range(count)
    ]


def ours(core: Any, namespace: str) -> list[Any]:
    return [c for c in core.list_namespaced_config_map(namespace).items if c.metadata.name.startswith("cm-")]


async def test_a_worker_killed_mid_reconcile_is_noticed_within_the_heartbeat_timeout(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    async with killable_workers(dev_env, registry, kube_server, tmp_path, "hbr") as stack:
        core, ns = stack.core, stack.name
        digest = publish(stack.settings, stack.repository, "1.0.0", config_maps(OBJECTS))
        spec = EnvironmentSpec.model_validate(
            {
                "name": stack.name,
                "repository": stack.repository,
                "namespace": ns,
                "version": "1.0.0",
                "timeout": TIMEOUT,
            }
        )
        bound = policies.RECONCILE_HEARTBEAT.total_seconds() + SLACK
        assert bound < spec.timeout.delta.total_seconds() / 4, "the test would not tell a heartbeat from start-to-close"
        stack.workers.start("worker-a")
        handle = await start_environment(dev_env.client, stack.task_queue, spec)
        first = await wait_pending(handle, "reconcile_environment", heartbeat_seen, 60, "worker A reconciling")

        async def applying() -> bool:
            return len(await asyncio.to_thread(ours, core, ns)) >= KILL_AFTER

        await eventually(applying, 60, f"worker A applying its first {KILL_AFTER} objects", every=0.05)
        stack.workers.kill("worker-a")
        killed = time.time()
        applied = len(ours(core, ns))
        assert applied < OBJECTS, f"the reconcile had finished ({applied} objects) before the kill"
        stack.workers.start("worker-b")
        noticed = await taken_over(
            handle, "reconcile_environment", first, killed, bound, "a second worker taking the reconcile over"
        )
        status = await wait_status(
            handle,
            lambda s: s.state.last_applied is not None and s.state.last_applied.digest == digest,
            timeout=120,
            what="1.0.0 applied",
        )
        assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
        assert len(ours(core, ns)) == OBJECTS
        print(
            f"\nreconcile_environment: worker killed mid-apply ({applied} of {OBJECTS} objects in the cluster), "
            f"attempt 2 on worker B {noticed:.1f}s later (heartbeat timeout "
            f"{policies.RECONCILE_HEARTBEAT.total_seconds():.0f}s, start-to-close "
            f"{spec.timeout.delta.total_seconds():.0f}s)"
        )
