"""Workflows against stand-in activities (tests/kit/stand_ins.py): the time-skipping server, no registry, no
cluster, no stack. Each test takes seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ferry.environment import EnvironmentInput, EnvironmentState, EnvironmentStatus, LenientPayload
from ferry.oci import ANNOTATION_PUBLISHED_BY, ANNOTATION_VERSION
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.reconcile import VersionRef
from ferry.release import ReleaseInput, ReleaseResult, new_ci_task_queue, release_workflow_id
from ferry.spec import EnvironmentSpec, env_workflow_id
from tests.kit.environments import record_histories
from tests.kit.stand_ins import CiHost, World, digest_of
from workers.worker import workflow_runner
from workflows.environment import EnvironmentWorkflow
from workflows.patches import BASELINE_3
from workflows.promotion import PromotionWorkflow
from workflows.release import ReleaseWorkflow

REPOSITORY = "registry.test/shop/app"


async def _status(client: Client, name: str) -> EnvironmentStatus:
    return await client.get_workflow_handle(env_workflow_id(name)).query(EnvironmentWorkflow.status)


async def _until(
    client: Client, name: str, done: Callable[[EnvironmentStatus], bool], timeout: float = 20
) -> EnvironmentStatus:
    """Poll the status query (queries do not skip time: the environment's interval timer never fires here)."""
    async with asyncio.timeout(timeout):
        while True:
            status = await _status(client, name)
            if done(status):
                return status
            await asyncio.sleep(0.05)


def _spec(name: str) -> EnvironmentSpec:
    return EnvironmentSpec(name=name, repository=REPOSITORY, semver=">=1.0.0", interval="1h", namespace="shop")


async def _start_environment(client: Client, task_queue: str, name: str) -> None:
    await client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=EnvironmentState(spec=_spec(name))),
        id=env_workflow_id(name),
        task_queue=task_queue,
    )


def _patch_markers(history: WorkflowHistory) -> list[str]:
    """The patch ids recorded in a history, in order."""
    ids = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and marker.marker_name == "core_patch":
            ids.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return ids


def _events(status: EnvironmentStatus) -> list[str]:
    return [event.type for event in status.state.events]


@pytest.fixture
def world() -> World:
    return World()


async def test_environment_resolves_reconciles_and_is_healthy(
    time_env: WorkflowEnvironment, task_queue: str, world: World
) -> None:
    digest = world.release("1.0.0")
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await _start_environment(time_env.client, task_queue, "shop")
        status = await _until(time_env.client, "shop", lambda s: s.state.health.status == "Healthy")
    state = status.state
    assert state.last_applied is not None and (state.last_applied.version, state.last_applied.digest) == (
        "1.0.0",
        digest,
    )
    assert state.health.digest == digest and state.good_history == [VersionRef(version="1.0.0", digest=digest)]
    assert _events(status) == ["Applied", "Healthy"]
    # the first iteration has nothing applied: no local check, the full path in order
    assert world.calls == ["resolve_desired", "reconcile_environment 1.0.0", "wait_healthy"]
    assert world.running == {"shop": digest} and state.tags == {"1.0.0": digest}
    # a run that starts on this code records one patch marker (and one TemporalChangeVersion upsert), not one each
    history = await time_env.client.get_workflow_handle(env_workflow_id("shop")).fetch_history()
    assert _patch_markers(history) == [BASELINE_3]
    assert (
        sum(
            1
            for e in history.events
            if e.HasField("upsert_workflow_search_attributes_event_attributes")
            and "TemporalChangeVersion"
            in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        )
        == 1
    )


async def test_a_rollout_that_writes_no_workload_is_judged_by_the_reconcile(
    time_env: WorkflowEnvironment, task_queue: str, world: World
) -> None:
    """Only workloads roll out (wait_healthy reads nothing else): a bundle of configuration is Healthy when the
    reconcile that wrote it says so, without a wait_healthy activity."""
    world.workload = False
    digest = world.release("1.0.0")
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await _start_environment(time_env.client, task_queue, "shop")
        status = await _until(time_env.client, "shop", lambda s: s.state.health.status == "Healthy")
        await record_histories(
            "baseline/config-only", {"environment": time_env.client.get_workflow_handle(env_workflow_id("shop"))}
        )
    assert world.calls == ["resolve_desired", "reconcile_environment 1.0.0"]
    assert _events(status) == ["Applied", "Healthy"] and status.state.health.digest == digest
    assert status.state.good_history == [VersionRef(version="1.0.0", digest=digest)]


async def test_failing_health_rolls_back_and_holds_the_version(
    time_env: WorkflowEnvironment, task_queue: str, world: World
) -> None:
    good = world.release("1.0.0")
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await _start_environment(time_env.client, task_queue, "shop")
        await _until(time_env.client, "shop", lambda s: s.state.health.status == "Healthy")
        bad = world.release("1.1.0", healthy=False)
        world.calls.clear()
        await time_env.client.get_workflow_handle(env_workflow_id("shop")).signal(
            EnvironmentWorkflow.reconcile_now, LenientPayload({})
        )
        status = await _until(
            time_env.client,
            "shop",
            lambda s: (
                s.state.pin is not None
                and s.state.last_applied is not None
                and s.state.last_applied.digest == good
                and s.state.health.status == "Healthy"
            ),
        )
    state = status.state
    assert state.holds == ["1.1.0"]
    assert state.pin is not None and (state.pin.kind, state.pin.digest) == ("auto-rollback", good)
    assert "1.1.0 failed health" in state.pin.reason
    assert _events(status) == ["Applied", "Healthy", "Applied", "AutoRollback", "Applied"]
    rollback = state.events[3]
    assert rollback.objects["failed"] == ["1.1.0", bad] and rollback.version == "1.0.0"
    # 1.1.0: the check sees a new digest (cluster not read), applies it, it fails; then 1.0.0 again, 1.1.0 held
    assert world.calls == [
        "check_environment",
        "reconcile_environment 1.1.0",
        "wait_healthy",
        "check_environment",
        "reconcile_environment 1.0.0",
        "wait_healthy",
    ]
    assert world.running == {"shop": good}


async def test_failing_health_without_auto_rollback_is_recorded(
    time_env: WorkflowEnvironment, task_queue: str, world: World
) -> None:
    bad = world.release("1.0.0", healthy=False)
    spec = _spec("shop").model_copy(update={"auto_rollback": False})
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await time_env.client.start_workflow(
            EnvironmentWorkflow.run,
            EnvironmentInput(state=EnvironmentState(spec=spec)),
            id=env_workflow_id("shop"),
            task_queue=task_queue,
        )
        status = await _until(time_env.client, "shop", lambda s: s.state.health.status == "Failed")
    assert _events(status) == ["Applied", "HealthFailed"]
    assert status.state.pin is None and status.state.holds == ["1.0.0"] and status.state.good_history == []
    assert status.state.health.digest == bad and "CrashLoopBackOff" in status.state.health.reason


async def test_promotion_pins_and_hears_back_healthy(
    time_env: WorkflowEnvironment, task_queue: str, world: World
) -> None:
    world.release("1.0.0")
    wanted = world.release("1.1.0")
    spec = _spec("prod").model_copy(update={"semver": None, "version": "1.0.0"})
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow, PromotionWorkflow],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await time_env.client.start_workflow(
            EnvironmentWorkflow.run,
            EnvironmentInput(state=EnvironmentState(spec=spec)),
            id=env_workflow_id("prod"),
            task_queue=task_queue,
        )
        await _until(time_env.client, "prod", lambda s: s.state.health.status == "Healthy")
        world.calls.clear()
        result = await time_env.client.execute_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment="prod", version="1.1.0", requested_by="carol"),
            id=promotion_workflow_id("prod", "1.1.0"),
            task_queue=task_queue,
        )
        status = await _status(time_env.client, "prod")
    assert (result.outcome, result.digest, result.publisher) == ("succeeded", wanted, "ci-main")
    assert status.state.last_applied is not None and status.state.last_applied.digest == wanted
    assert status.state.pin is not None and status.state.pin.kind == "promotion"
    # the promotion reads, pins; the environment (a pin to another digest: no local check) applies and answers
    assert world.calls[:5] == [
        "environment_status",
        "resolve_tag 1.1.0",
        "fetch_manifest",
        "reconcile_environment 1.1.0",
        "wait_healthy",
    ], world.calls


# --------------------------------------------------------------------------------------------------------- release
async def _release(env: WorkflowEnvironment, task_queue: str, ci: CiHost, version: str = "1.0.0") -> ReleaseResult:
    ci_queue = new_ci_task_queue()
    input = ReleaseInput(
        repository=REPOSITORY,
        version=version,
        ci_task_queue=ci_queue,
        bundle_dir="/src/deploy",
        publisher="ci-main",
        created="2026-01-01T00:00:00Z",
    )
    async with (
        Worker(env.client, task_queue=task_queue, workflows=[ReleaseWorkflow], workflow_runner=workflow_runner()),
        Worker(env.client, task_queue=ci_queue, activities=ci.activities()),
    ):
        return await env.client.execute_workflow(
            ReleaseWorkflow.run, input, id=release_workflow_id(REPOSITORY, version), task_queue=task_queue
        )


async def test_release_pushes_on_the_ci_queue_and_verifies(time_env: WorkflowEnvironment, task_queue: str) -> None:
    ci = CiHost()
    result = await _release(time_env, task_queue, ci)
    assert [p.tag for p in ci.pushed] == ["1.0.0"]
    annotations = ci.pushed[0].annotations
    assert annotations[ANNOTATION_PUBLISHED_BY] == "ci-main" and annotations[ANNOTATION_VERSION] == "1.0.0"
    assert (result.digest, result.layer_digest, result.already_released) == (
        ci.tags["1.0.0"],
        digest_of("manifests v1"),
        False,
    )


async def test_release_of_a_released_version(time_env: WorkflowEnvironment, task_queue: str) -> None:
    ci = CiHost()
    first = await _release(time_env, task_queue, ci)
    again = await _release(time_env, task_queue, ci)  # CI re-run, same content: success, nothing pushed
    assert again.already_released and again.digest == first.digest and again.publisher == "ci-first"
    assert len(ci.pushed) == 1
    ci.content = "manifests v2"  # the same version with other content: refused
    with pytest.raises(WorkflowFailureError) as failed:
        await _release(time_env, task_queue, ci)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "VersionAlreadyReleased"
    assert len(ci.pushed) == 1
