"""Plans as models (PlanEntry in ReconcileResult.plan and PlanResult.changes) keep the wire shape they had as dicts:
what old histories carry decodes, and the same plan encodes to the same bytes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from ferry.reconcile import MAX_PLAN_ENTRIES, ChangeSet, HealthState, PlanEntry, PlanResult, ReconcileResult

HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"
CONVERTER = pydantic_data_converter.payload_converter


class DictPlanResult(ReconcileResult):
    """ReconcileResult as it was, with the plan as raw dicts (its caps, the serializer, are the same): the reference
    shape."""

    plan: list[dict[str, Any]] = Field(default_factory=list)  # type: ignore[assignment]


def _old_plan(n: int) -> list[dict[str, Any]]:
    return [
        {
            "object": f"Deployment/apps/w{i}",
            "action": "update" if i % 2 else "create",
            "fields": [f".spec.f{j}" for j in range(i % 70)],
        }
        for i in range(n)
    ] + [{"object": "ConfigMap/apps/gone", "action": "delete", "fields": []}]


def _bytes(value: object) -> bytes:
    return CONVERTER.to_payloads([value])[0].data


def test_an_old_shape_entry_decodes_and_dumps_as_it_was() -> None:
    for old in _old_plan(4):
        assert PlanEntry.model_validate(old).model_dump() == old
        wire = json.dumps(old, separators=(",", ":"))
        assert PlanEntry.model_validate_json(wire).model_dump_json() == wire


@pytest.mark.parametrize("n", [0, 1, 7, MAX_PLAN_ENTRIES, MAX_PLAN_ENTRIES + 50])
def test_a_reconcile_result_encodes_to_the_same_bytes_as_with_dicts(n: int) -> None:
    fields = {"changes": ChangeSet(unchanged=3), "health": HealthState(), "revision": "r", "plan": _old_plan(n)}
    old, new = DictPlanResult(**fields), ReconcileResult(**fields)
    assert _bytes(new) == _bytes(old)
    assert new.model_dump() == old.model_dump()
    # what a history carries (capped above MAX_PLAN_ENTRIES, with plan_total) decodes and encodes unchanged
    decoded = CONVERTER.from_payloads(CONVERTER.to_payloads([old]), [ReconcileResult])[0]
    assert _bytes(decoded) == _bytes(old)
    assert decoded.plan_total == (n + 1 if n + 1 > MAX_PLAN_ENTRIES else 0)


def test_a_plan_result_keeps_its_shape() -> None:
    changes = _old_plan(3)[:-1]
    result = PlanResult(version="1.0.0", digest="sha256:" + "0" * 64, changes=changes, prune=["ConfigMap/apps/gone"])
    assert result.model_dump()["changes"] == changes
    assert json.loads(result.model_dump_json())["changes"] == changes


def test_an_action_from_a_newer_worker_still_decodes() -> None:
    """A plan is an activity result: in a rolling upgrade an older workflow may read a newer worker's plan."""
    entry = PlanEntry.model_validate({"object": "ConfigMap/apps/x", "action": "replace", "fields": []})
    assert entry.action == "replace"
    assert entry.model_dump() == {"object": "ConfigMap/apps/x", "action": "replace", "fields": []}
    with pytest.raises(ValidationError):
        PlanEntry.model_validate({"object": "ConfigMap/apps/x", "action": 3, "fields": []})


def _payloads(node: object) -> Iterator[Any]:
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and "metadata" in node:
            try:
                yield json.loads(base64.b64decode(node["data"]))
            except ValueError:
                pass
        for value in node.values():
            yield from _payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payloads(value)


def test_the_plans_in_committed_histories_decode_unchanged() -> None:
    found = 0
    for path in sorted(HISTORIES.rglob("*.json")):
        for payload in _payloads(json.loads(path.read_text())):
            if isinstance(payload, dict) and payload.get("plan") and "health" in payload:
                result = ReconcileResult.model_validate(payload)
                assert result.model_dump(mode="json") == payload, path
                found += 1
    assert found >= 3  # health-rejudged, in each generation
