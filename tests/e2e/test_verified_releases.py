"""Environments that declare `verify.publishers` apply only releases signed (cosign's format) by one of those
keys, and the publisher that counts for segregation of duties is the one the verified signature attests.
Real dev server, registry and Kubernetes API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, next_iteration, publish, start_environment, wait_phase, wait_status
from tests.kit.signing import key_pair, sign_release
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow


async def test_only_releases_signed_by_a_listed_publisher_are_applied(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    import kubernetes

    suffix = uuid.uuid4().hex[:8]
    repository = f"{dev_worker.registry.default}/team/signed-{suffix}"
    ci, ci_public = key_pair()
    stranger, _ = key_pair()
    kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))).create_namespace(
        {"metadata": {"name": f"v-{suffix}"}}
    )
    unsigned = publish(dev_worker, repository, "1.0.0", app_manifests("signed"))
    spec = EnvironmentSpec.model_validate(
        {
            "name": f"v-{suffix}",
            "namespace": f"v-{suffix}",
            "repository": repository,
            "semver": ">=1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "verify": {"publishers": [{"name": "ci-main", "key": ci_public}]},
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    status = await wait_status(
        env, lambda s: s.state.blocked.startswith("VerificationFailed"), what="unsigned 1.0.0 refused"
    )
    assert status.state.last_applied is None and "VerificationFailed" in [e.type for e in status.state.events]
    assert "1.0.0" in status.state.blocked and unsigned in status.state.blocked

    sign_release(dev_worker, stranger, repository, unsigned, "ci-main")  # signed, but by a key nobody listed
    status = await next_iteration(env)
    assert status.state.last_applied is None and status.state.blocked.startswith("VerificationFailed")

    sign_release(dev_worker, ci, repository, unsigned, "alice")
    status = await wait_status(env, lambda s: s.state.health.status == "Healthy", what="signed 1.0.0 applied")
    assert status.state.last_applied and status.state.last_applied.digest == unsigned
    assert status.state.verified == {unsigned: "alice"} and status.state.blocked == ""

    # a newer release without a signature is never applied; the environment keeps running the verified one
    newer = publish(dev_worker, repository, "1.1.0", app_manifests("signed", image="nginx:1.26"))
    status = await wait_status(env, lambda s: newer in s.state.blocked, what="unsigned 1.1.0 refused")
    await next_iteration(env)
    status = await env.query(EnvironmentWorkflow.status)
    assert status.state.last_applied and status.state.last_applied.digest == unsigned
    refusals = [e for e in status.state.events if e.type == "VerificationFailed" and e.digest == newer]
    assert len(refusals) == 1  # recorded once, not every interval


async def test_the_verified_publisher_may_not_approve(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """The manifest's annotation says ci-bot; the signature says alice published it: alice may not approve."""
    import kubernetes

    suffix = uuid.uuid4().hex[:8]
    repository = f"{dev_worker.registry.default}/team/sod-{suffix}"
    ci, ci_public = key_pair()
    kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))).create_namespace(
        {"metadata": {"name": f"p-{suffix}"}}
    )
    for version, image in (("1.0.0", "nginx:1.25"), ("1.1.0", "nginx:1.26")):
        digest = publish(dev_worker, repository, version, app_manifests("sod", image=image), publisher="ci-bot")
        sign_release(dev_worker, ci, repository, digest, "alice")
    spec = EnvironmentSpec.model_validate(
        {
            "name": f"p-{suffix}",
            "namespace": f"p-{suffix}",
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "verify": {"publishers": [{"name": "ci-main", "key": ci_public}]},
            "approval": {"required": True, "approvers": ["alice", "bob"], "signed": False},
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", what="production on 1.0.0")
    handle = await dev_env.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=spec.name, version="1.1.0", requested_by="carol"),
        id=promotion_workflow_id(spec.name, "1.1.0"),
        task_queue=dev_worker.temporal.task_queue,
    )
    assert (await wait_phase(handle, "AwaitingApproval")).publisher == "alice"
    try:
        await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "alice"}))
        raise AssertionError("the verified publisher's approval was accepted")
    except WorkflowUpdateFailedError as err:
        assert "alice published this release" in str(getattr(err.cause, "message", err.cause))
    await handle.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "bob"}))
    result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.outcome == "succeeded" and result.publisher == "alice", result.reason
