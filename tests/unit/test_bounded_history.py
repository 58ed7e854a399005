"""What enters history stays small whatever the bundle's size: ids are capped, true counts kept."""

from __future__ import annotations

from ferry.bounded import MAX_IDS, MAX_RECORD_CHARS, cap_ids, cap_objects
from ferry.events import Event
from ferry.reconcile import ChangeSet, ReconcileResult

IDS = [f"ConfigMap/team/config-{i}" for i in range(20_000)]


def test_a_20000_object_change_set_serializes_small_and_keeps_its_counts() -> None:
    changes = ChangeSet(created=list(IDS), updated=IDS[:3], drift={oid: ["data.key"] for oid in IDS})
    payload = changes.model_dump_json()
    assert len(payload) < 16 * 1024, len(payload)
    back = ChangeSet.model_validate_json(payload)
    assert back.summary() == "20000 created, 3 updated, 0 deleted, 0 unchanged" and back.changed
    assert len(back.created) == MAX_IDS + 1 and back.created[-1] == "... and 19950 more"
    assert back.count("drift") == 20_000 and len(back.drift) == MAX_IDS + 1
    assert ChangeSet.model_validate_json(back.model_dump_json()) == back  # capping twice changes nothing


def test_events_carry_at_most_max_ids_per_list() -> None:
    event = Event(at="2026-11-30T00:00:00Z", type="Applied", message="m", objects={"created": IDS})
    assert len(event.objects["created"]) == MAX_IDS + 1 and len(event.model_dump_json()) < 4 * 1024


def test_dry_run_plans_are_capped_in_history() -> None:
    plan = [{"object": oid, "action": "create", "fields": [f"f{j}" for j in range(100)]} for oid in IDS]
    result = ReconcileResult.model_validate({"changes": {}, "health": {}, "plan": plan})
    payload = result.model_dump_json()
    assert len(payload) < 256 * 1024, len(payload)
    assert ReconcileResult.model_validate_json(payload).plan_total == 20_000


def test_caps_are_exact_and_idempotent() -> None:
    assert cap_ids(["a", "b"], 2) == ["a", "b"]
    assert cap_ids(["a", "b", "c"], 2) == ["a", "b", "... and 1 more"]
    assert cap_ids(cap_ids(["a", "b", "c"], 2), 2) == ["a", "b", "... and 1 more"]
    capped = cap_objects({f"k{i}": ["x"] for i in range(5)}, 2)
    assert list(capped) == ["k0", "k1", "... and 3 more"]
    assert cap_objects(capped, 2) == capped


def test_a_drift_record_of_long_names_stays_within_its_characters_and_counts_the_rest() -> None:
    """1,000 objects with 200-character names drifting on 10 fields of 240 characters each: the entry caps alone
    (200 entries of 256) let one event reach ~51 KB, and 50 kept events 2.5 MB of continue-as-new input."""
    drift = {f"ConfigMap/team/{'n' * 200}-{i}": [f"data.{'k' * 240}-{j}" for j in range(10)] for i in range(1000)}
    capped = cap_objects(drift)
    entries = [k for k in capped if not k.startswith("...")] + [
        i for items in capped.values() for i in items if not i.startswith("...")
    ]
    assert sum(len(e) for e in entries) <= MAX_RECORD_CHARS
    more = sum(int(k.split()[2]) for k in capped if k.startswith("... and "))
    assert len([k for k in capped if not k.startswith("...")]) + more == 1000  # every object kept or counted
    assert cap_objects(capped) == capped
    event = Event(at="2026-11-30T00:00:00Z", type="DriftReverted", message="m", objects=drift)
    assert len(event.model_dump_json()) < 4 * 1024
    assert cap_ids(["x" * 100] * 30, chars=250) == ["x" * 100, "x" * 100, "... and 28 more"]
