"""What an EnvironmentWorkflow records: event types and events."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from ferry.bounded import cap_objects
from ferry.model import Model

Severity = Literal["info", "warning", "error"]  # how much an event matters (alerts filter on it)


class EventType(StrEnum):
    """What an EnvironmentWorkflow records (Event.type): the audit, the alerts and the metrics name these."""

    APPLIED = "Applied"
    HEALTHY = "Healthy"
    HEALTH_FAILED = "HealthFailed"
    AUTO_ROLLBACK = "AutoRollback"
    DRIFT_CORRECTED = "DriftCorrected"
    RECONCILE_FAILED = "ReconcileFailed"
    PINNED = "Pinned"
    PIN_REFUSED = "PinRefused"
    PIN_RELEASED = "PinReleased"
    TAG_MOVED = "TagMoved"
    VERIFICATION_FAILED = "VerificationFailed"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    SPEC_UPDATED = "SpecUpdated"
    SPEC_CHANGE_PENDING = "SpecChangePending"
    SPEC_CHANGE_REJECTED = "SpecChangeRejected"
    SPEC_DECISION_REFUSED = "SpecDecisionRefused"
    RECORD_RECOVERED = "RecordRecovered"  # a run that replaced the last one took that run's safety record
    ROLLOUT_STARTED = "RolloutStarted"  # a progressive rollout (workflows/rollout.py) walks a release out
    ROLLOUT_PROMOTED = "RolloutPromoted"
    ROLLOUT_FAILED = "RolloutFailed"  # its analysis failed, or it was aborted or refused: traffic back to the primary
    ROLLOUT_SUPERSEDED = "RolloutSuperseded"  # a newer release pre-empted it

    @classmethod
    def _missing_(cls, value: object) -> EventType | None:
        """NB: a type this build does not know (recorded by a newer worker, in a state it continued as new) still
        decodes, as itself: a rolling upgrade or its rollback never strands a workflow on an unknown event."""
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_, member._value_ = value, value
        return member

    @property
    def words(self) -> str:
        """How the audit timeline names it: 'drift corrected', 'rollback (automatic)'; an unknown type as itself."""
        if self.value not in EventType.__members__.values():
            return self.value
        return _EVENT_WORDS.get(self) or re.sub(r"(?<!^)(?=[A-Z])", " ", self.value).lower()

    @property
    def severity(self) -> Severity:
        """How much it matters to the people alerts page; an unknown type is `info`."""
        return _SEVERITY.get(self, "info")


_EVENT_WORDS = {EventType.AUTO_ROLLBACK: "rollback (automatic)", EventType.TAG_MOVED: "tag moved (refused)"}
_SEVERITY: dict[EventType, Severity] = {
    EventType.APPLIED: "info",
    EventType.HEALTHY: "info",
    EventType.PINNED: "info",
    EventType.PIN_RELEASED: "info",
    EventType.SPEC_UPDATED: "info",
    EventType.RESUMED: "info",
    EventType.SPEC_CHANGE_REJECTED: "info",
    EventType.RECORD_RECOVERED: "info",
    EventType.ROLLOUT_STARTED: "info",
    EventType.ROLLOUT_PROMOTED: "info",
    EventType.ROLLOUT_SUPERSEDED: "warning",
    EventType.ROLLOUT_FAILED: "error",
    EventType.DRIFT_CORRECTED: "warning",
    EventType.SUSPENDED: "warning",
    EventType.SPEC_CHANGE_PENDING: "warning",
    EventType.PIN_REFUSED: "warning",
    EventType.SPEC_DECISION_REFUSED: "warning",
    EventType.HEALTH_FAILED: "error",
    EventType.AUTO_ROLLBACK: "error",
    EventType.RECONCILE_FAILED: "error",
    EventType.TAG_MOVED: "error",
    EventType.VERIFICATION_FAILED: "error",
}


class Event(Model):
    """Workflow-level record of something an operator cares about (also visible in history)."""

    at: str
    type: EventType
    message: str
    version: str = ""
    digest: str = ""
    by: str = ""
    objects: dict[str, list[str]] = Field(default_factory=dict, description="object ids, at most MAX_IDS per list")
    request_id: str = Field("", description="the promotion/rollback workflow a Pinned or PinRefused event answers")
    update_id: str = Field("", description="the Update that caused it (spec changes): the audit pairs its sender")

    @field_validator("objects")
    @classmethod
    def _bounded(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return cap_objects(value)
