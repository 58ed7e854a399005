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
from tests.kit.environments import app_manifests, publish, reconcile_now, start_environment, wait_phase, wait_status
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


async def test_an_approval_copied_from_a_refused_promotion_moves_nothing(
        dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path) -> None:
    """Bob's signed approval reaches a promotion after staging failed the release (the promotion refuses: staging
    holds it). Read from that promotion's history and sent in a bare pin, as a promotion's or as a manual one, it
    must not move production: the environment asks the promotion run it names, and that run has ended."""
    from ferry.promotion import PromotionInput, RollbackInput, promotion_workflow_id
    from tests.e2e.test_trust import World, signed, ssh_key
    from workflows.environment import EnvironmentWorkflow
    from workflows.promotion import PromotionWorkflow
    from workflows.rollback import RollbackWorkflow

    client, task_queue = dev_env.client, dev_worker.temporal.task_queue
    suffix = uuid.uuid4().hex[:8]
    repository = f"{dev_worker.registry.default}/team/copied-{suffix}"
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    digests = {"1.0.0": publish(dev_worker, repository, "1.0.0", app_manifests("shop", image="nginx:1.0.0"))}
    key, public = ssh_key(tmp_path, "bob")
    staging_spec = EnvironmentSpec.model_validate({
        "name": f"stg-{suffix}", "namespace": f"stg-{suffix}", "repository": repository, "semver": ">=1.0.0",
        "interval": "2s", "health-timeout": "20s"})
    production_spec = EnvironmentSpec.model_validate({
        "name": f"prd-{suffix}", "namespace": f"prd-{suffix}", "repository": repository, "version": "1.0.0",
        "interval": "2s", "health-timeout": "20s", "approval": {
            "required": True, "approvers": [{"name": "bob", "key": public}],
            "requires-healthy-in": [staging_spec.name]}})
    for spec in (staging_spec, production_spec):
        core.create_namespace({"metadata": {"name": spec.namespace}})
    stg = await start_environment(client, task_queue, staging_spec)
    prd = await start_environment(client, task_queue, production_spec)
    await wait_status(prd, lambda s: s.state.health.status == "Healthy", what="production healthy on 1.0.0")
    await wait_status(stg, lambda s: s.state.health.status == "Healthy", what="staging healthy on 1.0.0")
    digests["1.1.0"] = publish(dev_worker, repository, "1.1.0", app_manifests("shop", image="nginx:1.1.0"))
    await reconcile_now(stg)
    await wait_status(stg, lambda s: bool(s.state.last_known_good and s.state.last_known_good.version == "1.1.0"),
                      timeout=60, what="staging healthy on 1.1.0")
    promotion = await client.start_workflow(
        PromotionWorkflow.run, PromotionInput(environment=production_spec.name, version="1.1.0",
                                              requested_by="carol"),
        id=promotion_workflow_id(production_spec.name, "1.1.0"), task_queue=task_queue)
    await wait_phase(promotion, "AwaitingApproval")
    # staging fails 1.1.0 (an SRE rolls it back): it holds the release
    back = await client.execute_workflow(
        RollbackWorkflow.run, RollbackInput(environment=staging_spec.name, requested_by="bob", reason="5xx"),
        id=f"rollback/{staging_spec.name}/{suffix}", task_queue=task_queue)
    assert back.outcome == "succeeded" and "1.1.0" in (await stg.query(EnvironmentWorkflow.status)).state.holds

    world = World(client, dev_worker, repository, production_spec.name, prd, digests, {"bob": key})
    approval = await signed(world, promotion, "bob")
    await promotion.signal(PromotionWorkflow.approve, approval)
    result = await asyncio.wait_for(promotion.result(), 60)
    assert result.outcome == "refused" and "has failed in" in result.reason, result
    run_id = (await promotion.describe()).run_id

    # NB: a manual pin first: the environment asks whatever kind the sender claims; the approval is then spent
    for kind, reason in (("manual", "has ended"), ("promotion", "already used")):
        await prd.signal(EnvironmentWorkflow.pin, {
            "version": "1.1.0", "digest": digests["1.1.0"], "by": "bob", "kind": kind,
            "request_id": f"{promotion.id}@{run_id}",
            "approvals": [{"statement": approval["statement"], "signature": approval["signature"]}]})
        status = await wait_status(prd, lambda s, reason=reason: any(  # type: ignore[misc]
            e.type == "PinRefused" and reason in e.message for e in s.state.events[-3:]), timeout=60,
            what=f"the copied approval in a {kind} pin refused")
        assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
        assert status.state.pin is None, status.state.pin
    await reconcile_now(prd)
    status = await wait_status(prd, lambda s: s.state.iterations > 0, what="still reconciling")
    assert status.state.last_applied is not None and status.state.last_applied.digest == digests["1.0.0"]
    assert await failed_workflow_tasks(prd) == []
