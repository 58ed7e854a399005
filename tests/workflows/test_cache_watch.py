"""The worker's sticky-cache watch (workers/capacity.py) against the real dev server: it counts the running
workflows on its task queue through Visibility and the workers polling it through DescribeTaskQueue, and warns,
naming the setting, when a worker's cache cannot hold its share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack.procs import free_port
from ferry.settings import TelemetrySettings
from tests.kit.processes import eventually
from workers.capacity import check_cache, queue_load
from workers.telemetry import metrics_runtime


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


@workflow.defn(name="CacheProbe")
class CacheProbe:
    """Stays running (as an environment does between iterations) until terminated."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@contextlib.asynccontextmanager
async def probe_workers(client: Client, queue: str, n: int) -> AsyncIterator[None]:
    """`n` workers polling `queue`, as `n` processes would: one client (connection) each."""
    config = client.service_client.config
    async with contextlib.AsyncExitStack() as stack:
        for i in range(n):
            own = await Client.connect(config.target_host, namespace=client.namespace)
            await stack.enter_async_context(
                Worker(
                    own,
                    task_queue=queue,
                    workflows=[CacheProbe],
                    identity=f"probe-{i}@test",
                    workflow_runner=UnsandboxedWorkflowRunner(),
                )
            )
        yield


async def test_the_watch_counts_the_queue_and_warns_when_a_share_exceeds_the_cache(
    dev_env: WorkflowEnvironment, task_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = dev_env.client
    port = free_port()
    runtime = metrics_runtime(TelemetrySettings(prometheus_bind=f"127.0.0.1:{port}"))
    assert runtime is not None
    handles = [
        await client.start_workflow(CacheProbe.run, id=f"probe-{uuid.uuid4()}", task_queue=task_queue) for _ in range(3)
    ]
    try:
        async with probe_workers(client, task_queue, 2):

            async def counted() -> bool:
                return await queue_load(client, task_queue) == (3, 2)

            await eventually(counted, 30, "3 running workflows and 2 polling workers", every=0.3)
            with caplog.at_level(logging.WARNING, logger="ferry.worker"):
                assert (await check_cache(client, task_queue, capacity=4)).level == "ok"
                assert not caplog.records
                assert (await check_cache(client, task_queue, capacity=2)).level == "thin"  # 2 each, 3 alone
                thrashing = await check_cache(client, task_queue, capacity=1, meter=runtime.metric_meter)
            assert thrashing.level == "thrashing"
            assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
            scraped = await asyncio.to_thread(scrape, port)
            assert re.search(r"^ferry_sticky_cache_demand_ratio(\{[^}]*\})? 2(\.0)?$", scraped, re.M), scraped[-2000:]
            assert "FERRY_MAX_CACHED_WORKFLOWS" in caplog.records[-1].getMessage()
            assert f"3 running workflows on task queue '{task_queue}' across 2 worker(s)" in thrashing.message
            # a worker asking before its own first poll is counted once, and one already polling is not counted twice
            assert await queue_load(client, task_queue, worker="probe-0@test") == (3, 2)
            assert await queue_load(client, task_queue, worker="starting@test") == (3, 3)
    finally:
        await asyncio.gather(*(h.terminate("test finished") for h in handles))
