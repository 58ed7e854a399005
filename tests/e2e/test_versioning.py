"""A rolling upgrade with Worker Versioning on the real dev server: environments running on build A keep reconciling
while build B starts; once B is the deployment's current version each environment moves to B (AUTO_UPGRADE: at its
next workflow task; PINNED: at its next continue-as-new, as workers/versioning.py declares) and never back; no run
has a failed workflow task. A promotion started on A finishes on A (PINNED) and moves an environment running on B.
Real registry and Kubernetes API; the dev server suggests continue-as-new after a few dozen events (dynamic config)
so runs turn over in seconds, not hours."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.environment import EnvironmentSpec, LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.settings import Settings
from tests.e2e.devserver import start_dev_server
from tests.kit.environments import app_manifests, next_iteration, publish, start_environment, wait_phase, wait_status
from tests.kit.stack import settings_for
from workers.versioning import VersionedEnvironmentWorkflow
from workers.worker import build_worker
from workflows.promotion import PromotionWorkflow

SUGGEST_CONTINUE_AS_NEW_AFTER = 60  # events; the server's default is 4096


@pytest.fixture
async def versioned_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(extra_args=[
        "--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW_AFTER}"])
    yield env
    await env.shutdown()


def build_settings(registry: Registry, kube_server: Any, tmp: Path, task_queue: str, deployment: str,
                   build_id: str) -> Settings:
    settings = settings_for(registry, tmp / build_id)
    settings.temporal.task_queue = task_queue
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)
    settings.worker.deployment_name = deployment
    settings.worker.build_id = build_id
    return settings


async def make_current(client: Client, deployment: str, build_id: str, timeout: float = 30) -> None:
    """What `temporal worker deployment set-current-version` does, once the build's pollers have registered it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(namespace=client.namespace, deployment_name=deployment,
                                                         build_id=build_id, identity="test_versioning"))
            return
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def build_of(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """(run id, build id) of the environment's current run."""
    described = await handle.describe()
    info = described.raw_description.workflow_execution_info.versioning_info
    return described.run_id, info.deployment_version.build_id


async def test_a_rolling_upgrade_moves_environments_and_finishes_promotions_where_they_started(
        versioned_server: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path) -> None:
    client = versioned_server.client
    task_queue, deployment = f"ver-{uuid.uuid4()}", f"ferry-{uuid.uuid4().hex[:8]}"
    build_a = build_settings(registry, kube_server, tmp_path, task_queue, deployment, "A")
    build_b = build_settings(registry, kube_server, tmp_path, task_queue, deployment, "B")
    import kubernetes

    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    envs: list[WorkflowHandle[Any, Any]] = []
    async with build_worker(client, build_a):
        await make_current(client, deployment, "A")
        for n in range(2):
            name = f"ver-{uuid.uuid4().hex[:8]}"
            repository = f"{registry.host}/team/{name}"
            for version in ("1.0.0", "1.1.0"):
                publish(build_a, repository, version, app_manifests("app", image=f"nginx:{version}"))
            core.create_namespace({"metadata": {"name": name}})
            spec = EnvironmentSpec.model_validate({  # the first one needs bob's approval to move
                "name": name, "namespace": name, "repository": repository, "version": "1.0.0", "interval": "1s",
                "health-timeout": "20s", "approval": {"required": n == 0, "approvers": ["bob"]}})
            envs.append(await start_environment(client, task_queue, spec))
        for env in envs:
            await wait_status(env, lambda s: s.state.health.status == "Healthy", timeout=60, what="healthy on A")
            assert (await build_of(env))[1] == "A"
        gated = envs[0].id.removeprefix("env/")
        promotion = await client.start_workflow(
            PromotionWorkflow.run, PromotionInput(environment=gated, version="1.1.0", requested_by="carol"),
            id=promotion_workflow_id(gated, "1.1.0"), task_queue=task_queue)
        await wait_phase(promotion, "AwaitingApproval")

        async with build_worker(client, build_b):
            # B polls the same task queue but is not current: the environments keep reconciling on A
            for env in envs:
                await next_iteration(env)
                assert (await build_of(env))[1] == "A"
            await make_current(client, deployment, "B")

            # each environment's current run ends up on B, and it keeps reconciling there
            deadline = time.monotonic() + 120
            while not all([(await build_of(env))[1] == "B" for env in envs]):
                assert time.monotonic() < deadline, "not every environment moved to B within 120 s"
                await asyncio.sleep(0.5)
            for env in envs:
                status = await next_iteration(env)
                assert status.state.health.status == "Healthy" and (await build_of(env))[1] == "B"

            # the promotion started on A finishes on A, and moves the environment that now runs on B
            assert (await build_of(promotion))[1] == "A"
            await promotion.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "bob"}))
            result = await asyncio.wait_for(promotion.result(), timeout=90)
            assert result.outcome == "succeeded", result.reason
            history = await promotion.fetch_history()
            assert {e.workflow_task_completed_event_attributes.deployment_version.build_id for e in history.events
                    if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED} == {"A"}
            moved = await wait_status(envs[0], lambda s: bool(s.state.last_applied and
                                                              s.state.last_applied.version == "1.1.0"),
                                      timeout=60, what="the gated environment on 1.1.0")
            assert moved.state.health.status == "Healthy" and (await build_of(envs[0]))[1] == "B"

            # builds only move forward (A..A then B..B over every workflow task of every run), no run has a failed
            # workflow task, and a pinned environment changes build only at continue-as-new
            pinned = workflow._Definition.must_from_class(VersionedEnvironmentWorkflow).versioning_behavior == \
                VersioningBehavior.PINNED
            for env in envs:
                runs = sorted([wf async for wf in client.list_workflows(f"WorkflowId = '{env.id}'")],
                              key=lambda wf: wf.start_time)
                tasks: list[str] = []
                for wf in runs:
                    run = client.get_workflow_handle(env.id, run_id=wf.run_id)
                    history = await run.fetch_history()
                    # NB: a signal that lands while a continue-as-new task completes fails that task with
                    # UNHANDLED_COMMAND and the server retries it with the signal: Temporal's design, not a build
                    # mismatch (which fails with a nondeterminism cause)
                    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                              and e.workflow_task_failed_event_attributes.cause
                              != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND]
                    assert not failed, f"{env.id} run {wf.run_id}: {failed[0]}"
                    builds = [e.workflow_task_completed_event_attributes.deployment_version.build_id
                              for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
                    assert not pinned or len(set(builds)) == 1, f"{env.id} run {wf.run_id} moved mid-run: {builds}"
                    tasks += builds
                    if wf.run_id != runs[-1].run_id:  # the run's own status, not Visibility's (it may lag)
                        closed = (await run.describe()).status
                        assert closed == WorkflowExecutionStatus.CONTINUED_AS_NEW, (wf.run_id, closed)
                first_b = tasks.index("B")
                assert first_b > 0 and set(tasks[:first_b]) == {"A"} and set(tasks[first_b:]) == {"B"}, tasks
            for env in envs:
                await env.terminate("test finished")


def test_build_id_defaults_to_the_package_version_and_commit(tmp_path: Path, registry: Registry) -> None:
    import importlib.metadata
    import subprocess

    from workers.worker import default_build_id, deployment_config

    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert default_build_id() == f"{importlib.metadata.version('ferry')}+g{commit}"
    settings = settings_for(registry, tmp_path)
    assert deployment_config(settings) is None  # unversioned unless a deployment is named
    settings.worker.deployment_name = "ferry"
    config = deployment_config(settings)
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == ("ferry", default_build_id())
    settings.worker.build_id = "2.0.0"
    config = deployment_config(settings)
    assert config is not None and config.version.build_id == "2.0.0"
