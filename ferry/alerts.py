"""Alerts: which events go to whom (specs people write) and the notification a workflow sends. How each
provider renders it is :mod:`ferry.alert_render`; the router's vocabulary is :mod:`ferry.alert_router`. Pure: no I/O,
no clock. Provider addresses and secrets are NOT here: they live in the worker's providers file
(``FERRY_ALERT_PROVIDERS``, :class:`ferry.alert_render.ProvidersFile`); specs name providers only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from ferry.durations import parse_duration
from ferry.events import EventType, Severity
from ferry.model import Model

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}

# Every event type a workflow notifies, with its severity: an environment's (EventType) carry theirs; the others
# are the release, promotion and rollback workflows' and an environment's recovery. Types not listed are `info`.
EVENT_SEVERITY: dict[str, Severity] = {
    # environments (the Event types EnvironmentWorkflow records), and a failure's recovery
    **{t.value: t.severity for t in EventType},
    "Recovered": "info",
    # releases
    "ReleasePublished": "info",
    # promotions
    "AwaitingApproval": "warning",
    "Approved": "info",
    "Rejected": "warning",
    "Refused": "warning",
    "PromotionSucceeded": "info",
    "PromotionSuperseded": "info",
    "PromotionRejected": "warning",
    "PromotionExpired": "warning",
    "PromotionRefused": "warning",
    "PromotionFailed": "error",
    # rollbacks
    "RollbackSucceeded": "info",
    "RollbackSuperseded": "info",
    "RollbackRefused": "warning",
    "RollbackFailed": "error",
}
# What an environment becoming healthy again resolves (Alertmanager: endsAt; chat providers: a "resolved" line).
RESOLVED_BY_RECOVERY = tuple(
    t.value
    for t in (
        EventType.HEALTH_FAILED,
        EventType.AUTO_ROLLBACK,
        EventType.RECONCILE_FAILED,
        EventType.VERIFICATION_FAILED,
        EventType.TAG_MOVED,
    )
)
# Problems that stay firing in Alertmanager until resolved (or this long at most: a lost resolution cannot page
# forever). Other events are informational: Alertmanager's resolve_timeout ends them.
FIRING_FOR = timedelta(hours=24)

MAX_ALERTS = 100
MAX_PATTERNS = 64
MAX_MESSAGE = 1000
MAX_DETAILS = 16
MAX_DETAIL = 512
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_EVENT = r"^(\*|[A-Z][A-Za-z]{1,63})$"


def severity_of(event_type: str) -> Severity:
    return EVENT_SEVERITY.get(event_type, "info")


# ------------------------------------------------------------------------------------------- specs


class AlertSpec(Model):
    """One alert: which environments' events, of which types and minimum severity, go to which provider."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    provider: str = Field(
        min_length=1,
        max_length=63,
        pattern=_NAME,
        description="a provider in the worker's "
        "providers file (FERRY_ALERT_PROVIDERS); its URL and secrets never leave the worker",
    )
    environments: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[-a-z0-9*?\[\]!]+$")]] = Field(
        default_factory=lambda: ["*"], max_length=MAX_PATTERNS, description="names or globs (staging, prod-*, *)"
    )
    events: list[Annotated[str, Field(pattern=_EVENT)]] = Field(
        default_factory=lambda: ["*"], max_length=MAX_PATTERNS, description="event types, or * for all"
    )
    severity: Severity = Field("info", description="minimum severity")
    summary: str = Field("", max_length=256, description="a line prefixed to every message of this alert")
    deadline: str = Field(
        "1h", max_length=32, description="how long delivery is retried before it is recorded as undelivered"
    )
    suspend: bool = False

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e != "*" and e not in EVENT_SEVERITY]
        if unknown:
            raise ValueError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_SEVERITY))}")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str) -> str:
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as err:
            raise ValueError(f"deadline: {err}") from None
        if not 1 <= seconds <= 7 * 86400:
            raise ValueError("deadline must be between 1s and 7d")
        return value

    @property
    def deadline_seconds(self) -> float:
        return parse_duration(self.deadline).total_seconds()

    def matches(self, note: Notification) -> bool:
        """Environment glob, then the event type (or a recovery resolving a type this alert sends), then severity.
        A recovery is not filtered by severity: it resolves what this alert fired."""
        if self.suspend:
            return False
        if note.environment and not any(fnmatch.fnmatchcase(note.environment, p) for p in self.environments):
            return False
        if not note.environment and "*" not in self.environments:
            return False  # releases belong to no environment: only catch-all alerts get them
        if note.resolves and any(self._sends(t) for t in note.resolves):
            return True
        return self._sends(note.type) and SEVERITY_RANK[note.severity] >= SEVERITY_RANK[self.severity]

    def _sends(self, event_type: str) -> bool:
        return ("*" in self.events or event_type in self.events) and SEVERITY_RANK[
            severity_of(event_type)
        ] >= SEVERITY_RANK[self.severity]


class AlertsFile(Model):
    """`alerts:` in environments.yaml or a file of its own (`ferry alerts apply -f FILE`)."""

    alerts: list[AlertSpec] = Field(default_factory=list, max_length=MAX_ALERTS)

    @model_validator(mode="after")
    def _unique(self) -> AlertsFile:
        names = [a.name for a in self.alerts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert names must be unique: {', '.join(dupes)}")
        return self


# ------------------------------------------------------------------------------------ notification


class Notification(Model):
    """What a workflow tells the alert router about one event: bounded (it enters two histories), no secrets.
    `key` is the idempotency key: the same event always has the same key, every retry of its delivery carries it."""

    key: str = Field(min_length=8, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: str = Field(max_length=64)
    severity: Severity = "info"
    environment: str = Field("", max_length=64)
    message: str = Field("", max_length=MAX_MESSAGE)
    at: str = Field(max_length=32)
    source: str = Field("", max_length=300, description="the workflow that recorded the event (id)")
    run_id: str = Field("", max_length=64)
    version: str = Field("", max_length=128)
    digest: str = Field("", max_length=128)
    by: str = Field("", max_length=256)
    details: dict[str, str] = Field(
        default_factory=dict,
        description="publisher, approvers, deadline, repository, ... (at most 16, each at most 512 characters)",
    )
    resolves: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=16, description="event types this one resolves"
    )

    @field_validator("at")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
            raise ValueError("at must be a UTC timestamp YYYY-MM-DDTHH:MM:SSZ")
        return value

    @model_validator(mode="after")
    def _severity_from_type(self) -> Notification:
        # NB: a sender's claim of severity is not trusted: it follows from the event type (alerts filter on it)
        self.severity = severity_of(self.type)
        return self

    @field_validator("details", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())[:MAX_DETAILS]
            return {str(k)[:64]: str(v)[:MAX_DETAIL] for k, v in items}
        return value


def notification_key(workflow_id: str, run_id: str, position: int, event_type: str, message: str) -> str:
    """The idempotency key of one event: the recording run and where in its history the event was recorded (the
    history length is the same when the workflow replays), plus the event itself. 40 hex characters."""
    identity = f"{workflow_id}\n{run_id}\n{position}\n{event_type}\n{message}"
    return "ferry-" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def make_notification(
    *,
    workflow_id: str,
    run_id: str,
    position: int,
    type_: str,
    environment: str,
    message: str,
    at: str,
    version: str = "",
    digest: str = "",
    by: str = "",
    details: dict[str, str] | None = None,
    resolves: list[str] | None = None,
) -> Notification:
    message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
    return Notification(
        key=notification_key(workflow_id, run_id, position, type_, message),
        type=type_,
        severity=severity_of(type_),
        environment=environment,
        message=message,
        at=at,
        source=workflow_id[:300],
        run_id=run_id,
        version=version[:128],
        digest=digest[:128],
        by=by[:256],
        details=details or {},
        resolves=resolves or [],
    )
