"""EventType: the events an environment records, named once; what a newer build records still decodes here."""

from __future__ import annotations

import ast
from pathlib import Path

from ferry.alerts import EVENT_SEVERITY, RESOLVED_BY_RECOVERY, severity_of
from ferry.events import _SEVERITY, Event, EventType
from ferry.names import ENV_PREFIX
from ferry.spec import env_workflow_id

ROOT = Path(__file__).resolve().parents[2]


def test_every_recorded_type_is_an_event_type() -> None:
    """The environment workflow records only EventType members (no free strings left in `_record`)."""
    tree = ast.parse((ROOT / "workflows" / "environment.py").read_text())
    recorded = [
        node.args[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_record"
    ]
    assert recorded, "the workflow records events"
    names = {
        arg.attr
        for arg in recorded
        if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "EventType"
    }
    assert len(names) == len({ast.dump(a) for a in recorded}), "every _record() names an EventType member"
    assert names <= set(EventType.__members__)


def test_serialized_as_its_text_and_an_unknown_type_decodes() -> None:
    event = Event(at="2026-01-01T00:00:00Z", type=EventType.DRIFT_CORRECTED, message="m")
    assert event.model_dump(mode="json")["type"] == "DriftCorrected"
    newer = Event.model_validate({"at": "2026-01-01T00:00:00Z", "type": "SomethingNewer", "message": "m"})
    assert newer.type == "SomethingNewer" and newer.model_dump(mode="json")["type"] == "SomethingNewer"
    assert newer.type not in list(EventType), "a newer build's type is not made a member here"


def test_audit_words() -> None:
    assert EventType.DRIFT_CORRECTED.words == "drift corrected"
    assert EventType.AUTO_ROLLBACK.words == "rollback (automatic)"
    assert EventType.SPEC_DECISION_REFUSED.words == "spec decision refused"
    assert EventType("SomethingNewer").words == "SomethingNewer", "an unknown type is shown as recorded"


def test_environment_ids_use_the_prefix() -> None:
    assert env_workflow_id("staging") == f"{ENV_PREFIX}staging" == "env/staging"


# The severities as ferry.alerts spelled them before event types carried their own: nothing may change.
OLD_EVENT_SEVERITY = {
    "ReleasePublished": "info",
    "Applied": "info",
    "Healthy": "info",
    "Recovered": "info",
    "Pinned": "info",
    "PinReleased": "info",
    "SpecUpdated": "info",
    "Resumed": "info",
    "SpecChangeRejected": "info",
    "RecordRecovered": "info",
    "DriftCorrected": "warning",
    "Suspended": "warning",
    "SpecChangePending": "warning",
    "PinRefused": "warning",
    "SpecDecisionRefused": "warning",
    "HealthFailed": "error",
    "AutoRollback": "error",
    "ReconcileFailed": "error",
    "TagMoved": "error",
    "VerificationFailed": "error",
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
    "RollbackSucceeded": "info",
    "RollbackSuperseded": "info",
    "RollbackRefused": "warning",
    "RollbackFailed": "error",
}


def test_every_event_type_carries_its_severity() -> None:
    assert set(_SEVERITY) == set(EventType), "each member has exactly one severity, and no key is a stray string"
    assert all(isinstance(key, EventType) and key.name in EventType.__members__ for key in _SEVERITY)
    assert EventType.HEALTH_FAILED.severity == "error" and EventType.DRIFT_CORRECTED.severity == "warning"
    assert EventType("SomethingNewer").severity == "info", "a newer build's type is info, as before"


# step 19's progressive rollouts add these; every older type keeps its severity
ROLLOUT_EVENT_SEVERITY = {
    "RolloutStarted": "info",
    "RolloutPromoted": "info",
    "RolloutSuperseded": "warning",
    "RolloutFailed": "error",
}


def test_the_severities_are_the_old_tables() -> None:
    assert EVENT_SEVERITY == {**OLD_EVENT_SEVERITY, **ROLLOUT_EVENT_SEVERITY}
    assert sorted(EVENT_SEVERITY) == sorted({**OLD_EVENT_SEVERITY, **ROLLOUT_EVENT_SEVERITY})
    for name, severity in OLD_EVENT_SEVERITY.items():
        assert severity_of(name) == severity
    assert severity_of("SomethingNewer") == "info"
    assert RESOLVED_BY_RECOVERY == ("HealthFailed", "AutoRollback", "ReconcileFailed", "VerificationFailed", "TagMoved")
    assert all(type(t) is str for t in RESOLVED_BY_RECOVERY), "plain text on the wire, as before"
