"""EventType: the events an environment records, named once; what a newer build records still decodes here."""

from __future__ import annotations

import ast
from pathlib import Path

from ferry.events import Event, EventType
from ferry.names import ENV_PREFIX
from ferry.spec import env_workflow_id

ROOT = Path(__file__).resolve().parents[2]


def test_every_recorded_type_is_an_event_type() -> None:
    """The environment workflow records only EventType members (no free strings left in `_record`)."""
    tree = ast.parse((ROOT / "workflows" / "environment.py").read_text())
    recorded = [node.args[0] for node in ast.walk(tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute) and node.func.attr == "_record"]
    assert recorded, "the workflow records events"
    names = {arg.attr for arg in recorded if isinstance(arg, ast.Attribute)
             and isinstance(arg.value, ast.Name) and arg.value.id == "EventType"}
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
