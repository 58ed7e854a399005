"""For the heartbeat and health-deadline tests: a stack served only by `ferry worker` processes a test kills, one
activity of a running workflow watched across its attempts (describe's pending activities), and an activity's
span in history (workflow time)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from devstack.kube.session import KubeServer
from devstack.registry import Registry
from ferry.settings import Settings
from tests.kit.processes import Workers, worker_env
from tests.kit.stack import settings_for, terminate_running


async def pending_activity(handle: WorkflowHandle[Any, Any], activity_type: str) -> PendingActivityInfo | None:
    """The workflow's pending activity of this type (its latest attempt), or None."""
    desc = (await handle.describe()).raw_description
    found = [p for p in desc.pending_activities if p.activity_type.name == activity_type]
    return found[-1] if found else None


async def wait_pending(
    handle: WorkflowHandle[Any, Any],
    activity_type: str,
    predicate: Callable[[PendingActivityInfo], bool],
    timeout: float,
    what: str,
    every: float = 0.1,
) -> PendingActivityInfo:
    """Poll the pending activity until `predicate` holds; fail naming `what` and what was last seen."""
    deadline = time.monotonic() + timeout
    last: PendingActivityInfo | None = None
    while time.monotonic() < deadline:
        last = await pending_activity(handle, activity_type)
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"{what}: not reached in {timeout:.0f}s; last pending {activity_type}: {describe(last)}")


def running(attempt: int) -> Callable[[PendingActivityInfo], bool]:
    """A predicate: the activity's attempt `attempt` (or a later one) has been taken by a worker."""
    return lambda p: p.attempt >= attempt and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


def heartbeat_seen(p: PendingActivityInfo) -> bool:
    """Attempt 1 runs and has heartbeated (it is past its first API request)."""
    return running(1)(p) and p.HasField("heartbeat_details")


def last_timeout(p: PendingActivityInfo) -> TimeoutType.ValueType:
    """The TimeoutType that ended the previous attempt (UNSPECIFIED: it did not time out, or there was none)."""
    if p.HasField("last_failure") and p.last_failure.HasField("timeout_failure_info"):
        return p.last_failure.timeout_failure_info.timeout_type
    return TimeoutType.TIMEOUT_TYPE_UNSPECIFIED


def describe(p: PendingActivityInfo | None) -> str:
    if p is None:
        return "none"
    failure = p.last_failure.message if p.HasField("last_failure") else ""
    return (
        f"attempt {p.attempt}, state {PendingActivityState.Name(p.state)}, worker {p.last_worker_identity!r}, "
        f"started {p.last_started_time.ToDatetime().isoformat() if p.HasField('last_started_time') else '-'}, "
        f"last failure {failure!r} ({TimeoutType.Name(last_timeout(p))})"
    )


def started_at(p: PendingActivityInfo) -> float:
    """When the current attempt started, as a Unix timestamp (the server's clock: the same host in tests)."""
    return p.last_started_time.ToNanoseconds() / 1e9


@dataclass
class ActivitySpan:
    """One activity in a history: when it was scheduled and when it closed (any outcome), in workflow time."""

    scheduled: datetime
    closed: datetime | None
    outcome: str  # the closing event's type name, "" while open
    attempt: int  # the attempt that closed it (ActivityTaskStarted's attempt), 0 while open

    @property
    def seconds(self) -> float | None:
        return (self.closed - self.scheduled).total_seconds() if self.closed else None


_CLOSING = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
}


def activity_spans(events: Sequence[HistoryEvent], activity_type: str) -> list[ActivitySpan]:
    """Every activity of this type in a history, in scheduling order."""
    spans: dict[int, ActivitySpan] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == activity_type:
                spans[e.event_id] = ActivitySpan(e.event_time.ToDatetime(tzinfo=UTC), None, "", 0)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = e.activity_task_started_event_attributes
            if attrs.scheduled_event_id in spans:
                spans[attrs.scheduled_event_id].attempt = attrs.attempt
        elif e.event_type in _CLOSING:
            name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_ACTIVITY_TASK_")
            attrs = getattr(e, f"activity_task_{name.lower()}_event_attributes")
            span = spans.get(attrs.scheduled_event_id)
            if span is not None:
                span.closed, span.outcome = e.event_time.ToDatetime(tzinfo=UTC), name
    return list(spans.values())


@dataclass
class KillableStack:
    """One test's environment name (also its namespace), repository, task queue and `ferry worker` processes."""

    name: str
    repository: str
    task_queue: str
    settings: Settings
    workers: Workers
    core: Any  # kubernetes.client.CoreV1Api as the admin


@contextlib.asynccontextmanager
async def killable_workers(
    env: WorkflowEnvironment, registry: Registry, kube_server: KubeServer, tmp: Path, prefix: str
) -> AsyncIterator[KillableStack]:
    """A fresh namespace, repository and task queue, served only by `ferry worker` processes the test starts and
    kills; whatever ran on the queue is terminated and the workers stopped afterwards."""
    import kubernetes

    suffix = uuid.uuid4().hex[:8]
    name, task_queue = f"{prefix}-{suffix}", f"{prefix}-{uuid.uuid4().hex[:8]}"
    core: Any = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    core.create_namespace({"metadata": {"name": name}})
    workers = Workers(
        tmp / "workers",
        worker_env(env.client.service_client.config.target_host, registry, kube_server, task_queue, tmp),
    )
    workers.root.mkdir()
    try:
        yield KillableStack(
            name, f"{registry.host}/team/{name}", task_queue, settings_for(registry, tmp), workers, core
        )
    finally:
        await terminate_running(env.client, task_queue)
        workers.stop_all()


async def taken_over(
    handle: WorkflowHandle[Any, Any],
    activity_type: str,
    first: PendingActivityInfo,
    killed: float,
    bound: float,
    what: str,
) -> float:
    """Wait (a little past `bound`) for attempt 2 on another worker, after a heartbeat timeout; -> how many seconds
    after `killed` (a Unix time) it started, which must be within `bound`."""
    second = await wait_pending(handle, activity_type, running(2), bound + 5, what)
    noticed = started_at(second) - killed
    assert second.last_worker_identity != first.last_worker_identity, describe(second)
    assert last_timeout(second) == TimeoutType.TIMEOUT_TYPE_HEARTBEAT, describe(second)
    assert noticed <= bound, f"attempt 2 started {noticed:.1f}s after the kill: {describe(second)}"
    return noticed
