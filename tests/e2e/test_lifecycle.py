"""Lifecycle on the real dev server and Kubernetes API: an emergency pin pre-empts a running health wait, a
cancelled promotion leaves a final phase, and a cancel request suspends an environment instead of ending it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import kubernetes
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from ferry.promotion import PromotionInput, RollbackInput, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, hanging_manifests, publish, start_environment, wait_phase, wait_status
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


def namespace(kube_server: Any, name: str) -> None:
    kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))).create_namespace(
        {"metadata": {"name": name}}
    )


async def test_a_rollback_pin_pre_empts_a_running_health_wait(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, repository = f"pre-{suffix}", f"{dev_worker.registry.default}/team/pre-{suffix}"
    namespace(kube_server, name)
    publish(dev_worker, repository, "1.0.0", app_manifests("pre"))
    spec = EnvironmentSpec.model_validate(
        {
            "name": name,
            "namespace": name,
            "repository": repository,
            "semver": ">=1.0.0",
            "interval": "2s",
            "health-timeout": "10m",
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    # its rollout never finishes: a 10-minute health wait
    publish(dev_worker, repository, "1.1.0", hanging_manifests("pre", image="nginx:1.26"))
    await wait_status(
        env,
        lambda s: (
            s.state.last_applied is not None
            and s.state.last_applied.version == "1.1.0"
            and s.state.health.status == "Progressing"
        ),
        what="waiting for 1.1.0's health",
    )
    started = time.monotonic()
    result = await asyncio.wait_for(
        dev_env.client.execute_workflow(
            RollbackWorkflow.run,
            RollbackInput(environment=name, requested_by="bob", reason="stuck rollout"),
            id=f"rollback/{name}/now",
            task_queue=dev_worker.temporal.task_queue,
        ),
        timeout=120,
    )
    assert (result.outcome, result.to_version) == ("succeeded", "1.0.0"), result.reason
    assert time.monotonic() - started < 60  # not the 10 minutes the health wait had left
    status = await env.query(EnvironmentWorkflow.status)
    assert status.state.last_applied and status.state.last_applied.version == "1.0.0"
    assert status.state.holds == ["1.1.0"]


async def test_cancelled_promotion_and_environment(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, repository = f"can-{suffix}", f"{dev_worker.registry.default}/team/can-{suffix}"
    namespace(kube_server, name)
    for version in ("1.0.0", "1.1.0"):
        publish(dev_worker, repository, version, app_manifests("can"))
    spec = EnvironmentSpec.model_validate(
        {
            "name": name,
            "namespace": name,
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "approval": {"required": True, "approvers": ["alice", "bob"]},
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    promotion = await dev_env.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=name, version="1.1.0", requested_by="carol"),
        id=promotion_workflow_id(name, "1.1.0"),
        task_queue=dev_worker.temporal.task_queue,
    )
    status = await wait_phase(promotion, "AwaitingApproval")
    waiting = f"WorkflowId = '{promotion.id}' AND FerryPhase = 'AwaitingApproval'"
    details = (await promotion.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    assert "May approve: alice or bob. The publisher, ci-bot, may not." in details, details
    assert status.approvers == ["alice", "bob"]
    await promotion.cancel()
    try:
        await promotion.result()
        raise AssertionError("the cancelled promotion completed")
    except WorkflowFailureError:
        pass
    assert (await promotion.query(PromotionWorkflow.status)).phase == "Cancelled"
    for _ in range(50):  # visibility is eventually consistent
        if not [wf async for wf in dev_env.client.list_workflows(waiting)]:
            break
        await asyncio.sleep(0.2)
    assert not [wf async for wf in dev_env.client.list_workflows(waiting)]
    assert [
        wf async for wf in dev_env.client.list_workflows(f"WorkflowId = '{promotion.id}' AND FerryPhase = 'Cancelled'")
    ]

    await env.cancel()  # an environment is never cancelled: it is suspended, and says so
    status = await wait_status(env, lambda s: s.state.suspended, what="suspended by the cancel request")
    assert "cancel request suspends" in [e for e in status.state.events if e.type == "Suspended"][-1].message
    assert (await env.describe()).status == WorkflowExecutionStatus.RUNNING
