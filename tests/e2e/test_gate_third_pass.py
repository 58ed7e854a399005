"""The gate, third pass (step 15): nothing a client sends can fail an environment's workflow task or grow its
history without bound. Real dev server (one of the test's own where server limits are lowered), registry and
Kubernetes API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.environment import EnvironmentSpec
from ferry.settings import Settings
from tests.e2e.devserver import start_dev_server
from tests.e2e.test_loop_never_stops import failed_workflow_tasks
from tests.kit.environments import app_manifests, publish, reconcile_now, start_environment, wait_status
from tests.kit.stack import worker_on
from workflows import policies

SERVER_HISTORY_LIMIT = 12 * 1024 * 1024  # the server terminates a run past this (lowered from 50 MB)


def _world(settings: Settings, kube_server: Any, **spec: Any) -> tuple[EnvironmentSpec, str]:
    suffix = uuid.uuid4().hex[:8]
    name, repository = f"gate-{suffix}", f"{settings.registry.default}/team/gate-{suffix}"
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    digest = publish(settings, repository, "1.0.0", app_manifests("web"))
    return EnvironmentSpec.model_validate({"name": name, "repository": repository, "namespace": name,
                                           "interval": "2s", "health-timeout": "20s", "version": "1.0.0",
                                           **spec}), digest


async def test_a_pin_naming_a_malformed_run_id_is_refused_and_the_environment_keeps_going(
        dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any) -> None:
    spec, digest = _world(dev_worker, kube_server, approval={"required": True, "approvers": ["alice"]})
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    for request_id in ("x@y", "@" + str(uuid.uuid4()), "promote/p/1.1.0@not-a-uuid"):
        await handle.signal("pin", {"version": "1.0.0", "digest": digest, "by": "mallory", "request_id": request_id})
    status = await wait_status(handle, lambda s: len([e for e in s.state.events if e.type == "PinRefused"]) == 3,
                               what="three pins refused on the record")
    before = status.state.iterations
    await reconcile_now(handle)
    await wait_status(handle, lambda s: s.state.iterations > before, what="the loop still iterating")
    assert await failed_workflow_tasks(handle) == []


@pytest.fixture
async def limited_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(extra_args=[
        "--dynamic-config-value", f"limit.historySize.error={SERVER_HISTORY_LIMIT}",
        "--dynamic-config-value", f"limit.historySize.warn={SERVER_HISTORY_LIMIT // 2}"])
    yield env
    await env.shutdown()


async def test_a_flood_of_large_signals_never_ends_the_run(limited_server: WorkflowEnvironment, registry: Registry,
                                                            kube_server: Any, tmp_path: Path) -> None:
    assert policies.MAX_HISTORY_BYTES < SERVER_HISTORY_LIMIT
    task_queue = f"flood-{uuid.uuid4().hex[:8]}"
    async with worker_on(limited_server, registry, kube_server, tmp_path, task_queue) as settings:
        spec, _ = _world(settings, kube_server, interval="1h")  # NB: idle: only the flood wakes it
        first = await start_environment(limited_server.client, task_queue, spec)
        await wait_status(first, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
        handle = limited_server.client.get_workflow_handle(first.id)  # NB: whichever run is current
        blob = "f" * 1_000_000
        # twice the server's limit, unknown names and pins, at the finding's pace (28 signals of ~1.9 MB in 10 s).
        # NB: no workflow can stop signals the server appends faster than it runs workflow tasks: that bound is the
        # server's (per-namespace rate limits; docs/trust.md)
        for i in range(2 * SERVER_HISTORY_LIMIT // len(blob)):
            await handle.signal("no-such-signal" if i % 2 else "pin", {"flood": blob})
            await asyncio.sleep(0.35)
        status = await wait_status(handle, lambda s: s.state.unknown_signals > 0, timeout=60, what="flood counted")
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING, desc.status
        assert desc.run_id != first.result_run_id  # it continued as new
        assert status.state.health.status == "Healthy"
        assert status.state.unknown_signals >= 1


async def test_a_relabelled_pin_never_rolls_forward_and_a_sender_cannot_claim_ferrys_names(
        dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any) -> None:
    from ferry.promotion import RollbackInput
    from workflows.rollback import RollbackWorkflow

    spec, first = _world(dev_worker, kube_server, approval={"required": True, "approvers": ["alice"]})
    spec = spec.model_copy(update={"version": None, "semver": ">=1.0.0"})
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(handle, lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == first,
                      what="1.0.0 healthy")
    newer = publish(dev_worker, spec.repository, "2.0.0", app_manifests("web", "nginx:1.26"))
    await reconcile_now(handle)
    await wait_status(handle, lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == newer,
                      timeout=60, what="2.0.0 healthy")
    result = await dev_env.client.execute_workflow(
        RollbackWorkflow.run, RollbackInput(environment=spec.name, to_version="1.0.0", requested_by="alice",
                                            reason="incident"),
        id=f"rollback/{spec.name}/{uuid.uuid4().hex[:6]}", task_queue=dev_worker.temporal.task_queue)
    assert result.outcome == "succeeded", result.reason
    # a bare pin: the held 2.0.0's digest, labelled as an old version, as a rollback (no approval needed for those)
    await handle.signal("pin", {"version": "0.0.1", "digest": newer, "by": "mallory", "kind": "rollback",
                                "reason": "roll back"})
    status = await wait_status(handle, lambda s: any(e.type == "PinRefused" and e.by == "mallory"
                                                     for e in s.state.events), what="the relabelled pin refused")
    refusal = next(e for e in status.state.events if e.type == "PinRefused" and e.by == "mallory")
    assert "is release 2.0.0 here, not 0.0.1" in refusal.message
    assert status.state.pin is not None and status.state.pin.digest == first
    # the names Ferry records for itself are not a sender's to claim
    await handle.signal("suspend", {"by": "cancel request", "reason": "hiding"})
    status = await wait_status(handle, lambda s: s.state.suspended, what="suspended")
    assert status.state.events[-1].by == "cancel request (claimed by a sender)"
