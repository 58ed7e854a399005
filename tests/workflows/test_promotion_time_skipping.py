"""Promotion rules on the time-skipping server over stand-in activities (tests/kit/stand_ins.py): approval signals,
segregation of duties, rejection, requires-healthy-in, rollback holds. The same stories on the real dev server,
registry and cluster are tests/e2e/test_promotion.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.settings import Settings
from tests.kit.environments import wait_phase
from tests.kit.promotion import holds, make_stand_in_world, promote, promote_approved, rollback
from tests.kit.stack import NO_REGISTRY, settings_for, terminate_running
from tests.kit.stand_ins import World
from workers.worker import workflow_runner
from workflows import ALL_WORKFLOWS
from workflows.promotion import PromotionWorkflow


@pytest.fixture
def stand_ins() -> World:
    return World()


@pytest.fixture
async def ts_stand_ins(
    time_env: WorkflowEnvironment, stand_ins: World, tmp_path: Path, task_queue: str
) -> AsyncIterator[Settings]:
    """Every workflow on the time-skipping server, its activities the stand-ins'."""
    settings = settings_for(NO_REGISTRY, tmp_path)
    settings.temporal.task_queue = task_queue
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=ALL_WORKFLOWS,
        activities=stand_ins.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        yield settings
        await terminate_running(time_env.client, task_queue)


async def test_self_approval_refused_then_approver_applies(
    ts_stand_ins: Settings, time_env: WorkflowEnvironment, stand_ins: World
) -> None:
    stand_ins.publisher = "alice"
    world = await make_stand_in_world(time_env.client, ts_stand_ins, stand_ins, interval="1h")
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
    assert stand_ins.running[world.production_ns] == world.digests["1.1.0"]


async def test_reject(ts_stand_ins: Settings, time_env: WorkflowEnvironment, stand_ins: World) -> None:
    world = await make_stand_in_world(time_env.client, ts_stand_ins, stand_ins, interval="1h")
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.reject, LenientPayload({"approver": "bob", "comment": "freeze"}))
    result = await handle.result()
    assert result.outcome == "rejected" and result.reason == "freeze"
    assert stand_ins.running[world.production_ns] == world.digests["1.0.0"]


async def test_requires_healthy_in_staging(
    ts_stand_ins: Settings, time_env: WorkflowEnvironment, stand_ins: World
) -> None:
    world = await make_stand_in_world(time_env.client, ts_stand_ins, stand_ins, interval="1h")
    stand_ins.release("2.0.0-rc.1")  # staging (>=1.0.0) skips release candidates
    result = await time_env.client.execute_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=world.production, version="2.0.0-rc.1", requested_by="c"),
        id=promotion_workflow_id(world.production, "2.0.0-rc.1"),
        task_queue=ts_stand_ins.temporal.task_queue,
    )
    assert result.outcome == "refused" and f"not been applied and healthy in {world.staging}" in result.reason
    # 1.1.0 is healthy in staging, so the same policy lets it through to the approval gate
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    assert (await handle.result()).outcome == "succeeded"


async def test_rollback_holds_the_version(
    ts_stand_ins: Settings, time_env: WorkflowEnvironment, stand_ins: World
) -> None:
    world = await make_stand_in_world(time_env.client, ts_stand_ins, stand_ins, interval="1h")
    await promote_approved(world, "bob")
    back = await rollback(world, "ts", by="alice", reason="errors")
    assert (back.outcome, back.from_version, back.to_version) == ("succeeded", "1.1.0", "1.0.0")
    assert stand_ins.running[world.production_ns] == world.digests["1.0.0"]
    assert await holds(world) == ["1.1.0"]
