"""The worker's Prometheus endpoint: the Temporal SDK's worker metrics and Ferry's own counters, scraped over
HTTP from a worker (build_worker, on a client with the metrics runtime) against the real dev server. The registry
and the cluster are stand-ins (tests/kit/stand_ins.py): the counters are the workflow's and the SDK's."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port
from ferry.settings import TelemetrySettings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import start_environment, wait_status
from tests.kit.stack import NO_REGISTRY, settings_for, terminate_running
from tests.kit.stand_ins import World
from workers.client import connect
from workers.telemetry import MetricsUnavailable, metrics_runtime
from workers.worker import build_worker


async def test_worker_serves_sdk_and_ferry_metrics(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    settings = settings_for(NO_REGISTRY, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.temporal.address = dev_env.client.service_client.config.target_host
    port = free_port()
    settings.telemetry.prometheus_bind = f"127.0.0.1:{port}"
    runtime = metrics_runtime(settings.telemetry)
    assert runtime is not None
    client = await connect(settings.temporal, runtime=runtime)
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    repository = f"{NO_REGISTRY}/team/{name}"
    world = World()
    world.release("1.0.0")
    async with build_worker(client, settings, activities=world.activities(client)):
        handle = await start_environment(
            client,
            task_queue,
            EnvironmentSpec.model_validate(
                {"name": name, "repository": repository, "namespace": name, "version": "1.0.0", "interval": "1h"}
            ),
        )
        await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        await terminate_running(client, task_queue)
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    ours = [k for k in samples if k.startswith("ferry_environment_events{") and f'environment="{name}"' in k]
    assert any('type="Applied"' in k and samples[k] == 1 for k in ours), ours
    assert any('type="Healthy"' in k and samples[k] == 1 for k in ours), ours
    assert any(k.startswith("temporal_workflow_task_execution_latency") for k in samples)
    assert any(
        k.startswith("temporal_activity_execution_latency") and 'activity_type="reconcile_environment"' in k
        for k in samples
    )


def test_bad_or_taken_metrics_address_is_one_clear_error() -> None:
    with pytest.raises(MetricsUnavailable, match="'abc'.*FERRY_PROMETHEUS_BIND"):
        metrics_runtime(TelemetrySettings(prometheus_bind="abc"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(MetricsUnavailable, match="already in use"):
            metrics_runtime(TelemetrySettings(prometheus_bind=taken))
