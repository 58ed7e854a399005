"""The alert router's vocabulary: deliveries, carry budgets across continue-as-new, sender checks, its state,
input and the alerts update. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from typing import TypeVar

from pydantic import Field, model_validator

from ferry.alerts import MAX_ALERTS, MAX_MESSAGE, AlertSpec, Notification
from ferry.model import Model
from ferry.names import (
    ENV_PREFIX,
    ENVIRONMENT_WORKFLOW,
    PROMOTE_PREFIX,
    PROMOTION_WORKFLOW,
    RELEASE_PREFIX,
    RELEASE_WORKFLOW,
    ROLLBACK_PREFIX,
    ROLLBACK_WORKFLOW,
    Query,
)

# ------------------------------------------------------------------------------------ workflows

ALERT_ROUTER_ID = "alerts/router"  # one per namespace: environments, promotions and rollbacks signal it
MAX_SEEN = 2000  # idempotency keys the router remembers across continue-as-new (a duplicate is dropped)
MAX_UNDELIVERED = 50
MAX_RECENT = 100  # outcomes of recent deliveries kept in the router's status
MAX_PENDING = 1000  # deliveries in flight (retrying) at once; more are recorded as undelivered, never dropped


class DeliveryInput(Model):
    alert: str = Field(max_length=63)
    provider: str = Field(max_length=63)
    summary: str = Field("", max_length=256)
    deadline_seconds: float = Field(3600, gt=0)
    notification: Notification


class DeliveryResult(Model):
    delivered: bool
    status: int = 0
    provider_type: str = ""
    attempts: int = 0
    reason: str = Field("", max_length=MAX_MESSAGE)


class Undelivered(Model):
    alert: str
    provider: str
    key: str
    type: str
    environment: str = ""
    at: str
    reason: str = Field("", max_length=MAX_MESSAGE)


class Delivered(Model):
    alert: str
    key: str
    type: str
    environment: str = ""
    at: str
    status: int = 0
    attempts: int = 0


class PendingDelivery(Model):
    """A delivery in flight: carried through continue-as-new and resumed with what is left of its deadline."""

    alert: str
    provider: str
    summary: str = ""
    deadline_at: str = Field(description="absolute: the alert's deadline from when the event was routed")
    notification: Notification


Carried = TypeVar("Carried", PendingDelivery, Notification)

# The deliveries in flight that move to the next run at continue-as-new, by their encoded size: 1,000 of the
# largest notifications are ~10 MB, past the server's payload limit. What does not fit is given up on the record.
MAX_CARRIED_BYTES = 96 * 1024
MAX_QUEUED_BYTES = 32 * 1024  # ... and the notifications received while it continued as new
# ... and the declared alerts (100 of 64 patterns each could be ~850 KB): what `ferry alerts apply` may declare
MAX_ALERTS_BYTES = 96 * 1024


def carry(pending: list[Carried], budget: int = MAX_CARRIED_BYTES) -> tuple[list[Carried], list[Carried]]:
    """(carried, not carried): the oldest first (deliveries in flight, notifications queued), while their JSON
    fits `budget`."""
    used, carried = 0, list[Carried]()
    for index, item in enumerate(pending):
        size = len(item.model_dump_json())
        if used + size > budget:
            return carried, pending[index:]
        used += size
        carried.append(item)
    return carried, []


# ------------------------------------------------------------------------------------ senders

# Who may notify the router: a run of one of Ferry's workflows, on Ferry's task queue, about its own environment.
SENDER_TYPES = {
    ENV_PREFIX: ENVIRONMENT_WORKFLOW,
    PROMOTE_PREFIX: PROMOTION_WORKFLOW,
    ROLLBACK_PREFIX: ROLLBACK_WORKFLOW,
    RELEASE_PREFIX: RELEASE_WORKFLOW,
}


class SenderInput(Model):
    source: str = Field(max_length=300)
    run_id: str = Field(max_length=64)
    environment: str = Field("", max_length=64)
    key: str = Field("", max_length=80, description="the notification's key: the run named must say it sent it")
    digest: str = Field("", max_length=80, description="notification_digest of what arrived: ... with this content")


# `ferry upgrade drain` wakes the router with this notification (a client's: not delivered when senders are checked)
WORKER_BUILD_CHANGED = "WorkerBuildChanged"
WAKE_SOURCE = "ferry upgrade drain"
MAX_HELD = 3  # notifications with a key whose sender is being checked, waiting for its verdict (the newest)
MAX_QUEUED_CARRIED = 200  # notifications received while continuing as new, carried to the next run


def notification_digest(note: Notification) -> str:
    """What the router asks a sender to confirm: the notification's whole content as sent (canonical JSON), so a
    real key replayed with another message, type or `resolves` is refused."""
    canonical = json.dumps(note.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# The query every Ferry workflow answers: did this run send the notification with this key (workflows/outbox.py)?
NOTIFIED_QUERY = Query.NOTIFIED


class SenderResult(Model):
    refusal: str = Field("", description="why the notification is not Ferry's; empty: it is")
    sender: str = Field("", description="what each alert says of its sender")
    unverified: str = Field("", description="the sender could not be asked: given up on the record, not delivered")


def sender_refusal(note: SenderInput, workflow_type: str, task_queue: str, ferry_queue: str) -> str:
    """'' when the run `note` names (as Temporal describes it) is one of Ferry's workflows on Ferry's task queue,
    of the kind its id says, about the environment the notification names."""
    kind = next((t for prefix, t in SENDER_TYPES.items() if note.source.startswith(prefix)), None)
    if kind is None:
        return f"{note.source[:100]!r} is not the id of one of Ferry's workflows"
    if workflow_type != kind:
        return f"{note.source[:100]} run {note.run_id} is of type {workflow_type[:100]}, not {kind}"
    if task_queue != ferry_queue:
        return f"{note.source[:100]} runs on task queue {task_queue[:100]!r}, not Ferry's"
    parts = note.source.split("/")
    if kind != RELEASE_WORKFLOW and note.environment and parts[1] != note.environment:
        return f"{note.source[:100]} is about {parts[1][:64]}, not {note.environment}"
    return ""


class AlertRouterState(Model):
    alerts: list[AlertSpec] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list, description="recent idempotency keys (bounded)")
    pending: list[PendingDelivery] = Field(
        default_factory=list, description="deliveries in flight when the previous run continued as new"
    )
    delivered: list[Delivered] = Field(default_factory=list, description="recent deliveries (bounded)")
    undelivered: list[Undelivered] = Field(default_factory=list, description="deliveries given up (bounded)")
    counts: dict[str, int] = Field(
        default_factory=dict, description="received, duplicate, malformed, matched, delivered, undelivered"
    )


class AlertRouterInput(Model):
    state: AlertRouterState = Field(default_factory=AlertRouterState)
    queued: list[Notification] = Field(
        default_factory=list,
        max_length=200,
        description="received by the previous run while it continued as new, not yet routed",
    )
    verify_senders: bool = Field(
        True,
        description="deliver only what a run of Ferry's own workflows sent (false: "
        "a router fed by something else, such as the delivery benchmark's synthetic events)",
    )
    max_per_run: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="notifications routed per run before "
        "continue-as-new (each costs a signal, and an activity per matching alert)",
    )


class AlertsUpdate(Model):
    alerts: list[AlertSpec] = Field(max_length=MAX_ALERTS)
    by: str = Field("", max_length=128)

    @model_validator(mode="after")
    def _small(self) -> AlertsUpdate:
        size = len(AlertRouterState(alerts=self.alerts).model_dump_json())
        if size > MAX_ALERTS_BYTES:
            raise ValueError(
                f"the declared alerts are {size} bytes encoded, more than {MAX_ALERTS_BYTES}: they live "
                "in the router's state from run to run (fewer patterns, or globs)"
            )
        return self


class AlertsUpdateResult(Model):
    alerts: list[str]
    changes: list[str] = Field(default_factory=list)


def alerts_diff(old: list[AlertSpec], new: list[AlertSpec]) -> list[str]:
    before = {a.name: a for a in old}
    after = {a.name: a for a in new}
    lines = [f"added {n}" for n in after if n not in before]
    lines += [f"removed {n}" for n in before if n not in after]
    lines += [f"changed {n}" for n in after if n in before and before[n] != after[n]]
    return lines
