"""Worker settings pointed at the test registry, and a ferry worker on a test's own task queue."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.settings import RegistrySettings, Settings

# A registry host that is never contacted: for worker settings in tests whose workflows end before any registry call.
NO_REGISTRY = "registry.invalid"


def settings_for(registry: Registry | str, tmp: Path, **registry_overrides: object) -> Settings:
    """Worker settings pointed at the test registry (over http), or at a registry host only (NO_REGISTRY)."""
    host = registry if isinstance(registry, str) else registry.host
    reg = RegistrySettings(insecure_hosts=[host], default=host, request_timeout_seconds=5, **registry_overrides)  # type: ignore[arg-type]
    settings = Settings(state_dir=tmp, registry=reg)
    settings.worker.cache_dir = tmp / "cache"
    return settings


# (task queue, workflow id) of every long-running workflow the test helpers start, for servers that cannot
# list workflows (the time-skipping test server).
STARTED: list[tuple[str, str]] = []


async def terminate_running(client: Client, task_queue: str) -> None:
    """Terminate what a test left running on its task queue, so no orphan (whose worker is gone) holds up
    time skipping or answers no queries in later tests."""
    from temporalio.service import RPCError, RPCStatusCode

    ids: list[str] = []
    try:
        ids = [
            wf.id async for wf in client.list_workflows(f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'")
        ]
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        ids = [wid for tq, wid in STARTED if tq == task_queue]
    for wid in ids:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wid).terminate("test finished")


@contextlib.asynccontextmanager
async def worker_on(
    env: WorkflowEnvironment,
    registry: Registry,
    kube_server: object,
    tmp: Path,
    task_queue: str,
    prometheus_url: str | None = None,
) -> AsyncIterator[Settings]:
    """A ferry worker on a fresh task queue against the real registry and the real API server, as the
    least-privileged ferry-worker user through the fault proxy; whatever the test left running on that queue is
    terminated afterwards."""
    from workers.worker import build_worker

    settings = settings_for(registry, tmp)
    settings.temporal.task_queue = task_queue
    settings.temporal.address = env.client.service_client.config.target_host
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)  # type: ignore[attr-defined]
    settings.worker.prometheus_url = prometheus_url
    async with build_worker(env.client, settings):
        yield settings
        await terminate_running(env.client, task_queue)
