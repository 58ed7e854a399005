"""The audit timeline of a scripted scenario, from Temporal histories alone, matches what happened."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment

from cli.audit import build_timeline
from cli.release import prepare_release, run_release
from ferry.environment import LenientPayload
from ferry.promotion import RollbackInput
from ferry.settings import Settings
from tests.kit.environments import app_manifests, wait_phase, wait_status
from tests.kit.promotion import make_world, promote
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


async def test_audit_timeline_matches_scenario(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    # 1. CI releases 1.2.0 through the real ReleaseWorkflow
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "app.yaml").write_text(yaml.safe_dump_all(app_manifests("shop", image="nginx:1.27")))
    args = argparse.Namespace(
        dir=str(bundle),
        repository=world.repository,
        version="1.2.0",
        revision="main@sha1:abc123",
        source=None,
        published_by="ci-bot",
        timeout="2m",
    )
    input, expected, _ = prepare_release(args, dev_worker)
    await run_release(input, expected, dev_worker)
    stg = world.client.get_workflow_handle(f"env/{world.staging}")
    await wait_status(
        stg,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.version == "1.2.0",
        what="staging healthy on 1.2.0",
    )
    # 2. promotion with a refused approval, then an accepted one
    handle = await promote(world, "1.2.0", by="carol")
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "mallory", "comment": "me too"}))
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice", "comment": "ship it"}))
    promoted = await handle.result()
    assert promoted.outcome == "succeeded", promoted.reason
    # 3. a hand edit in production, reverted
    world.apps.patch_namespaced_deployment(
        "shop",
        world.production_ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:by-hand"}]}}}},
        field_manager="kubectl-edit",
    )
    prd = world.client.get_workflow_handle(f"env/{world.production}")
    await prd.signal("reconcile_now", LenientPayload({}))
    await wait_status(prd, lambda s: s.state.last_drift is not None, what="drift corrected")
    # 4. an SRE rolls back
    back = await world.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=world.production, requested_by="bob", reason="errors"),
        id=f"rollback/{world.production}/audit",
        task_queue=dev_worker.temporal.task_queue,
    )
    assert back.outcome == "succeeded"

    timeline = await build_timeline(world.client, dev_worker.temporal, world.production, dt.timedelta(hours=1))
    kinds = [(e.kind, e.who) for e in timeline]
    expected_order = [
        ("release published", "ci-bot"),
        ("promotion requested", "carol"),
        ("approve (signal)", "mallory (claimed)"),
        ("approve (signal)", "alice (claimed)"),
        ("pinned", "alice"),
        ("promotion succeeded", "alice"),
        ("drift corrected", ""),
        ("rollback requested", "bob"),
        ("pinned", "bob"),
        ("rollback succeeded", "bob"),
    ]
    positions = []
    for item in expected_order:
        start = positions[-1] + 1 if positions else 0
        assert item in kinds[start:], f"{item} missing after position {start} in {kinds}"
        positions.append(kinds.index(item, start))
    refused = timeline[positions[2]]
    assert "REFUSED" in refused.details and "not an approver" in refused.details
    # the sending client's identity, as Temporal recorded it, stands next to the claimed approver
    assert f"sent by client {world.client.identity}" in refused.details
    release = timeline[positions[0]]
    assert "main@sha1:abc123" in release.details and "sha256:" in release.details
    drift = timeline[positions[6]]
    assert "nginx" not in drift.details and f"Deployment/{world.production_ns}/shop" in drift.details
    assert all(e.url.startswith(dev_worker.temporal.ui_url) for e in timeline)
    assert not any(e.subject == world.staging for e in timeline)  # another environment's events stay out
    shutil.rmtree(bundle)


async def test_audit_names_the_client_of_each_decision_and_operator_event(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """Bob approves twice from two clients, then alice rejects from a third: each decision is paired with the
    client that sent it (not by order across decisions), and pins, suspends and spec changes show their sender."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from ferry.environment import SpecUpdate
    from workflows.environment import EnvironmentWorkflow

    world = await make_world(dev_env.client, dev_worker, kube_server)
    target = dev_env.client.service_client.config.target_host
    clients = {
        name: await Client.connect(target, identity=name, data_converter=pydantic_data_converter)
        for name in ("bob-laptop", "bob-laptop-again", "alice-desk")
    }
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    for client_name, action, who in (
        ("bob-laptop", "approve", "bob"),
        ("bob-laptop-again", "approve", "bob"),
        ("alice-desk", "reject", "alice"),
    ):
        await clients[client_name].get_workflow_handle(handle.id).signal(action, LenientPayload({"approver": who}))
    assert (await handle.result()).outcome == "succeeded"
    prd = clients["alice-desk"].get_workflow_handle(f"env/{world.production}")
    await prd.signal(EnvironmentWorkflow.suspend, LenientPayload({"by": "alice", "reason": "freeze"}))
    spec = (await prd.query(EnvironmentWorkflow.status)).state.spec
    await (
        clients["bob-laptop"]
        .get_workflow_handle(prd.id)
        .execute_update(  # NB: timeout is not a protected field
            EnvironmentWorkflow.update_spec, SpecUpdate(spec=spec.model_copy(update={"timeout": "7m"}), by="bob")
        )
    )
    await wait_status(prd, lambda s: s.state.suspended, what="suspended")

    timeline = await build_timeline(world.client, dev_worker.temporal, world.production, dt.timedelta(hours=1))
    decisions = [
        (e.kind, e.who, e.details.rsplit("sent by ", 1)[-1])
        for e in timeline
        if e.kind.startswith(("approve", "reject"))
    ]
    assert decisions == [
        ("approve (signal)", "bob (claimed)", "client bob-laptop"),
        ("approve (signal)", "bob (claimed)", "client bob-laptop-again"),
        ("reject (signal)", "alice (claimed)", "client alice-desk"),
    ], decisions
    assert "duplicate" in next(e for e in timeline if "bob-laptop-again" in e.details).details
    pinned = next(e for e in timeline if e.kind == "pinned")
    assert pinned.details.endswith(f"sent by workflow {handle.id}")  # the promotion itself signalled the pin
    suspended = next(e for e in timeline if e.kind == "suspended")
    assert suspended.details.endswith("sent by client alice-desk")
    spec_updated = [e for e in timeline if e.kind == "spec updated"][-1]
    assert "by bob" in spec_updated.details and spec_updated.details.endswith("sent by client bob-laptop")
