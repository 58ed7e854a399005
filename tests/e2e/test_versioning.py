"""Rolling upgrades with Worker Versioning on the real dev server, real registry and Kubernetes API.

The first test runs build A and build B as separate `ferry worker` processes, as docker-compose.yml and
docs/upgrades.md run them: B starts beside A, `ferry upgrade drain --to B` makes it current and wakes every
environment (idle ones too: a 1-hour interval, so only the wake moves them) and the alert router, each of which
continues as new onto B; a promotion started on A finishes on A (`ferry upgrade status --build A` counts it until
then); A's workers are stopped, and B applies the next release, answers every status query and routes
notifications. Nothing forces an early continue-as-new.

The second runs both builds in this process with the dev server suggesting continue-as-new after a few dozen events
(dynamic config): each run's workflow tasks stay on one build, builds only move forward, no task fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
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

from devstack.kube.session import KubeServer
from devstack.registry import Registry
from ferry.alert_router import ALERT_ROUTER_ID, AlertRouterInput, AlertRouterState
from ferry.alerts import Notification
from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.e2e.devserver import start_dev_server
from tests.kit.environments import (
    app_manifests,
    config_map,
    ferry,
    next_iteration,
    publish,
    reconcile_now,
    start_environment,
    wait_phase,
    wait_status,
)
from tests.kit.processes import Workers, build_env, eventually, worker_env
from tests.kit.stack import settings_for
from workers.versioning import VersionedEnvironmentWorkflow
from workers.worker import build_worker
from workflows.promotion import PromotionWorkflow

SUGGEST_CONTINUE_AS_NEW_AFTER = 60  # events; the server's default is 4096
IDLE = "1h"  # every environment's interval in the drain test: within it, only the drain's wake moves one
TOLERATED_TASK_FAILURES = (  # a signal landing while a continue-as-new task completes: retried with the signal
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
)


@pytest.fixture
async def own_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this test's own: the alert router's id is one per namespace."""
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
async def versioned_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server(
        extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW_AFTER}",
        ]
    )
    yield env
    await env.shutdown()


def build_settings(
    registry: Registry, kube_server: Any, tmp: Path, task_queue: str, deployment: str, build_id: str
) -> Settings:
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
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace,
                    deployment_name=deployment,
                    build_id=build_id,
                    identity="test_versioning",
                )
            )
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


async def run_builds(client: Client, workflow_id: str) -> list[list[str]]:
    """The build of every completed workflow task, run by run (oldest first); fails on a workflow task that failed."""
    runs = sorted(
        [wf async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'")], key=lambda wf: wf.start_time
    )
    builds = []
    for wf in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=wf.run_id).fetch_history()
        failed = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            and e.workflow_task_failed_event_attributes.cause not in TOLERATED_TASK_FAILURES
        ]
        assert not failed, f"{workflow_id} run {wf.run_id}: {failed[0]}"
        builds.append(
            [
                e.workflow_task_completed_event_attributes.deployment_version.build_id
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            ]
        )
    return builds


async def test_build_a_drains_into_build_b_across_worker_processes_and_b_carries_on_alone(
    own_server: WorkflowEnvironment, registry: Registry, kube_server: KubeServer, tmp_path: Path
) -> None:
    client = own_server.client
    address = client.service_client.config.target_host
    task_queue, deployment = f"drain-{uuid.uuid4().hex[:8]}", f"ferry-{uuid.uuid4().hex[:8]}"
    settings = settings_for(registry, tmp_path)
    settings.temporal.address, settings.temporal.task_queue = address, task_queue
    workers = Workers(tmp_path / "workers", worker_env(address, registry, kube_server, task_queue, tmp_path))
    workers.root.mkdir()
    import kubernetes

    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))

    async def upgrade(*args: str) -> subprocess.CompletedProcess[str]:
        return await ferry(settings, tmp_path, "upgrade", *args, "--deployment", deployment)

    envs: dict[str, WorkflowHandle[Any, Any]] = {}
    try:
        workers.start("worker-a", env=build_env(deployment, "A"))
        first = await upgrade("drain", "--to", "A", "--timeout", "60s")
        assert first.returncode == 0, first.stdout + first.stderr
        router = await client.start_workflow(
            "AlertRouterWorkflow", AlertRouterInput(), id=ALERT_ROUTER_ID, task_queue=task_queue
        )
        repositories = {}
        for kind in ("idle", "idle", "gated"):
            name = f"{kind}-{uuid.uuid4().hex[:8]}"
            repositories[name] = f"{registry.host}/drain/{name}"
            publish(settings, repositories[name], "1.0.0", config_map("1.0.0"))
            core.create_namespace({"metadata": {"name": name}})
            tracks = (
                {"version": "1.0.0", "approval": {"required": True, "approvers": ["bob"]}}
                if kind == "gated"
                else {"semver": ">=1.0.0"}
            )
            envs[name] = await start_environment(
                client,
                task_queue,
                EnvironmentSpec.model_validate(
                    {
                        "name": name,
                        "namespace": name,
                        "repository": repositories[name],
                        "interval": IDLE,
                        "health-timeout": "30s",
                        **tracks,
                    }
                ),
            )
        gated = next(name for name in envs if name.startswith("gated"))
        for env in envs.values():
            await wait_status(env, lambda s: s.state.health.status == "Healthy", timeout=60, what="healthy on A")
            assert (await build_of(env))[1] == "A"
        assert (await build_of(router))[1] == "A"
        for repository in repositories.values():  # nobody looks for an hour: only a wake-up applies it
            publish(settings, repository, "1.1.0", config_map("1.1.0"))
        promotion = await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=gated, version="1.1.0", requested_by="carol"),
            id=promotion_workflow_id(gated, "1.1.0"),
            task_queue=task_queue,
        )
        await wait_phase(promotion, "AwaitingApproval")
        assert (await build_of(promotion))[1] == "A"

        # B starts beside A and is made current; the drain wakes everything long-running that is still on A
        workers.start("worker-b", env=build_env(deployment, "B"))
        drained = await upgrade("drain", "--to", "B", "--timeout", "90s")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert "build A: 1 running (Promotion 1)" in drained.stdout, drained.stdout
        for name, env in envs.items():
            assert (await build_of(env))[1] == "B", name
            if name != gated:  # its first iteration on B found 1.1.0
                await wait_status(
                    env,
                    lambda s: bool(
                        s.state.last_applied
                        and s.state.last_applied.version == "1.1.0"
                        and s.state.health.status == "Healthy"
                    ),
                    timeout=60,
                    what=f"{name} on 1.1.0",
                )
        assert (await build_of(router))[1] == "B"

        # what still holds A: the promotion, until it ends there
        status = await upgrade("status", "--build", "A", "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        on_a = json.loads(status.stdout)["running"]["A"]
        assert (on_a["PromotionWorkflow"], on_a["EnvironmentWorkflow"], on_a["AlertRouterWorkflow"], on_a["total"]) == (
            1,
            0,
            0,
            1,
        ), on_a
        await promotion.execute_update(PromotionWorkflow.approve_update, LenientPayload({"approver": "bob"}))
        result = await asyncio.wait_for(promotion.result(), timeout=90)
        assert result.outcome == "succeeded", result.reason
        promoted = await run_builds(client, promotion.id)
        assert len(promoted) == 1 and set(promoted[0]) == {"A"}, promoted  # it finished where it started
        moved = await wait_status(
            envs[gated],
            lambda s: bool(s.state.last_applied and s.state.last_applied.version == "1.1.0"),
            timeout=60,
            what="the gated environment on 1.1.0",
        )
        assert moved.state.health.status == "Healthy"
        empty = await upgrade("status", "--build", "A", "--wait", "60s")
        assert empty.returncode == 0, empty.stdout + empty.stderr
        assert "nothing runs on it" in empty.stdout, empty.stdout
        again = await upgrade("drain", "--to", "B", "--timeout", "30s")  # a re-run (compose restarts the job)
        assert again.returncode == 0 and "no workflow runs on an older build" in again.stdout, again.stdout
        print(
            f"\n$ ferry upgrade drain --to B\n{drained.stdout}$ ferry upgrade status\n"
            f"{(await upgrade('status')).stdout}"
        )

        # A's workers stop; B alone applies the next release, answers queries and routes notifications
        workers.stop("worker-a")
        for name, repository in repositories.items():
            if name != gated:
                publish(settings, repository, "1.2.0", config_map("1.2.0"))
        for env in envs.values():
            await reconcile_now(env)  # what the registry's push webhook does (ferry receiver)
        for name, env in envs.items():
            want = "1.1.0" if name == gated else "1.2.0"
            await wait_status(
                env,
                lambda s, want=want: bool(  # type: ignore[misc]
                    s.state.last_applied and s.state.last_applied.version == want and s.state.health.status == "Healthy"
                ),
                timeout=60,
                what=f"{name} on {want} after A stopped",
            )
            data = core.read_namespaced_config_map("app-config", name).data
            assert data == {"version": want}, (name, data)
        received = (await router.query("status", result_type=AlertRouterState)).counts.get("received", 0)
        await router.signal(
            "notify",
            Notification(
                key=f"drain-test-{uuid.uuid4().hex[:8]}",
                type="DriftReverted",
                at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                environment=gated,
                source="test_versioning",
            ).model_dump(mode="json"),
        )

        async def routed() -> bool:
            state = await router.query("status", result_type=AlertRouterState)
            return bool(state.counts.get("received", 0) > received)

        await eventually(routed, 30, "the router, on B, received a notification", every=0.3)

        # every environment's and the router's runs: A's tasks, then B's, never back; no run changed build midway
        for workflow_id in [*(env.id for env in envs.values()), ALERT_ROUTER_ID]:
            runs = await run_builds(client, workflow_id)
            assert all(len(set(run)) == 1 for run in runs), (workflow_id, runs)
            tasks = [build for run in runs for build in run]
            first_b = tasks.index("B")
            assert first_b > 0 and set(tasks[:first_b]) == {"A"} and set(tasks[first_b:]) == {"B"}, tasks
    finally:
        for handle in [*envs.values(), client.get_workflow_handle(ALERT_ROUTER_ID)]:
            with contextlib.suppress(RPCError):
                await handle.terminate("test finished")
        workers.stop_all()


async def test_a_rolling_upgrade_moves_environments_and_finishes_promotions_where_they_started(
    versioned_server: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
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
            spec = EnvironmentSpec.model_validate(
                {  # the first one needs bob's approval to move
                    "name": name,
                    "namespace": name,
                    "repository": repository,
                    "version": "1.0.0",
                    "interval": "1s",
                    "health-timeout": "20s",
                    "approval": {"required": n == 0, "approvers": ["bob"]},
                }
            )
            envs.append(await start_environment(client, task_queue, spec))
        for env in envs:
            await wait_status(env, lambda s: s.state.health.status == "Healthy", timeout=60, what="healthy on A")
            assert (await build_of(env))[1] == "A"
        gated = envs[0].id.removeprefix("env/")
        promotion = await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=gated, version="1.1.0", requested_by="carol"),
            id=promotion_workflow_id(gated, "1.1.0"),
            task_queue=task_queue,
        )
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
            assert {
                e.workflow_task_completed_event_attributes.deployment_version.build_id
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            } == {"A"}
            moved = await wait_status(
                envs[0],
                lambda s: bool(s.state.last_applied and s.state.last_applied.version == "1.1.0"),
                timeout=60,
                what="the gated environment on 1.1.0",
            )
            assert moved.state.health.status == "Healthy" and (await build_of(envs[0]))[1] == "B"

            # builds only move forward (A..A then B..B over every workflow task of every run), no run has a failed
            # workflow task, and a pinned environment changes build only at continue-as-new
            pinned = (
                workflow._Definition.must_from_class(VersionedEnvironmentWorkflow).versioning_behavior
                == VersioningBehavior.PINNED
            )
            for env in envs:
                runs = sorted(
                    [wf async for wf in client.list_workflows(f"WorkflowId = '{env.id}'")], key=lambda wf: wf.start_time
                )
                tasks: list[str] = []
                for wf in runs:
                    run = client.get_workflow_handle(env.id, run_id=wf.run_id)
                    history = await run.fetch_history()
                    # NB: a signal that lands while a continue-as-new task completes fails that task with
                    # UNHANDLED_COMMAND and the server retries it with the signal: Temporal's design, not a build
                    # mismatch (which fails with a nondeterminism cause)
                    failed = [
                        e
                        for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                        and e.workflow_task_failed_event_attributes.cause
                        != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
                    ]
                    assert not failed, f"{env.id} run {wf.run_id}: {failed[0]}"
                    builds = [
                        e.workflow_task_completed_event_attributes.deployment_version.build_id
                        for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                    ]
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

    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
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
