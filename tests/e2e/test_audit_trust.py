"""An audit only Ferry can write (issue 25 item 5): what a hostile worker, key, payload, window or lifecycle move
would hide or forge in `ferry audit`, driven through the real Temporal client on the dev server."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
from temporalio import activity
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest, SignalWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from cli.audit import build_timeline
from ferry.approvals import Statement, sign_statement
from ferry.artifacts import FetchManifestInput, Manifest, ResolveTagInput, ResolveTagResult
from ferry.environment import EnvironmentState, EnvironmentStatus, LenientPayload, SpecUpdate
from ferry.promotion import EnvironmentStatusInput, PromotionInput, PromotionResult, promotion_workflow_id
from ferry.reconcile import PlanRequest
from ferry.settings import Settings
from ferry.spec import ApprovalPolicy, EnvironmentSpec
from ferry.sshsig import key_fingerprint
from tests.kit.environments import app_manifests, ferry, publish, start_environment, wait_phase, wait_status
from tests.kit.promotion import make_world, promote
from workers.worker import workflow_runner
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow


async def connect(dev_env: WorkflowEnvironment, identity: str) -> Client:
    return await Client.connect(
        dev_env.client.service_client.config.target_host, identity=identity, data_converter=pydantic_data_converter
    )


def keygen(tmp: Path, name: str) -> tuple[bytes, str]:
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path.read_bytes(), path.with_suffix(".pub").read_text().strip()


def signed_payload(private: bytes, **fields: str) -> dict[str, str]:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    proof = sign_statement(Statement(comment="", expires=expires, **fields), private)  # type: ignore[arg-type]
    return {"approver": fields["approver"], "statement": proof.statement, "signature": proof.signature}


# ------------------------------------------------------------------- 1. a worker that is not Ferry's ---


@dataclass
class Signed:
    """An approval-required environment with signed approvals (alice and bob), healthy on 1.0.0, 1.1.0 released."""

    name: str
    repository: str
    digests: dict[str, str]
    keys: dict[str, tuple[bytes, str]]
    spec: EnvironmentSpec
    env: WorkflowHandle[Any, Any]


async def signed_environment(settings: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp: Path) -> Signed:
    suffix = uuid.uuid4().hex[:8]
    name = f"prd-{suffix}"
    repository = f"{settings.registry.default}/team/trust-{suffix}"
    kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))).create_namespace(
        {"metadata": {"name": name}}
    )
    digests = {
        v: publish(settings, repository, v, app_manifests("shop", image=image), "ci-bot")
        for v, image in (("1.0.0", "nginx:1.25"), ("1.1.0", "nginx:1.26"))
    }
    keys = {who: keygen(tmp, who) for who in ("alice", "bob")}
    spec = EnvironmentSpec.model_validate(
        {
            "name": name,
            "namespace": name,
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "approval": {
                "required": True,
                "approvers": [{"name": who, "key": public} for who, (_, public) in keys.items()],
            },
        }
    )
    env = await start_environment(dev_env.client, settings.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", what="healthy on 1.0.0")
    return Signed(name, repository, digests, keys, spec, env)


def forged_activities(real: Signed, mallory_public: str) -> list[Any]:
    """The attacker's activities for Ferry's own PromotionWorkflow code: the environment's status says alice's
    key is mallory's, the registry answers what the attacker likes."""
    forged = real.spec.model_copy(
        update={
            "approval": ApprovalPolicy.model_validate(
                {"required": True, "approvers": [{"name": "alice", "key": mallory_public}]}
            )
        }
    )

    @activity.defn(name="environment_status")
    async def status(input: EnvironmentStatusInput) -> EnvironmentStatus:
        return EnvironmentStatus(name=forged.name, tracking=forged.tracking, state=EnvironmentState(spec=forged))

    @activity.defn(name="resolve_tag")
    async def tag(input: ResolveTagInput) -> ResolveTagResult:
        return ResolveTagResult(digest=real.digests["1.1.0"])

    @activity.defn(name="fetch_manifest")
    async def manifest(input: FetchManifestInput) -> Manifest:
        return Manifest(
            digest=real.digests["1.1.0"],
            media_type="x",
            config_media_type="x",
            config_digest="x",
            layers=[],
            annotations={},
        )

    return [status, tag, manifest]


async def test_a_promotion_served_by_another_worker_is_excluded_not_a_decision(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """Ferry's own PromotionWorkflow code, on the attacker's task queue and worker, with the attacker's activities:
    it judges a statement signed with mallory's key under alice's name as verified, and records it so."""
    real = await signed_environment(dev_worker, dev_env, kube_server, tmp_path)
    mallory = await connect(dev_env, "mallory-box")
    private, public = keygen(tmp_path, "mallory")
    attacker_queue = f"mallory-{uuid.uuid4().hex[:8]}"
    workflow_id = promotion_workflow_id(real.name, "1.1.0")
    async with Worker(
        mallory,
        task_queue=attacker_queue,
        workflows=[PromotionWorkflow],
        activities=forged_activities(real, public),
        workflow_runner=workflow_runner(),
    ):
        handle = await mallory.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=real.name, version="1.1.0", requested_by="carol"),
            id=workflow_id,
            task_queue=attacker_queue,
        )
        await wait_phase(handle, "AwaitingApproval")
        await handle.signal(
            PromotionWorkflow.approve,
            LenientPayload(
                signed_payload(
                    private,
                    environment=real.name,
                    version="1.1.0",
                    digest=real.digests["1.1.0"],
                    promotion=workflow_id,
                    run=handle.result_run_id or "",
                    decision="approve",
                    approver="alice",
                )
            ),
        )
        await handle.result()  # NB: Ferry's environment re-verified the pin against its own spec and refused it
    audit = await ferry(dev_worker, tmp_path, "audit", real.name, "--since", "1h", "--verify")
    print(audit.stdout, audit.stderr)
    lines = [
        line
        for line in audit.stdout.splitlines()
        if line.split()[1:2] != ["pin"] and workflow_id in line and not line.startswith(" ")
    ]
    assert lines and all("excluded run" in line for line in lines), audit.stdout
    assert f"'{attacker_queue}'" in lines[0] and "client mallory-box" in lines[0]
    assert "approve (signal)" not in audit.stdout and "promotion requested" not in audit.stdout
    assert "verified 0 of 0 signed decision(s); 1 run(s) excluded" in audit.stdout
    await real.env.terminate("test done")


# ---------------------------------------------------- 2. the approver list in force, not the key inside ---


async def test_verify_checks_each_signature_against_the_approvers_in_force_then(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """A promotion starts while bob is an approver; a signed spec change (approved by alice) removes him; bob's
    signed approval still reaches the promotion. `--verify` must not call it verified: bob was not listed then."""
    real = await signed_environment(dev_worker, dev_env, kube_server, tmp_path)
    name, digests, keys, spec, env = real.name, real.digests, real.keys, real.spec, real.env
    handle = await dev_env.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=name, version="1.1.0", requested_by="carol"),
        id=promotion_workflow_id(name, "1.1.0"),
        task_queue=dev_worker.temporal.task_queue,
    )
    await wait_phase(handle, "AwaitingApproval")

    without_bob = EnvironmentSpec.model_validate(
        {
            **spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "approval": {"required": True, "approvers": [{"name": "alice", "key": keys["alice"][1]}]},
        }
    )
    pending = await env.execute_update(EnvironmentWorkflow.update_spec, SpecUpdate(spec=without_bob, by="carol"))
    assert not pending.applied and pending.pending_id
    pending_spec = (await env.query(EnvironmentWorkflow.status)).state.pending_spec
    assert pending_spec is not None
    applied = await env.execute_update(
        EnvironmentWorkflow.approve_spec,
        LenientPayload(
            signed_payload(
                keys["alice"][0],
                environment=name,
                version="spec",
                digest=pending_spec.digest,
                promotion=f"env/{name}",
                run=pending_spec.id,
                decision="approve",
                approver="alice",
            )
        ),
    )
    assert applied.applied

    await handle.signal(
        PromotionWorkflow.approve,
        LenientPayload(
            signed_payload(
                keys["bob"][0],
                environment=name,
                version="1.1.0",
                digest=digests["1.1.0"],
                promotion=handle.id,
                run=handle.result_run_id or "",
                decision="approve",
                approver="bob",
            )
        ),
    )
    result = await dev_env.client.get_workflow_handle(handle.id, result_type=PromotionResult).result()
    assert result.outcome != "succeeded"  # the environment re-verified against its own spec and refused the pin

    audit = await ferry(dev_worker, tmp_path, "audit", name, "--since", "1h", "--verify")
    print(audit.stdout, audit.stderr)
    bob = key_fingerprint(keys["bob"][1])
    assert "approve (signal)" in audit.stdout and f"bob (verified {bob})" in audit.stdout  # what it recorded
    assert audit.returncode == 1, audit.stdout + audit.stderr
    failed = [line for line in audit.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"key {bob} is not listed" in failed[0], failed
    assert "verified 0 of 1 signed decision(s)" in audit.stdout
    await env.terminate("test done")


# ------------------------------------------------------------------------- 3. an undecodable payload ---


async def test_an_undecodable_signal_payload_is_shown_and_the_rest_of_the_timeline_kept(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    env_id = f"env/{world.production}"
    await dev_env.client.workflow_service.signal_workflow_execution(
        SignalWorkflowExecutionRequest(
            namespace=dev_env.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=env_id),
            signal_name="suspend",
            identity="mallory-box",
            request_id=str(uuid.uuid4()),
            input=Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b"{not json")]),
        )
    )
    alice = await connect(dev_env, "alice-desk")
    prd = alice.get_workflow_handle(env_id)
    await prd.signal(EnvironmentWorkflow.suspend, LenientPayload({"by": "alice", "reason": "freeze"}))
    await wait_status(prd, lambda s: s.state.suspended, what="suspended by alice")

    timeline = await build_timeline(world.client, dev_worker.temporal, world.production, dt.timedelta(hours=1))
    undecodable = [e for e in timeline if "(undecodable payload:" in e.details]
    assert len(undecodable) == 1 and undecodable[0].details.endswith("sent by client mallory-box"), undecodable
    suspended = next(e for e in timeline if e.kind == "suspended")  # the rest is there, paired with its sender
    assert suspended.who == "alice" and suspended.details.endswith("sent by client alice-desk"), suspended
    assert any(e.kind == "pinned" or e.kind == "applied" for e in timeline)


# ------------------------------------------------------------------------------------ 4. the window ---


async def test_since_keeps_events_inside_the_window_from_runs_started_before_it(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await asyncio.sleep(1.5)
    cutoff = dt.datetime.now(dt.UTC)
    await asyncio.sleep(1.5)  # NB: Visibility times are whole seconds
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice", "comment": "in the window"}))
    assert (await handle.result()).outcome == "succeeded"
    since = dt.datetime.now(dt.UTC) - cutoff

    timeline = await build_timeline(world.client, dev_worker.temporal, world.production, since)
    kinds = [(e.kind, e.who) for e in timeline]
    print(kinds)
    assert ("approve (signal)", "alice (claimed)") in kinds and ("pinned", "alice") in kinds, kinds
    assert ("promotion succeeded", "alice") in kinds, kinds
    assert ("promotion requested", "carol") not in kinds  # it happened before the window
    assert all(e.at >= cutoff.strftime("%Y-%m-%dT%H:%M:%S") for e in timeline), timeline


# ---------------------------------------------------------------- 5. terminations, resets, replacements ---


async def test_terminations_resets_and_replacement_runs_are_shown_with_their_identity(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    env_id = f"env/{world.production}"
    prd = world.client.get_workflow_handle(env_id)
    spec = (await prd.query(EnvironmentWorkflow.status)).state.spec
    run_id = (await prd.describe()).run_id
    completed = [
        e.event_id
        async for e in prd.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    reset = await dev_env.client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=dev_env.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=env_id, run_id=run_id),
            reason="roll the loop back",
            workflow_task_finish_event_id=completed[0],
            request_id=str(uuid.uuid4()),
            identity="ops-reset",
        )
    )
    await wait_status(
        world.client.get_workflow_handle(env_id, run_id=reset.run_id),
        lambda s: s.state.health.status == "Healthy",
        what="healthy after the reset",
    )
    ops = await connect(dev_env, "ops-terminate")
    await ops.get_workflow_handle(env_id).terminate(reason="decommission")
    intruder = await connect(dev_env, "intruder-laptop")
    await start_environment(intruder, dev_worker.temporal.task_queue, spec)

    for _ in range(40):  # NB: Visibility is eventually consistent
        timeline = await build_timeline(world.client, dev_worker.temporal, world.production, dt.timedelta(hours=1))
        if any(e.kind == "run replaced" for e in timeline):
            break
        await asyncio.sleep(0.5)
    shown = [(e.kind, e.details) for e in timeline if e.kind in ("reset", "terminated", "run replaced")]
    print(shown)
    # NB: the dev server records its own identity on a reset's events, not the caller's (ResetWorkflowExecution's
    # identity field stays out of history): the audit shows what history holds
    assert any(k == "reset" and "roll the loop back" in d and f"from run {run_id}" in d for k, d in shown), shown
    assert any(k == "terminated" and "decommission" in d and "client ops-terminate" in d for k, d in shown), shown
    assert ("run replaced", "a new run replaced the previous one: started by client intruder-laptop") in shown, shown
    await world.client.get_workflow_handle(env_id).terminate("test done")


# ------------------------------------------------------------------ 6. every operator message's sender ---


async def test_every_operator_message_shows_the_identity_that_sent_it(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    env_id = f"env/{world.production}"
    clients = {name: await connect(dev_env, name) for name in ("mallory-box", "carol-cli", "dave-term", "erin-ui")}
    prd = world.client.get_workflow_handle(env_id)
    # NB: the plan first, answered before the cancel request makes the run continue as new
    await clients["erin-ui"].get_workflow_handle(env_id).execute_update(EnvironmentWorkflow.plan, PlanRequest())
    await clients["dave-term"].get_workflow_handle(env_id).signal(EnvironmentWorkflow.reconcile_now, LenientPayload({}))
    await (
        clients["mallory-box"]
        .get_workflow_handle(env_id)
        .signal(EnvironmentWorkflow.suspend, LenientPayload({"by": "cancel request", "reason": "not me"}))
    )
    await wait_status(prd, lambda s: s.state.suspended, what="suspended")
    await clients["carol-cli"].get_workflow_handle(env_id).cancel()
    await wait_status(
        prd, lambda s: any("a cancel request" in e.message for e in s.state.events), what="the cancel request recorded"
    )

    timeline = await build_timeline(world.client, dev_worker.temporal, world.production, dt.timedelta(hours=1))
    for entry in timeline:
        print(entry.at, entry.kind, entry.who, entry.details)
    claimed = next(e for e in timeline if e.kind == "suspended" and "not me" in e.details)
    assert claimed.who == "cancel request (claimed by a sender)" and claimed.details.endswith(
        "sent by client mallory-box"
    ), claimed
    cancelled = next(e for e in timeline if e.kind == "suspended" and e.who == "cancel request")
    assert cancelled.details.endswith("sent by client carol-cli"), cancelled
    for name in clients:
        assert any(e.details.endswith(f"sent by client {name}") for e in timeline), name
    assert any(e.kind == "signal reconcile_now" and e.details.endswith("client dave-term") for e in timeline)
    assert any(e.kind == "update plan" and e.details.endswith("client erin-ui") for e in timeline)
