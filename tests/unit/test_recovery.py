"""A run that replaces the last one recovers the last run's safety record (ferry/recovery.py): nothing a starter
writes removes a hold, a used approval or a known-good fact, and an approval-required environment keeps its spec
until a signed approval of the difference."""

from __future__ import annotations

from typing import Any

from ferry.environment import EnvironmentState, Pin
from ferry.reconcile import VersionRef
from ferry.recovery import MAX_RECORD_TAGS, EnvironmentRecord, record_of, recover
from ferry.spec import EnvironmentSpec

GOOD = VersionRef(version="1.0.0", digest="sha256:" + "1" * 64)
HELD = "sha256:" + "2" * 64
NOW = "2026-12-07T00:00:00Z"


def _spec(**kw: Any) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "production", "repository": "registry.local/team/shop", "version": "1.0.0", **kw}
    )


GATED = {"approval": {"required": True, "approvers": ["alice"]}}


def _record(spec: EnvironmentSpec) -> EnvironmentRecord:
    return record_of(
        EnvironmentState(
            spec=spec,
            holds=["1.1.0"],
            good_history=[GOOD],
            last_known_good=GOOD,
            tags={"1.1.0": HELD},
            consumed_approvals=["promote/production/1.1.0@0c7b0a4e-8a0b-4c55-9d0e-2f6b3c1d5e7f"],
            pin=Pin(version="1.0.0", digest=GOOD.digest, by="bob", kind="rollback", at=NOW),
        )
    )


def test_no_last_run_starts_as_written() -> None:
    start = EnvironmentState(spec=_spec())
    assert recover(start, None, now=NOW, pending_id="spec-1", by="x") == (start, [])


def test_a_start_that_switches_approval_off_keeps_the_spec_in_force_and_waits_for_a_signed_approval() -> None:
    record = _record(_spec(**GATED))
    forged = EnvironmentState(
        spec=_spec(version="1.1.0"),
        good_history=[VersionRef(version="1.1.0", digest=HELD)],
        verified={HELD: "ci-main"},
        holds=[],
        consumed_approvals=[],
    )
    state, notes = recover(forged, record, now=NOW, pending_id="spec-abc", by="a new run")
    assert state.spec == record.spec and state.spec.approval.required
    assert state.pending_spec is not None and state.pending_spec.spec == forged.spec
    assert state.pending_spec.id == "spec-abc" and any(c.startswith("approval") for c in state.pending_spec.changes)
    assert state.holds == ["1.1.0"] and state.consumed_approvals == record.consumed_approvals
    assert state.good_history == [GOOD] and state.verified == {} and state.tags == {"1.1.0": HELD}
    assert state.pin == record.pin and "waits for a signed approval" in notes[-1]


def test_an_unchanged_start_of_an_approval_required_environment_takes_its_record_and_nothing_pends() -> None:
    record = _record(_spec(**GATED))
    state, _ = recover(EnvironmentState(spec=_spec(**GATED)), record, now=NOW, pending_id="spec-1", by="x")
    assert state.pending_spec is None and state.holds == ["1.1.0"] and state.pin == record.pin


def test_without_required_approval_the_start_s_spec_is_taken_and_the_record_merged() -> None:
    record = _record(_spec())
    start = EnvironmentState(spec=_spec(version="1.2.0"), holds=["0.9.0"])
    state, _ = recover(start, record, now=NOW, pending_id="spec-1", by="x")
    assert state.spec.version == "1.2.0" and state.holds == ["1.1.0", "0.9.0"] and state.good_history == [GOOD]


def test_another_repository_starts_unheld_and_unbound() -> None:
    record = _record(_spec())
    state, _ = recover(
        EnvironmentState(spec=_spec(repository="registry.local/team/other")),
        record,
        now=NOW,
        pending_id="spec-1",
        by="x",
    )
    assert state.holds == [] and state.tags == {} and state.consumed_approvals == record.consumed_approvals


def test_the_record_is_small_and_never_names_an_unconfirmed_pin() -> None:
    before = Pin(version="1.0.0", digest=GOOD.digest, by="bob", kind="rollback", at=NOW)
    state = EnvironmentState(
        spec=_spec(),
        tags={f"1.0.{i}": HELD for i in range(200)},
        pin=Pin(version="1.1.0", digest=HELD, by="mallory", kind="manual", at=NOW, confirm=True),
        pin_before=before,
    )
    record = record_of(state)
    assert record.pin == before and len(record.tags) == MAX_RECORD_TAGS and "1.0.199" in record.tags
    assert len(record.model_dump_json()) < 8 * 1024


def test_a_start_on_another_repository_keeps_an_approval_required_environment_s_holds_and_bindings() -> None:
    """The record's repository stays in force (the change waits for an approval), so its holds and tag bindings
    apply; the starter's binding of 1.1.0 to another artifact is not taken."""
    record = _record(_spec(**GATED))
    forged = EnvironmentState(
        spec=_spec(**GATED, repository="registry.local/mallory/shop"), tags={"1.1.0": "sha256:" + "3" * 64}
    )
    state, _ = recover(forged, record, now=NOW, pending_id="spec-1", by="x")
    assert state.spec.repository == "registry.local/team/shop" and state.pending_spec is not None
    assert state.holds == ["1.1.0"] and state.tags == {"1.1.0": HELD}


def test_the_record_reader_finds_the_patch_markers_the_sdk_writes() -> None:
    """last_record tells a run of this code that never wrote its record (passed over) from an older build's run
    by the patch marker in its history, under the key the SDK writes (a misspelt key made every run an old one)."""
    import json
    from pathlib import Path

    from google.protobuf.json_format import ParseDict
    from temporalio.api.history.v1 import HistoryEvent

    from activities.environments import _patch_id
    from ferry.recovery import RECORD_MARKERS

    path = Path(__file__).parents[1] / "replay" / "histories" / "baseline-3" / "signed" / "environment.json"
    events = [ParseDict(e, HistoryEvent(), ignore_unknown_fields=True) for e in json.loads(path.read_text())["events"]]
    assert [i for i in (_patch_id(e) for e in events) if i] == [RECORD_MARKERS[0]]
    assert _patch_id(events[0]) == ""
