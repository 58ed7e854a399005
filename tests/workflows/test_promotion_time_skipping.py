"""Promotion rules on the time-skipping server (the dev-server versions are in tests/e2e/test_promotion.py)."""

from __future__ import annotations

from typing import Any

from temporalio.testing import WorkflowEnvironment

from ferry.environment import LenientPayload
from ferry.settings import Settings
from tests.e2e.test_promotion import _image, _phase, _promote, _world
from workflows.promotion import PromotionWorkflow


async def test_self_approval_refused_then_approver_applies(ts_worker: Settings, time_env: WorkflowEnvironment,
                                                           kube_server: Any) -> None:
    world = await _world(time_env.client, ts_worker, kube_server, publisher="alice", interval="1h")
    handle = await _promote(world)
    await _phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "mallory"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"comment": "who am I"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "bob", "comment": "ok"}))
    result = await handle.result()
    assert result.outcome == "succeeded" and result.approved_by == ["bob"]
    refusals = [d.reason for d in result.decisions if not d.accepted]
    assert "published this release" in refusals[0] and "not an approver" in refusals[1]
    assert "malformed approve: approver: Field required" in refusals[2]
    assert _image(world) == "nginx:1.26"


async def test_reject_and_requires_healthy_in(ts_worker: Settings, time_env: WorkflowEnvironment,
                                              kube_server: Any) -> None:
    world = await _world(time_env.client, ts_worker, kube_server, interval="1h")
    handle = await _promote(world)
    await _phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.reject, LenientPayload({"approver": "bob", "comment": "freeze"}))
    result = await handle.result()
    assert result.outcome == "rejected" and result.reason == "freeze"
    assert _image(world) == "nginx:1.25"
