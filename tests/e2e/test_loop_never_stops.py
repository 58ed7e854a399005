"""The loop never stops (step 14), on the real dev server, registry and Kubernetes API:

- every signal and Update of the environment, the promotion and the alert router takes no input, null, a wrong
  type, several payloads and a 1 MB string without failing a workflow task: the environment applies the next
  release afterwards, the promotion completes and the router routes the next notification;
- a cancel that lands during an activity suspends an environment (and is heard again the second time) and ends a
  promotion Cancelled, never as an activity failure;
- a health wait cut by an API-server outage leaves no failing release in place: once the API answers, the release
  is judged from its own deadline, rolled back and held.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import kubernetes
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.alert_router import AlertRouterInput, AlertRouterState
from ferry.alerts import Notification
from ferry.environment import LenientPayload
from ferry.reconcile import PlanResult
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from ferry.times import timestamp
from tests.kit.environments import (
    app_manifests,
    hanging_manifests,
    publish,
    reconcile_now,
    record_histories,
    start_environment,
    wait_phase,
    wait_status,
)
from tests.kit.promotion import make_world, promote
from workflows.alerts import AlertRouterWorkflow
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow

HUGE = "x" * 1_000_000
# What a `temporal` CLI user can send: no --input, `--input null`, a wrong type, two --input flags, a huge string.
NO_INPUT: tuple[Any, ...] = ()
INPUTS: list[tuple[Any, ...]] = [NO_INPUT, (None,), ([1, 2, 3],), (42,), ({"unexpected": True}, "second"), (HUGE,)]
ANSWER_WITHIN = 20.0  # seconds: a healthy workflow answers an Update at once; a wedged one never does


def handlers(cls: type) -> tuple[list[str], list[str]]:
    """Every registered signal and Update name of a workflow class (a new handler is covered automatically)."""
    defn = workflow._Definition.must_from_class(cls)
    return sorted(n for n in defn.signals if n), sorted(n for n in defn.updates if n)


async def hostile_messages(handle: WorkflowHandle[Any, Any], cls: type, skip: frozenset[str] = frozenset()) -> int:
    """Send each signal and Update every hostile input; -> how many Updates were answered (accepted or rejected:
    either is fine, hanging is not)."""
    signals, updates = handlers(cls)
    for name in signals:
        if name in skip:
            continue
        for args in INPUTS:
            await handle.signal(name, args=list(args))
    answered = 0
    for name in updates:
        if name in skip:
            continue
        for args in INPUTS:
            try:
                await asyncio.wait_for(handle.execute_update(name, args=list(args)), ANSWER_WITHIN)
            except (WorkflowUpdateFailedError, RPCError):
                pass  # rejected by a validator or refused on the record: an answer
            answered += 1
    return answered


async def failed_workflow_tasks(handle: WorkflowHandle[Any, Any]) -> list[str]:
    causes = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            causes.append(event.workflow_task_failed_event_attributes.failure.message[:200])
    return causes


def _names() -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"loop-{suffix}", f"loop-{suffix}", f"team/loop-{suffix}"


def _namespace(kube_server: Any, ns: str) -> None:
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})


def _spec(settings: Settings, name: str, ns: str, repo: str, **kw: Any) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {
            "name": name,
            "repository": f"{settings.registry.default}/{repo}",
            "namespace": ns,
            "interval": "2s",
            "health-timeout": "20s",
            "semver": ">=1.0.0",
            **kw,
        }
    )


async def test_every_environment_handler_survives_any_input(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    _namespace(kube_server, ns)
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("web"))
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo))
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")

    answered = await hostile_messages(handle, EnvironmentWorkflow)
    assert answered == len(handlers(EnvironmentWorkflow)[1]) * len(INPUTS)
    # a suspend without input is a suspend (by "unknown"): resume, then the next release must land
    await handle.signal(EnvironmentWorkflow.resume, LenientPayload({"by": "test"}))
    digest = publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.1.0", app_manifests("web", "nginx:1.26"))
    await reconcile_now(handle)
    status = await wait_status(
        handle,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == digest,
        timeout=60,
        what="1.1.0 healthy",
    )
    assert not status.state.suspended
    assert await failed_workflow_tasks(handle) == []
    refused = [e.message for e in status.state.events if e.type == "PinRefused"]
    assert refused and all("malformed pin" in m for m in refused)
    assert all(len(e.message) <= 1000 for e in status.state.events)  # the 1 MB string is nowhere in the state


async def test_every_promotion_handler_survives_any_input(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    # NB: pin_outcome is the environment's answer channel: hostile input there must be ignored, not taken as one
    await hostile_messages(handle, PromotionWorkflow)
    status = await wait_phase(handle, "AwaitingApproval")
    assert all(not d.accepted for d in status.decisions)  # nothing hostile approved or rejected it
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": "alice"}))
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.outcome == "succeeded", result.reason
    assert await failed_workflow_tasks(handle) == []


async def test_every_alert_router_handler_survives_any_input(
    dev_worker: Settings, dev_env: WorkflowEnvironment
) -> None:
    """The router (one per namespace, forever) takes any input on notify and apply_alerts, counts a signal of a name
    it does not have, and routes the next real notification."""
    import datetime as dt

    router = await dev_env.client.start_workflow(
        AlertRouterWorkflow.run,
        AlertRouterInput(),
        id=f"alerts/loop-{uuid.uuid4().hex[:8]}",
        task_queue=dev_worker.temporal.task_queue,
    )
    answered = await hostile_messages(router, AlertRouterWorkflow)
    assert answered == len(handlers(AlertRouterWorkflow)[1]) * len(INPUTS)
    for args in INPUTS:
        await router.signal("notfiy", args=list(args))  # a typo: no such signal
    note = Notification(
        key=f"loop-{uuid.uuid4().hex[:8]}",
        type="DriftReverted",
        environment="shop",
        at=timestamp(dt.datetime.now(dt.UTC)),
        source="test_loop_never_stops",
    )
    await router.signal(AlertRouterWorkflow.notify, note.model_dump(mode="json"))

    async def counts() -> dict[str, int]:
        return (await router.query(AlertRouterWorkflow.status, result_type=AlertRouterState)).counts

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (await counts()).get("received", 0) < 1:
        assert loop.time() < deadline, await counts()
        await asyncio.sleep(0.2)
    final = await counts()
    assert final["received"] == 1 and final["malformed"] == len(INPUTS), final  # every hostile notify refused
    assert final["unknown_signal"] == len(INPUTS), final
    assert await failed_workflow_tasks(router) == []
    await router.terminate("test done")


async def _activity_started(handle: WorkflowHandle[Any, Any], activity: str, timeout: float = 30) -> None:
    """`activity` is running or retrying (a retried activity's started event reaches history only when it ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        pending = (await handle.describe()).raw_description.pending_activities
        if any(p.activity_type.name == activity and (p.attempt > 1 or p.last_started_time.seconds) for p in pending):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{activity} never started in {timeout}s")


async def _closed(handle: WorkflowHandle[Any, Any], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert loop.time() < deadline, f"{handle.id} run {handle.run_id} still running after {timeout}s"
        await asyncio.sleep(0.2)


async def _event_types(handle: WorkflowHandle[Any, Any]) -> list[int]:
    return [e.event_type async for e in handle.fetch_history_events()]


async def test_a_cancel_during_an_activity_suspends_the_environment_and_a_second_cancel_is_heard(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    _namespace(kube_server, ns)
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("web"))
    kube_server.inject_faults(200, "timeout")  # every API connection hangs: the first reconcile stays in flight
    try:
        handle = await start_environment(
            dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo)
        )
        first = dev_env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        await _activity_started(first, "reconcile_environment")
        await handle.cancel()
        status = await wait_status(handle, lambda s: s.state.suspended, what="suspended by the cancel")
    finally:
        kube_server.inject_faults(0)
    suspended = [e for e in status.state.events if e.type == "Suspended"]
    assert len(suspended) == 1 and suspended[0].by == "cancel request"
    assert not [e for e in status.state.events if e.type == "ReconcileFailed"], "the cancel was taken for a failure"
    await _closed(first)
    first_events = await _event_types(first)
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in first_events  # the reconcile was cancelled too
    assert first_events[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW  # so the next cancel lands

    await handle.cancel()  # NB: the server takes one cancel request per run: the new run must hear this one
    status = await wait_status(
        handle,
        lambda s: len([e for e in s.state.events if e.type == "Suspended"]) == 2,
        what="the second cancel answered",
    )
    assert "suspended already" in status.state.events[-1].message
    await handle.signal(EnvironmentWorkflow.resume, LenientPayload({"by": "test"}))
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", timeout=60, what="healthy after resume")
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await record_histories("activity-cancel", {"environment": first})


async def test_a_promotion_cancelled_during_an_activity_ends_cancelled(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, registry: Registry
) -> None:
    world = await make_world(dev_env.client, dev_worker, kube_server)
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.cancel()  # during the approval wait (a condition): handled before too
    registry.stop()  # the next promotion's resolve activity retries against a registry that is down
    try:
        second = await dev_env.client.start_workflow(
            PromotionWorkflow.run,
            *_promotion_args(world),
            id=f"promote-cancel-{uuid.uuid4().hex[:6]}",
            task_queue=world.settings.temporal.task_queue,
        )
        await _activity_started(second, "resolve_tag")
        await second.cancel()
        await _wait_closed(second.result())
    finally:
        registry.start()
    for run in (second, handle):  # NB: the cancel during an activity first (older code ended it "refused")
        desc = await run.describe()
        assert desc.status == WorkflowExecutionStatus.CANCELED, desc.status
        assert desc.search_attributes.get("FerryPhase") == ["Cancelled"]
        status = await run.query(PromotionWorkflow.status)
        assert status.phase == "Cancelled"
        memo = await desc.memo_value("ferry_outcome", default=None)
        assert memo is not None and memo["outcome"] == "cancelled", memo
    await record_histories("promotion-cancel-activity", {"promotion": second})
    await record_histories("promotion-cancel-approval", {"promotion": handle})


def _promotion_args(world: Any) -> list[Any]:
    from ferry.promotion import PromotionInput

    return [PromotionInput(environment=world.production, version="1.1.0", requested_by="carol", reason="cancel me")]


async def _wait_closed(result: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(result, 60)
    except TimeoutError:
        raise
    except Exception:
        return


async def test_a_health_wait_cut_by_an_outage_is_judged_later_rolled_back_and_held(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    name, ns, repo = _names()
    _namespace(kube_server, ns)
    repository = f"{dev_worker.registry.default}/{repo}"
    good = publish(dev_worker, repository, "1.0.0", app_manifests("web"))
    handle = await start_environment(
        dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo, **{"health-timeout": "25s"})
    )
    await wait_status(
        handle,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == good,
        what="1.0.0 healthy",
    )
    bad = publish(dev_worker, repository, "1.1.0", hanging_manifests("web", "nginx:1.26"))
    # NB: the plan Update and a signal without input, in the history this test records for the replay tests
    planned = await handle.execute_update("plan", result_type=PlanResult)
    assert planned.version == "1.1.0" and planned.digest == bad
    await handle.signal("reconcile_now")
    await wait_status(
        handle,
        lambda s: s.state.health.digest == bad and s.state.health.status == "Progressing",
        what="1.1.0 rolling out",
    )
    kube_server.inject_faults(100_000, "error")  # the API server is gone while the rollout hangs
    try:
        cut = await wait_status(
            handle,
            lambda s: s.state.health.digest == bad and s.state.health.status == "Unknown",
            timeout=90,
            what="the health wait cut by the outage",
        )
        assert "not judged" in cut.state.health.reason
    finally:
        kube_server.inject_faults(0)
    # the API is back: the release that never became healthy is judged from its own deadline, not left in place
    status = await wait_status(
        handle,
        lambda s: "1.1.0" in s.state.holds and s.state.pin is not None and s.state.pin.kind == "auto-rollback",
        timeout=120,
        what="rolled back and held",
    )
    await wait_status(
        handle,
        lambda s: s.state.health.status == "Healthy" and s.state.health.digest == good,
        timeout=60,
        what="1.0.0 healthy again",
    )
    rollback = [e for e in status.state.events if e.type == "AutoRollback"][-1]
    assert "not healthy by its deadline" in rollback.message or "health timeout" in rollback.message, rollback.message
    assert status.state.rollout is None or status.state.rollout.digest != bad
    await record_histories("health-rejudged", {"environment": handle})
    print(json.dumps({"rolled_back": rollback.message[:200]}))
