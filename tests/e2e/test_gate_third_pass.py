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
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
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
    return EnvironmentSpec.model_validate(
        {
            "name": name,
            "repository": repository,
            "namespace": name,
            "interval": "2s",
            "health-timeout": "20s",
            "version": "1.0.0",
            **spec,
        }
    ), digest


async def test_a_pin_naming_a_malformed_run_id_is_refused_and_the_environment_keeps_going(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    spec, digest = _world(dev_worker, kube_server, approval={"required": True, "approvers": ["alice"]})
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    for request_id in ("x@y", "@" + str(uuid.uuid4()), "promote/p/1.1.0@not-a-uuid"):
        await handle.signal("pin", {"version": "1.0.0", "digest": digest, "by": "mallory", "request_id": request_id})
    status = await wait_status(
        handle,
        lambda s: len([e for e in s.state.events if e.type == "PinRefused"]) == 3,
        what="three pins refused on the record",
    )
    before = status.state.iterations
    await reconcile_now(handle)
    await wait_status(handle, lambda s: s.state.iterations > before, what="the loop still iterating")
    assert await failed_workflow_tasks(handle) == []


@pytest.fixture
async def limited_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(
        extra_args=[
            "--dynamic-config-value",
            f"limit.historySize.error={SERVER_HISTORY_LIMIT}",
            "--dynamic-config-value",
            f"limit.historySize.warn={SERVER_HISTORY_LIMIT // 2}",
        ]
    )
    yield env
    await env.shutdown()


async def test_a_flood_of_large_signals_never_ends_the_run(
    limited_server: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
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
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    from ferry.promotion import RollbackInput
    from workflows.rollback import RollbackWorkflow

    spec, first = _world(dev_worker, kube_server, approval={"required": True, "approvers": ["alice"]})
    spec = spec.model_copy(update={"version": None, "semver": ">=1.0.0"})
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(
        handle,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == first,
        what="1.0.0 healthy",
    )
    newer = publish(dev_worker, spec.repository, "2.0.0", app_manifests("web", "nginx:1.26"))
    await reconcile_now(handle)
    await wait_status(
        handle,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == newer,
        timeout=60,
        what="2.0.0 healthy",
    )
    result = await dev_env.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=spec.name, to_version="1.0.0", requested_by="alice", reason="incident"),
        id=f"rollback/{spec.name}/{uuid.uuid4().hex[:6]}",
        task_queue=dev_worker.temporal.task_queue,
    )
    assert result.outcome == "succeeded", result.reason
    # a bare pin: the held 2.0.0's digest, labelled as an old version, as a rollback (no approval needed for those)
    await handle.signal(
        "pin", {"version": "0.0.1", "digest": newer, "by": "mallory", "kind": "rollback", "reason": "roll back"}
    )
    status = await wait_status(
        handle,
        lambda s: any(e.type == "PinRefused" and e.by == "mallory" for e in s.state.events),
        what="the relabelled pin refused",
    )
    refusal = next(e for e in status.state.events if e.type == "PinRefused" and e.by == "mallory")
    assert "is release 2.0.0 here, not 0.0.1" in refusal.message
    assert status.state.pin is not None and status.state.pin.digest == first
    # the names Ferry records for itself are not a sender's to claim
    await handle.signal("suspend", {"by": "cancel request", "reason": "hiding"})
    status = await wait_status(handle, lambda s: s.state.suspended, what="suspended")
    assert status.state.events[-1].by == "cancel request (claimed by a sender)"


async def test_an_approval_copied_from_a_refused_promotion_moves_nothing(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
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
    staging_spec = EnvironmentSpec.model_validate(
        {
            "name": f"stg-{suffix}",
            "namespace": f"stg-{suffix}",
            "repository": repository,
            "semver": ">=1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
        }
    )
    production_spec = EnvironmentSpec.model_validate(
        {
            "name": f"prd-{suffix}",
            "namespace": f"prd-{suffix}",
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "approval": {
                "required": True,
                "approvers": [{"name": "bob", "key": public}],
                "requires-healthy-in": [staging_spec.name],
            },
        }
    )
    for spec in (staging_spec, production_spec):
        core.create_namespace({"metadata": {"name": spec.namespace}})
    stg = await start_environment(client, task_queue, staging_spec)
    prd = await start_environment(client, task_queue, production_spec)
    await wait_status(prd, lambda s: s.state.health.status == "Healthy", what="production healthy on 1.0.0")
    await wait_status(stg, lambda s: s.state.health.status == "Healthy", what="staging healthy on 1.0.0")
    digests["1.1.0"] = publish(dev_worker, repository, "1.1.0", app_manifests("shop", image="nginx:1.1.0"))
    await reconcile_now(stg)
    await wait_status(
        stg,
        lambda s: bool(s.state.last_known_good and s.state.last_known_good.version == "1.1.0"),
        timeout=60,
        what="staging healthy on 1.1.0",
    )
    promotion = await client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=production_spec.name, version="1.1.0", requested_by="carol"),
        id=promotion_workflow_id(production_spec.name, "1.1.0"),
        task_queue=task_queue,
    )
    await wait_phase(promotion, "AwaitingApproval")
    # staging fails 1.1.0 (an SRE rolls it back): it holds the release
    back = await client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=staging_spec.name, requested_by="bob", reason="5xx"),
        id=f"rollback/{staging_spec.name}/{suffix}",
        task_queue=task_queue,
    )
    assert back.outcome == "succeeded" and "1.1.0" in (await stg.query(EnvironmentWorkflow.status)).state.holds

    world = World(client, dev_worker, repository, production_spec.name, prd, digests, {"bob": key})
    approval = await signed(world, promotion, "bob")
    await promotion.signal(PromotionWorkflow.approve, approval)
    result = await asyncio.wait_for(promotion.result(), 60)
    assert result.outcome == "refused" and "has failed in" in result.reason, result
    run_id = (await promotion.describe()).run_id

    # NB: a manual pin first: the environment asks whatever kind the sender claims; the approval is then spent
    for kind, reason in (("manual", "has ended"), ("promotion", "already used")):
        await prd.signal(
            EnvironmentWorkflow.pin,
            {
                "version": "1.1.0",
                "digest": digests["1.1.0"],
                "by": "bob",
                "kind": kind,
                "request_id": f"{promotion.id}@{run_id}",
                "approvals": [{"statement": approval["statement"], "signature": approval["signature"]}],
            },
        )
        status = await wait_status(
            prd,
            lambda s, reason=reason: any(  # type: ignore[misc]
                e.type == "PinRefused" and reason in e.message for e in s.state.events[-3:]
            ),
            timeout=60,
            what=f"the copied approval in a {kind} pin refused",
        )
        assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
        assert status.state.pin is None, status.state.pin
    await reconcile_now(prd)
    status = await wait_status(prd, lambda s: s.state.iterations > 0, what="still reconciling")
    assert status.state.last_applied is not None and status.state.last_applied.digest == digests["1.0.0"]
    assert await failed_workflow_tasks(prd) == []


async def test_a_forged_success_answer_does_not_end_a_promotion(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """Anyone may signal pin_outcome, and its request id is in history: a forged "succeeded" for a release that
    never becomes healthy is refused on the record (memo ferry_outcome_refused) and the promotion goes on to the
    environment's real answer (older code reported "succeeded: applied and healthy" at once)."""
    from ferry.environment import LenientPayload
    from ferry.names import Memo
    from tests.kit.environments import hanging_manifests, wait_phase
    from tests.kit.promotion import make_world, promote
    from workflows.promotion import PromotionWorkflow

    world = await make_world(dev_env.client, dev_worker, kube_server, requires_staging=False)
    publish(dev_worker, world.repository, "1.2.0", hanging_manifests("shop", "nginx:1.27"))
    handle = await promote(world, "1.2.0")
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    await wait_phase(handle, "Pinned")
    run_id = (await handle.describe()).run_id
    await handle.signal(
        "pin_outcome", {"request_id": f"{handle.id}@{run_id}", "outcome": "succeeded", "reason": "applied and healthy"}
    )

    async def refused_memo() -> Any:
        return (await (await handle.describe()).memo()).get(Memo.OUTCOME_REFUSED)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (memo := await refused_memo()) is None:
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING, await handle.result()
        assert loop.time() < deadline, "the forged answer was neither taken nor refused"
        await asyncio.sleep(0.3)
    assert "does not show" in memo["reason"], memo
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "failed", result  # the environment's own answer: 1.2.0 never became healthy


async def test_a_start_over_production_keeps_its_record_and_its_spec(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """Production has moved on a signed approval and been rolled back (1.1.0 held). Anyone allowed to start
    workflows starts env/<production> again with TerminateExisting and a hand-written state: approval off, a pin to
    the held 1.1.0, no holds, no used approvals. The new run recovers the last run's record from its memo: the spec
    in force stays (the start's becomes a pending change that waits for a signed approval), the hold and the used
    approval stay, and production stays on 1.0.0; the old approval replayed in a pin is refused as used."""
    from temporalio.common import WorkflowIDConflictPolicy

    from ferry.environment import EnvironmentInput, EnvironmentState, LenientPayload, Pin
    from ferry.promotion import RollbackInput
    from tests.e2e.test_trust import make_world, promote, signed
    from workflows.environment import EnvironmentWorkflow
    from workflows.promotion import PromotionWorkflow
    from workflows.rollback import RollbackWorkflow

    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    promotion = await promote(world)
    approval = await signed(world, promotion, "bob")
    await promotion.execute_update(PromotionWorkflow.approve_update, LenientPayload(approval))
    assert (await asyncio.wait_for(promotion.result(), 90)).outcome == "succeeded"
    request_id = f"{promotion.id}@{(await promotion.describe()).run_id}"
    back = await world.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=world.production, requested_by="bob"),
        id=f"rollback/{world.production}/start-over",
        task_queue=dev_worker.temporal.task_queue,
    )
    assert back.outcome == "succeeded"
    before = (await world.prd.query(EnvironmentWorkflow.status)).state
    assert "1.1.0" in before.holds and request_id in before.consumed_approvals

    spec = before.spec.model_copy(
        update={
            "approval": before.spec.approval.model_copy(update={"required": False, "approvers": []}),
            "version": "1.1.0",
        }
    )
    forged = EnvironmentState(
        spec=spec,
        pin=Pin(version="1.1.0", digest=world.digests["1.1.0"], by="mallory", kind="manual", at="2026-12-07T00:00:00Z"),
    )
    replaced = await world.client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=forged),
        id=world.prd.id,
        task_queue=dev_worker.temporal.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    status = await wait_status(replaced, lambda s: s.state.iterations >= 2, timeout=60, what="the new run iterating")
    state = status.state
    recovered = [e for e in state.events if e.type == "RecordRecovered"]
    assert recovered and "TERMINATED" in recovered[0].message, [e.message for e in state.events]
    assert state.spec.approval.required and state.spec.approval.names == ["alice", "bob"]
    assert state.pending_spec is not None and state.pending_spec.spec.version == "1.1.0"
    assert any(c.startswith("approval") for c in state.pending_spec.changes), state.pending_spec.changes
    assert "1.1.0" in state.holds and request_id in state.consumed_approvals
    assert state.last_applied is not None and state.last_applied.digest == world.digests["1.0.0"]
    assert state.pin is None or state.pin.digest == world.digests["1.0.0"], state.pin

    await replaced.signal(
        EnvironmentWorkflow.pin,
        LenientPayload(
            {
                "version": "1.1.0",
                "digest": world.digests["1.1.0"],
                "by": "bob",
                "kind": "promotion",
                "request_id": request_id,
                "approvals": [{"statement": approval["statement"], "signature": approval["signature"]}],
            }
        ),
    )
    status = await wait_status(
        replaced,
        lambda s: any(e.type == "PinRefused" and "already used" in e.message for e in s.state.events),
        what="the replay refused",
    )
    assert status.state.last_applied is not None and status.state.last_applied.digest == world.digests["1.0.0"]
    assert await failed_workflow_tasks(replaced) == []


async def test_decoy_runs_neither_hide_production_s_record_nor_forge_one(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """Two decoys started over production with TerminateExisting: a run of another type on another task queue, and
    an EnvironmentWorkflow no worker runs, whose start memo carries a forged record (approval off). Then a real
    start with a hand-written state. The new run passes over both decoys and recovers the real last run's record
    (its approvers, its used approval). An environment whose only earlier run is one of Ferry's that never ran
    starts suspended: what it held cannot be told."""
    from temporalio.common import WorkflowIDConflictPolicy

    from ferry.environment import EnvironmentInput, EnvironmentState, LenientPayload
    from ferry.names import Memo
    from tests.e2e.test_trust import make_world, promote, signed
    from workflows.environment import EnvironmentWorkflow
    from workflows.promotion import PromotionWorkflow

    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    promotion = await promote(world)
    await promotion.execute_update(
        PromotionWorkflow.approve_update, LenientPayload(await signed(world, promotion, "bob"))
    )
    assert (await asyncio.wait_for(promotion.result(), 90)).outcome == "succeeded"
    request_id = f"{promotion.id}@{(await promotion.describe()).run_id}"
    before = (await world.prd.query(EnvironmentWorkflow.status)).state
    before_run = (await world.prd.describe()).run_id
    assert request_id in before.consumed_approvals
    open_spec = before.spec.model_copy(
        update={"approval": before.spec.approval.model_copy(update={"required": False, "approvers": []})}
    )
    forged_record = {
        "spec": open_spec.model_dump(mode="json", by_alias=True),
        "holds": [],
        "good_history": [],
        "tags": {},
        "consumed_approvals": [],
    }
    nowhere = f"nowhere-{uuid.uuid4().hex[:8]}"
    terminate = WorkflowIDConflictPolicy.TERMINATE_EXISTING
    await world.client.start_workflow("NotFerry", id=world.prd.id, task_queue=nowhere, id_conflict_policy=terminate)
    await world.client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=EnvironmentState(spec=open_spec)),
        id=world.prd.id,
        task_queue=nowhere,
        id_conflict_policy=terminate,
        memo={Memo.RECORD: forged_record},
    )
    replaced = await world.client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=EnvironmentState(spec=open_spec)),
        id=world.prd.id,
        task_queue=dev_worker.temporal.task_queue,
        id_conflict_policy=terminate,
    )
    status = await wait_status(
        replaced,
        lambda s: any(e.type == "RecordRecovered" for e in s.state.events),
        timeout=60,
        what="the record recovered",
    )
    recovered = next(e for e in status.state.events if e.type == "RecordRecovered")
    assert f"replaced run {before_run}" in recovered.message, recovered.message  # the real one, past both decoys
    assert status.state.spec.approval.required and status.state.pending_spec is not None
    assert request_id in status.state.consumed_approvals and not status.state.suspended

    # a run of Ferry's own type on Ferry's queue that never ran (its first task delayed, then terminated)
    import datetime as dt

    decoyed = f"env/decoyed-{uuid.uuid4().hex[:8]}"
    never = await world.client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(
            state=EnvironmentState(spec=open_spec.model_copy(update={"name": decoyed.removeprefix("env/")}))
        ),
        id=decoyed,
        task_queue=dev_worker.temporal.task_queue,
        start_delay=dt.timedelta(hours=1),
    )
    await never.terminate("a decoy")
    lone = await world.client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(
            state=EnvironmentState(spec=open_spec.model_copy(update={"name": decoyed.removeprefix("env/")}))
        ),
        id=decoyed,
        task_queue=dev_worker.temporal.task_queue,
        id_conflict_policy=terminate,
    )
    status = await wait_status(lone, lambda s: s.state.suspended, timeout=60, what="started suspended")
    assert any("cannot be told" in e.message for e in status.state.events if e.type == "Suspended")
    await lone.terminate("test done")


async def test_a_pin_cannot_fill_the_holds_with_versions_it_does_not_roll_back_from(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """A rollback pin without approval to the known-good 1.0.0 is accepted, but its `hold` is taken only for the
    version it rolls back from (the applied one): 120 such pins naming invented versions would otherwise push the
    real holds out of the capped list."""
    from workflows import policies

    spec, digest = _world(dev_worker, kube_server, approval={"required": True, "approvers": ["alice"]})
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    for i in range(policies.MAX_HOLDS + 20):
        await handle.signal(
            "pin", {"version": "1.0.0", "digest": digest, "by": "mallory", "kind": "rollback", "hold": f"9.9.{i}"}
        )
    status = await wait_status(
        handle,
        lambda s: len([e for e in s.state.events if e.type == "Pinned"]) >= 20,
        timeout=60,
        what="the pins handled",
    )
    assert [h for h in status.state.holds if h.startswith("9.9.")] == [], status.state.holds[:5]
    assert await failed_workflow_tasks(handle) == []
