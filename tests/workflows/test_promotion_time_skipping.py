"""Promotion rules on the time-skipping server (the dev-server versions are in tests/e2e/test_promotion.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.environment import LenientPayload
from ferry.settings import Settings
from tests.conftest import settings_for, terminate_running
from tests.e2e.test_promotion import _image, _phase, _promote, _world
from workers.worker import build_worker
from workflows.promotion import PromotionWorkflow


@pytest.fixture
async def ts_worker(time_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path,
                    task_queue: str) -> AsyncIterator[Settings]:
    settings = settings_for(registry, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.kubeconfig = Path(kube_server.kubeconfig)
    async with build_worker(time_env.client, settings):
        yield settings
        await terminate_running(time_env.client, task_queue)


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
