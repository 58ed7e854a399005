"""Promotion with SRE approval, rollback with holds: real dev server, registry, Kubernetes API, `temporal` CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from devstack.procs import script_path
from devstack.registry import Registry
from ferry.environment import LenientPayload, SpecUpdate
from ferry.promotion import PromotionInput, PromotionResult, RollbackInput, promotion_workflow_id
from ferry.settings import Settings
from tests.kit.environments import app_manifests, hanging_manifests, next_iteration, publish, wait_phase
from tests.kit.promotion import deployed_image, holds, make_world, promote, promote_approved, rollback
from tests.kit.stack import settings_for, terminate_running
from workers.worker import build_worker
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"


async def test_approve_by_signal_pins_digest_and_applies(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    # what an SRE types in the Temporal UI's search box to see what waits for them
    query = f"FerryPhase = 'AwaitingApproval' AND FerryEnvironment = '{world.production}'"
    for _ in range(50):
        waiting = [wf.id async for wf in world.client.list_workflows(query)]
        if waiting:
            break
        await asyncio.sleep(0.2)
    assert waiting == [handle.id]
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice", "comment": "looks good"}))
    result: PromotionResult = await handle.result()
    assert result.outcome == "succeeded" and result.approved_by == ["alice"]
    assert result.digest == world.digests["1.1.0"] and result.publisher == "ci-bot"
    assert deployed_image(world) == "nginx:1.26"
    # a tag re-pointed in the registry after approval does not change what production runs
    publish(dev_worker, world.repository, "1.1.0", app_manifests("shop", image="evil:latest"))
    status = await next_iteration(world.client.get_workflow_handle(f"env/{world.production}"))
    assert status.state.last_applied is not None and status.state.last_applied.digest == world.digests["1.1.0"]
    assert deployed_image(world) == "nginx:1.26"
    if os.environ.get("FERRY_RECORD_HISTORIES"):
        HISTORIES.joinpath("promotion.json").write_text((await handle.fetch_history()).to_json())


async def test_publisher_cannot_approve_then_an_approver_can(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, publisher="alice")
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # a refusal fails the Update: the caller sees it
        await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "alice"}))
    assert refused.value.cause.type == "DecisionRefused"  # type: ignore[attr-defined]
    assert "published this release" in refused.value.cause.message  # type: ignore[attr-defined]
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "mallory"}))  # not an approver
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "bob", "version": "9.9.9"}))
    status = await handle.query(PromotionWorkflow.status)
    assert status.phase == "AwaitingApproval"
    reasons = [d.reason for d in status.decisions if not d.accepted]
    assert "published this release" in reasons[0] and "mallory is not an approver" in reasons[1]
    assert "names version 9.9.9" in reasons[2]
    accepted = await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "bob"}))
    assert accepted.accepted
    again = await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "bob"}))
    assert again.accepted and "duplicate" in again.reason
    result = await handle.result()
    assert result.outcome == "succeeded" and result.approved_by == ["bob"]
    # every decision writes its record, the duplicate too, so the audit pairs each with its sender
    assert [d.by for d in result.decisions] == ["alice", "mallory", "bob", "bob", "bob"]
    assert [d.accepted for d in result.decisions] == [False, False, False, True, True]
    assert "duplicate" in result.decisions[-1].reason and not any(d.verified for d in result.decisions)


async def test_malformed_signal_from_temporal_cli_is_recorded(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    temporal = script_path("temporal")
    assert temporal
    address = dev_env.client.service_client.config.target_host
    for payload in ('{"comment": "no approver"}', '"just a string"'):
        out = subprocess.run(
            [
                temporal,
                "workflow",
                "signal",
                "--address",
                address,
                "--workflow-id",
                handle.id,
                "--name",
                "approve",
                "--input",
                payload,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    await asyncio.sleep(1)
    status = await handle.query(PromotionWorkflow.status)
    assert [d.accepted for d in status.decisions] == [False, False]
    assert "malformed approve: approver: Field required" in status.decisions[0].reason
    assert "malformed approve" in status.decisions[1].reason
    assert status.phase == "AwaitingApproval"
    await handle.signal(PromotionWorkflow.reject, LenientPayload({"approver": "bob", "comment": "not today"}))
    result = await handle.result()
    assert result.outcome == "rejected" and result.reason == "not today"
    assert deployed_image(world) == "nginx:1.25"  # nothing pinned


async def test_requires_healthy_in_staging(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    publish(dev_worker, world.repository, "2.0.0-rc.1", app_manifests("shop", image="nginx:2"))  # staging skips rcs
    handle = await world.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=world.production, version="2.0.0-rc.1", requested_by="c"),
        id=promotion_workflow_id(world.production, "2.0.0-rc.1"),
        task_queue=dev_worker.temporal.task_queue,
    )
    result = await handle.result()
    assert result.outcome == "refused" and f"not been applied and healthy in {world.staging}" in result.reason
    missing = await world.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=world.production, version="7.7.7", requested_by="c"),
        id=promotion_workflow_id(world.production, "7.7.7"),
        task_queue=dev_worker.temporal.task_queue,
    )
    assert (await missing.result()).outcome == "refused"


async def test_rollback_to_previous_and_to_explicit_version(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    await promote_approved(world)
    refused = await rollback(world, "m", by="mallory")
    assert refused.outcome == "refused" and "not an approver" in refused.reason
    back = await rollback(world, "1", by="bob", reason="latency")
    assert (back.outcome, back.from_version, back.to_version) == ("succeeded", "1.1.0", "1.0.0")
    assert deployed_image(world) == "nginx:1.25"
    assert await holds(world) == ["1.1.0"]
    forward = await rollback(world, "2", by="bob", to_version="1.1.0")  # a rollback never goes forward
    assert forward.outcome == "refused" and "never goes forward" in forward.reason
    assert deployed_image(world) == "nginx:1.25"
    if os.environ.get("FERRY_RECORD_HISTORIES"):
        history = await world.client.get_workflow_handle(f"rollback/{world.production}/1").fetch_history()
        HISTORIES.joinpath("rollback.json").write_text(history.to_json())


async def test_worker_killed_while_waiting_for_approval(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path, task_queue: str
) -> None:
    settings = settings_for(registry, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)
    address = dev_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": address,
        "FERRY_TASK_QUEUE": task_queue,
        "FERRY_REGISTRY_INSECURE": registry.host,
        "FERRY_REGISTRY": registry.host,
        "FERRY_KUBECONFIG": str(kube_server.worker_kubeconfig),
        "FERRY_CACHE_DIR": str(tmp_path / "cache"),
        "FERRY_STATE_DIR": str(tmp_path / "no-stack"),
    }

    def spawn_worker() -> subprocess.Popen[bytes]:
        ready = tmp_path / "ready"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--ready-file", str(ready)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            if ready.exists():
                return proc
            time.sleep(0.1)
        proc.kill()
        raise AssertionError("worker did not start")

    first = spawn_worker()
    try:
        world = await make_world(dev_env.client, settings, kube_server)
        handle = await promote(world)
        await wait_phase(handle, "AwaitingApproval")
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker()
        try:
            await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
            result = await asyncio.wait_for(handle.result(), timeout=90)
            assert result.outcome == "succeeded"
            assert deployed_image(world) == "nginx:1.26"
            await terminate_running(dev_env.client, task_queue)
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()


async def test_expiry_after_deadline_time_skipping(
    time_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path, task_queue: str
) -> None:
    settings = settings_for(registry, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)
    async with build_worker(time_env.client, settings):
        # NB: skipping 25h over a 2s interval would run 45,000 reconciles; an hourly one runs 25.
        world = await make_world(time_env.client, settings, kube_server, timeout="24h", interval="1h")
        handle = await promote(world)
        await wait_phase(handle, "AwaitingApproval")
        await time_env.sleep(25 * 3600)
        result = await handle.result()
        await terminate_running(time_env.client, task_queue)
    assert result.outcome == "expired" and "24h" in result.reason
    assert deployed_image(world) == "nginx:1.25"


async def test_expiry_after_deadline_dev_server(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, timeout="3s")
    handle = await promote(world)
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == "expired" and "3s" in result.reason
    assert deployed_image(world) == "nginx:1.25"


async def test_promotion_overtaken_by_a_newer_pin_reports_superseded(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, requires_staging=False)
    # 1.2.0's rollout never finishes: the promotion stays Pinned (waiting for its health) until the rollback, whatever
    # the machine's speed (with a rollout that finishes, the promotion may rightly succeed first)
    publish(world.settings, world.repository, "1.2.0", hanging_manifests("shop", image="nginx:1.27"))
    handle = await promote(world, version="1.2.0")
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    await wait_phase(handle, "Pinned")
    # an emergency rollback lands while the promotion's pin rolls out
    await world.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=world.production, to_version="1.0.0", requested_by="bob"),
        id=f"rollback/{world.production}/race",
        task_queue=dev_worker.temporal.task_queue,
    )
    result = await handle.result()
    assert result.outcome == "superseded" and "rollback by bob" in result.reason
    assert deployed_image(world) == "nginx:1.25"


async def test_pin_from_a_repository_the_environment_left_is_refused(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    # while the promotion waits, production is re-declared to deploy from another repository
    moved = f"{world.repository}-moved"
    publish(dev_worker, moved, "1.0.0", app_manifests("shop"))
    prd = world.client.get_workflow_handle(f"env/{world.production}")
    spec = (await prd.query(EnvironmentWorkflow.status)).state.spec
    pending = await prd.execute_update(
        EnvironmentWorkflow.update_spec, SpecUpdate(spec=spec.model_copy(update={"repository": moved}), by="carol")
    )
    assert not pending.applied  # a protected field of an approval-required environment: it waits
    await prd.execute_update(EnvironmentWorkflow.approve_spec, LenientPayload({"approver": "bob"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == "refused" and f"deploys from {moved}" in result.reason
    status = await prd.query(EnvironmentWorkflow.status)
    assert status.state.pin is None and "PinRefused" in [e.type for e in status.state.events]
    assert deployed_image(world) == "nginx:1.25"


async def test_requires_healthy_in_is_checked_again_when_the_approval_arrives(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")  # staging was healthy on 1.1.0 when the promotion began
    back = await world.client.execute_workflow(  # ... then staging is rolled back from it (1.1.0 held there)
        RollbackWorkflow.run,
        RollbackInput(environment=world.staging, to_version="1.0.0", requested_by="bob"),
        id=f"rollback/{world.staging}/1.0.0",
        task_queue=dev_worker.temporal.task_queue,
    )
    assert back.outcome == "succeeded"
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == "refused" and f"has failed in {world.staging} since" in result.reason
    assert "checked again when the approval arrived" in result.reason
    assert deployed_image(world) == "nginx:1.25"  # production never moved


async def test_an_approval_sent_while_resolving_gets_the_real_verdict(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """An Update sent the moment the promotion starts waits for the version to be resolved and then answers with
    the verdict: accepted here (it used to answer 'recorded; will be judged' and exit 1)."""
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    answer = await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "alice"}))
    assert answer.accepted and answer.reason == ""
    result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.outcome == "succeeded" and result.approved_by == ["alice"]
    assert [d.accepted for d in result.decisions] == [True]
