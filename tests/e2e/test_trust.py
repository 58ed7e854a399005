"""The side doors into production, each closed: bare pins, forward rollbacks, moved tags, unsigned or misbound
approvals, the publisher's own key, replayed statements, and spec changes that switch approval off.
Real dev server, registry, Kubernetes API and `ssh-keygen`; approvals are SSH-signed statements."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from cli.audit import SignedRecord, build_timeline, verify_record
from devstack.procs import script_path
from ferry.approvals import Statement, sign_statement
from ferry.environment import LenientPayload, SpecUpdate
from ferry.promotion import PromotionInput, RollbackInput, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec, env_workflow_id, spec_digest
from tests.kit.environments import (
    app_manifests,
    next_iteration,
    publish,
    record_histories,
    start_environment,
    wait_phase,
    wait_status,
)
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


def ssh_key(tmp: Path, name: str) -> tuple[bytes, str]:
    """A real OpenSSH ed25519 key pair made by ssh-keygen: (private key bytes, public key line)."""
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path.read_bytes(), path.with_suffix(".pub").read_text().strip()


@dataclass
class World:
    client: Client
    settings: Settings
    repository: str
    production: str
    prd: WorkflowHandle[Any, Any]
    digests: dict[str, str]
    keys: dict[str, bytes]


async def make_world(
    client: Client, settings: Settings, kube_server: Any, tmp: Path, publisher: str = "ci-bot", staging: bool = False
) -> World:
    suffix = uuid.uuid4().hex[:8]
    repository = f"{settings.registry.default}/team/vault-{suffix}"
    import kubernetes

    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    keys, approvers = {}, []
    for name in ("alice", "bob"):
        keys[name], public = ssh_key(tmp, name)
        approvers.append({"name": name, "key": public})
    digests = {
        v: publish(settings, repository, v, app_manifests("vault", image=f"nginx:{v}"), publisher)
        for v in ("1.0.0", "1.1.0")
    }
    production = EnvironmentSpec.model_validate(
        {
            "name": f"prd-{suffix}",
            "namespace": f"prd-{suffix}",
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "approval": {"required": True, "approvers": approvers},
        }
    )
    core.create_namespace({"metadata": {"name": production.namespace}})
    prd = await start_environment(client, settings.temporal.task_queue, production)
    await wait_status(prd, lambda s: s.state.health.status == "Healthy", what="production healthy on 1.0.0")
    return World(client, settings, repository, production.name, prd, digests, keys)


async def promote(world: World, version: str = "1.1.0") -> WorkflowHandle[Any, Any]:
    handle = await world.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=world.production, version=version, requested_by="carol"),
        id=promotion_workflow_id(world.production, version),
        task_queue=world.settings.temporal.task_queue,
    )
    await wait_phase(handle, "AwaitingApproval")
    return handle


async def signed(
    world: World,
    handle: WorkflowHandle[Any, Any],
    approver: str,
    *,
    signer: str | None = None,
    decision: str = "approve",
    **overrides: str,
) -> dict[str, str]:
    """A statement for this promotion run, signed with `signer`'s key (default: the approver's own)."""
    status = await handle.query(PromotionWorkflow.status)
    run = (await handle.describe()).run_id
    fields = {
        "environment": status.environment,
        "version": status.version,
        "digest": status.digest,
        "promotion": handle.id,
        "run": run,
        "decision": decision,
        "approver": approver,
        "comment": "ok",
        "expires": (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **overrides,
    }
    proof = sign_statement(Statement.model_validate(fields), world.keys[signer or approver])
    return {"approver": approver, "comment": "ok", "statement": proof.statement, "signature": proof.signature}


async def refused(handle: WorkflowHandle[Any, Any], payload: dict[str, str]) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload(payload))
    cause = err.value.cause
    assert getattr(cause, "type", "") == "DecisionRefused", cause
    return str(getattr(cause, "message", cause))


async def events(world: World, type_: str) -> list[Any]:
    status = await world.prd.query(EnvironmentWorkflow.status)
    return [e for e in status.state.events if e.type == type_]


async def test_a_bare_pin_signal_does_not_move_production(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    for extra in ({}, {"approved_by": ["alice"]}):  # no approval at all; a typed name
        await world.prd.signal(
            EnvironmentWorkflow.pin,
            LenientPayload(
                {
                    "version": "1.1.0",
                    "digest": world.digests["1.1.0"],
                    "by": "alice",
                    "kind": "promotion",
                    "reason": "trust me",
                    **extra,
                }
            ),
        )
    await next_iteration(world.prd)
    status = await world.prd.query(EnvironmentWorkflow.status)
    assert status.state.pin is None and status.state.last_applied and status.state.last_applied.version == "1.0.0"
    reasons = [e.message for e in await events(world, "PinRefused")]
    assert len(reasons) == 2 and all("requires approval" in r and "signed approval" in r for r in reasons), reasons


async def test_approvals_must_be_signed_bound_and_not_the_publishers(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path, publisher="alice")
    handle = await promote(world)
    status = await handle.query(PromotionWorkflow.status)
    assert status.signed and status.approvers == ["alice", "bob"] and status.publisher == "alice"
    assert "requires signed approvals" in await refused(handle, {"approver": "bob"})  # a typed, listed name
    assert "published this release" in await refused(handle, await signed(world, handle, "alice"))
    other_digest = await signed(world, handle, "bob", digest=world.digests["1.0.0"])
    assert f"statement is for digest {world.digests['1.0.0']}" in await refused(handle, other_digest)
    other_run = await signed(world, handle, "bob", run=str(uuid.uuid4()))
    assert "statement is for run" in await refused(handle, other_run)
    other_promotion = await signed(world, handle, "bob", promotion="promote/elsewhere/1.1.0")
    assert "statement is for promotion" in await refused(handle, other_promotion)
    expired = await signed(world, handle, "bob", expires="2020-01-01T00:00:00Z")
    assert "expired" in await refused(handle, expired)
    impostor = await signed(world, handle, "bob", signer="alice")  # alice's key, bob's name
    assert "is listed for alice, but the statement names bob" in await refused(handle, impostor)
    reject_as_approve = await signed(world, handle, "bob", decision="reject")
    assert "statement is for decision reject" in await refused(handle, reject_as_approve)

    good = await signed(world, handle, "bob")
    answer = await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload(good))
    assert answer.accepted
    result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.outcome == "succeeded", result.reason
    decisions = result.decisions
    assert [d.accepted for d in decisions] == [False] * 8 + [True]
    assert decisions[-1].verified and decisions[-1].fingerprint.startswith("SHA256:")
    assert not any(d.verified for d in decisions[:-1])
    history = await handle.fetch_history()
    polls = [
        e
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "environment_status"
    ]
    # read the spec once, and once more to confirm the success the environment signalled back: no status polling
    assert len(polls) == 2
    assert any(e.workflow_execution_signaled_event_attributes.signal_name == "pin_outcome" for e in history.events)
    pin = (await world.prd.query(EnvironmentWorkflow.status)).state.pin
    assert pin is not None and pin.digest == world.digests["1.1.0"]
    assert pin.approved_by == [f"bob ({decisions[-1].fingerprint})"]

    # the same signed approval, replayed in a hand-made pin after a rollback, does not move production again
    back = await world.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=world.production, requested_by="bob"),
        id=f"rollback/{world.production}/back",
        task_queue=dev_worker.temporal.task_queue,
    )
    assert back.outcome == "succeeded" and back.to_version == "1.0.0"
    describe = await handle.describe()
    await world.prd.signal(
        EnvironmentWorkflow.pin,
        LenientPayload(
            {
                "version": "1.1.0",
                "digest": world.digests["1.1.0"],
                "by": "bob",
                "kind": "promotion",
                "request_id": f"{handle.id}@{describe.run_id}",
                "approvals": [{"statement": good["statement"], "signature": good["signature"]}],
            }
        ),
    )
    await next_iteration(world.prd)
    status_after = await world.prd.query(EnvironmentWorkflow.status)
    assert status_after.state.last_applied and status_after.state.last_applied.version == "1.0.0"
    assert "already used" in (await events(world, "PinRefused"))[-1].message
    signed_records: list[SignedRecord] = []  # what `ferry audit --verify` re-checks, from the histories alone
    await build_timeline(world.client, world.settings.temporal, world.production, timedelta(hours=1), signed_records)
    assert [r.record["by"] for r in signed_records] == ["bob"] and verify_record(signed_records[0]) == ""
    rollback = world.client.get_workflow_handle(f"rollback/{world.production}/back")
    await record_histories("signed", {"promotion": handle, "environment": world.prd, "rollback": rollback})


async def test_rollback_only_to_known_good_and_never_forward(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    rc = publish(dev_worker, world.repository, "3.0.0-rc.1", app_manifests("vault", image="nginx:3"))
    publish(dev_worker, world.repository, "0.9.0", app_manifests("vault", image="nginx:0.9"))
    for key, target, reason in (
        ("fwd", "3.0.0-rc.1", "never goes forward"),
        ("fwd2", "1.1.0", "never goes forward"),
        ("old", "0.9.0", "never applied and healthy"),
    ):
        result = await world.client.execute_workflow(
            RollbackWorkflow.run,
            RollbackInput(environment=world.production, to_version=target, requested_by="bob"),
            id=f"rollback/{world.production}/{key}",
            task_queue=dev_worker.temporal.task_queue,
        )
        assert result.outcome == "refused" and reason in result.reason, (target, result.reason)
    # a hand-made rollback pin to a version production never ran is refused by production itself
    await world.prd.signal(
        EnvironmentWorkflow.pin,
        LenientPayload({"version": "3.0.0-rc.1", "digest": rc, "by": "bob", "kind": "rollback"}),
    )
    await next_iteration(world.prd)
    assert "never applied and healthy" in (await events(world, "PinRefused"))[-1].message
    status = await world.prd.query(EnvironmentWorkflow.status)
    assert status.state.last_applied and status.state.last_applied.version == "1.0.0"


async def test_a_re_pushed_tag_is_refused_and_the_environment_keeps_running(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    first = world.digests["1.0.0"]
    moved = publish(dev_worker, world.repository, "1.0.0", app_manifests("vault", image="evil:1"))  # same tag
    assert moved != first
    await next_iteration(world.prd)
    status = await next_iteration(world.prd)
    assert status.state.last_applied and status.state.last_applied.digest == first
    assert status.state.blocked.startswith("TagMoved") and moved in status.state.blocked
    tag_moved = await events(world, "TagMoved")
    assert len(tag_moved) == 1 and tag_moved[0].objects["digests"] == [first, moved]  # recorded once
    assert status.state.tags["1.0.0"] == first


async def test_a_spec_change_switching_approval_off_waits_for_a_signed_approval(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path)
    spec = (await world.prd.query(EnvironmentWorkflow.status)).state.spec
    open_door = spec.model_copy(update={"approval": spec.approval.model_copy(update={"required": False})})
    result = await world.prd.execute_update(EnvironmentWorkflow.update_spec, SpecUpdate(spec=open_door, by="mallory"))
    assert not result.applied and result.changes == ["approval.required: true -> false"] and result.pending_id
    status = await world.prd.query(EnvironmentWorkflow.status)
    assert status.state.spec.approval.required and status.state.pending_spec is not None
    pending = status.state.pending_spec
    assert "mallory" in (await events(world, "SpecChangePending"))[-1].message

    with pytest.raises(WorkflowUpdateFailedError):  # a typed name is not an approval
        await world.prd.execute_update(EnvironmentWorkflow.approve_spec, LenientPayload({"approver": "bob"}))
    statement = Statement(
        environment=world.production,
        version="spec",
        digest=pending.digest,
        promotion=env_workflow_id(world.production),
        run=pending.id,
        decision="approve",
        approver="bob",
        comment="agreed in the change review",
        expires=(datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    proof = sign_statement(statement, world.keys["bob"])
    done = await world.prd.execute_update(
        EnvironmentWorkflow.approve_spec, LenientPayload({"statement": proof.statement, "signature": proof.signature})
    )
    now = (await world.prd.query(EnvironmentWorkflow.status)).state.spec
    assert done.applied and not now.approval.required and done.spec_digest == spec_digest(now)
    updated = (await events(world, "SpecUpdated"))[-1]
    assert "by mallory" in updated.message and "approved by bob (SHA256:" in updated.message
    assert updated.objects["changes"] == ["approval.required: true -> false"]

    # an unprotected change applies at once and is recorded with its sender and diff
    slower = now.model_copy(update={"interval": "3s"})
    quick = await world.prd.execute_update(EnvironmentWorkflow.update_spec, SpecUpdate(spec=slower, by="carol"))
    assert quick.applied and quick.changes == ['interval: "2s" -> "3s"']
    await record_histories("spec-approval", {"environment": world.prd})


async def test_a_refused_update_fails_through_the_temporal_cli(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """The publisher's own signed approval, sent with the real `temporal workflow update execute`: the CLI exits
    non-zero with the reason, and the history keeps the refused decision."""
    world = await make_world(dev_env.client, dev_worker, kube_server, tmp_path, publisher="alice")
    handle = await promote(world)
    import json

    payload = json.dumps(await signed(world, handle, "alice"))
    temporal = script_path("temporal")
    assert temporal
    # NB: in a thread: the worker under test shares this event loop and must answer the update meanwhile
    out = await asyncio.to_thread(
        subprocess.run,
        [
            temporal,
            "workflow",
            "update",
            "execute",
            "--address",
            dev_env.client.service_client.config.target_host,
            "--workflow-id",
            handle.id,
            "--name",
            "approve_update",
            "--input",
            payload,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "published this release" in out.stdout + out.stderr
    decisions = (await handle.query(PromotionWorkflow.status)).decisions
    assert len(decisions) == 1 and not decisions[0].accepted and decisions[0].via == "update"
    history = await handle.fetch_history()
    assert any(
        e.workflow_properties_modified_event_attributes.upserted_memo.fields.get("ferry_decision")
        for e in history.events
    )
