"""Promotion rules on the time-skipping server (the dev-server versions are in tests/e2e/test_promotion.py)."""

from __future__ import annotations

from typing import Any

from temporalio.testing import WorkflowEnvironment

from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.settings import Settings
from tests.kit.environments import app_manifests, publish, wait_phase
from tests.kit.promotion import deployed_image, holds, make_world, promote, promote_approved, rollback
from workflows.promotion import PromotionWorkflow


async def test_self_approval_refused_then_approver_applies(ts_worker: Settings, time_env: WorkflowEnvironment,
                                                           kube_server: Any) -> None:
    world = await make_world(time_env.client, ts_worker, kube_server, publisher="alice", interval="1h")
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "mallory"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"comment": "who am I"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "bob", "comment": "ok"}))
    result = await handle.result()
    assert result.outcome == "succeeded" and result.approved_by == ["bob"]
    refusals = [d.reason for d in result.decisions if not d.accepted]
    assert "published this release" in refusals[0] and "not an approver" in refusals[1]
    assert "malformed approve: approver: Field required" in refusals[2]
    assert deployed_image(world) == "nginx:1.26"


async def test_reject(ts_worker: Settings, time_env: WorkflowEnvironment, kube_server: Any) -> None:
    world = await make_world(time_env.client, ts_worker, kube_server, interval="1h")
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.reject, LenientPayload({"approver": "bob", "comment": "freeze"}))
    result = await handle.result()
    assert result.outcome == "rejected" and result.reason == "freeze"
    assert deployed_image(world) == "nginx:1.25"


async def test_requires_healthy_in_staging(ts_worker: Settings, time_env: WorkflowEnvironment,
                                           kube_server: Any) -> None:
    world = await make_world(time_env.client, ts_worker, kube_server, interval="1h")
    publish(ts_worker, world.repository, "2.0.0-rc.1", app_manifests("shop", image="nginx:2"))  # staging skips rcs
    result = await time_env.client.execute_workflow(
        PromotionWorkflow.run, PromotionInput(environment=world.production, version="2.0.0-rc.1", requested_by="c"),
        id=promotion_workflow_id(world.production, "2.0.0-rc.1"), task_queue=ts_worker.temporal.task_queue)
    assert result.outcome == "refused" and f"not been applied and healthy in {world.staging}" in result.reason
    # 1.1.0 is healthy in staging, so the same policy lets it through to the approval gate
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    assert (await handle.result()).outcome == "succeeded"


async def test_rollback_holds_the_version(ts_worker: Settings, time_env: WorkflowEnvironment,
                                          kube_server: Any) -> None:
    world = await make_world(time_env.client, ts_worker, kube_server, interval="1h")
    await promote_approved(world, "bob")
    back = await rollback(world, "ts", by="alice", reason="errors")
    assert (back.outcome, back.from_version, back.to_version) == ("succeeded", "1.1.0", "1.0.0")
    assert deployed_image(world) == "nginx:1.25"
    assert await holds(world) == ["1.1.0"]
