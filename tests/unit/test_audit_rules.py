"""The audit's pure rules (ferry/audit.py): whose runs count, the window, and the approver list in force."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from ferry.approvals import Statement, sign_statement
from ferry.audit import (
    APPROVE_SPEC,
    FERRY_WORKFLOW_TYPES,
    UPDATE_SPEC,
    SignedRecord,
    SpecTracker,
    exclusion,
    in_force_at,
    in_window,
    parse_time,
    run_origin,
    verify_against,
    window_query,
)
from ferry.sshsig import key_fingerprint

DIGEST = "sha256:" + "a" * 64
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_only_ferrys_types_on_ferrys_task_queue_are_ferrys_runs() -> None:
    assert "AlertRouterWorkflow" in FERRY_WORKFLOW_TYPES
    assert exclusion("PromotionWorkflow", "ferry", "ferry") == ""
    elsewhere = exclusion("PromotionWorkflow", "mallory-queue", "ferry")
    assert "'mallory-queue'" in elsewhere and "not Ferry's 'ferry'" in elsewhere
    assert "not one of Ferry's workflow types" in exclusion("MyWorkflow", "ferry", "ferry")


def test_how_an_environment_run_began() -> None:
    assert run_origin("prev-run", reset=False, earlier_run=True) == "continued"
    assert run_origin("", reset=False, earlier_run=True) == "replaced"
    assert run_origin("", reset=False, earlier_run=False) == "first"
    assert run_origin("prev-run", reset=True, earlier_run=True) == "reset"


def test_the_window_selects_runs_by_close_time_or_still_open_and_events_by_time() -> None:
    query = window_query(at(0))
    assert "CloseTime >= '2030-01-01T12:00:00Z' OR ExecutionStatus = 'Running'" in query
    assert "StartTime" not in query and "'AlertRouterWorkflow'" in query
    assert in_window(at(0), at(0)) and in_window(at(1), at(0)) and not in_window(at(-1), at(0))
    assert parse_time("2030-01-01T12:00:00.250Z") == at(0) + dt.timedelta(milliseconds=250)


def spec(approvers: list[object]) -> dict[str, object]:
    return {"name": "prd", "approval": {"required": True, "approvers": approvers}}


def test_the_spec_in_force_follows_applied_changes_never_pending_ones() -> None:
    tracker = SpecTracker()
    tracker.started(at(0), "run-1", {"spec": spec(["alice", "bob"])})
    # an approver change waits for approval: accepted, pending, not in force
    tracker.update_accepted("u1", UPDATE_SPEC, {"spec": spec(["alice", "mallory"]), "by": "mallory"})
    tracker.recorded(at(1), {"type": "SpecChangePending", "update_id": "u1"})
    assert [a.name for a in in_force_at(tracker.steps, at(2)).approval.approvers] == ["alice", "bob"]  # type: ignore[union-attr]
    # approved: in force from the approval's record on
    tracker.update_accepted("u2", APPROVE_SPEC, {"approver": "alice"})
    tracker.recorded(at(3), {"type": "SpecUpdated", "update_id": "u2"})
    assert in_force_at(tracker.steps, at(2)).approval.names == ["alice", "bob"]  # type: ignore[union-attr]
    assert in_force_at(tracker.steps, at(3)).approval.names == ["alice", "mallory"]  # type: ignore[union-attr]
    # an unprotected change applies at once; a rejected pending change never does
    tracker.update_accepted("u3", UPDATE_SPEC, {"spec": spec(["carol"])})
    tracker.recorded(at(4), {"type": "SpecUpdated", "update_id": "u3"})
    tracker.update_accepted("u4", UPDATE_SPEC, {"spec": spec(["dave"])})
    tracker.recorded(at(5), {"type": "SpecChangePending", "update_id": "u4"})
    tracker.recorded(at(6), {"type": "SpecChangeRejected", "update_id": "u5"})
    tracker.update_accepted("u6", APPROVE_SPEC, {})
    tracker.recorded(at(7), {"type": "SpecUpdated", "update_id": "u6"})  # nothing pending: an unreadable spec
    assert in_force_at(tracker.steps, at(6)).approval.names == ["carol"]  # type: ignore[union-attr]
    assert in_force_at(tracker.steps, at(7)).approval is None  # type: ignore[union-attr]
    assert in_force_at(tracker.steps, at(-1)) is None
    # a continue-as-new carries the spec (and a pending change) on
    tracker.started(at(8), "run-2", {"spec": spec(["erin"]), "pending_spec": {"spec": spec(["frank"])}})
    tracker.update_accepted("u7", APPROVE_SPEC, {})
    tracker.recorded(at(9), {"type": "SpecUpdated", "update_id": "u7"})
    assert in_force_at(tracker.steps, at(8)).approval.names == ["erin"]  # type: ignore[union-attr]
    assert in_force_at(tracker.steps, at(9)).approval.names == ["frank"]  # type: ignore[union-attr]


def keypair(tmp: Path, name: str) -> tuple[bytes, str]:
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_bytes(), Path(f"{path}.pub").read_text().strip()


def test_a_signature_counts_only_by_a_key_listed_then(tmp_path: Path) -> None:
    bob_private, bob_public = keypair(tmp_path, "bob")
    _, other_public = keypair(tmp_path, "other")
    statement = Statement(
        environment="prd",
        version="1.1.0",
        digest=DIGEST,
        promotion="promote/prd/1.1.0",
        run="run-1",
        decision="approve",
        approver="bob",
        comment="",
        expires="2031-01-01T00:00:00Z",
    )
    proof = sign_statement(statement, bob_private)
    fingerprint = key_fingerprint(bob_public)
    signed = SignedRecord(
        workflow_id="promote/prd/1.1.0",
        run_id="run-1",
        started={"environment": "prd", "version": "1.1.0"},
        at="2030-01-01T12:05:00.000Z",
        record={"action": "approve", "by": "bob", "verified": True, "fingerprint": fingerprint},
        payload={"approver": "bob", "statement": proof.statement, "signature": proof.signature},
    )
    tracker = SpecTracker()
    tracker.started(at(0), "env-run-1", {"spec": spec([{"name": "bob", "key": bob_public}])})
    # bob's key is removed after the decision: it still counts (it was listed then)
    tracker.update_accepted("u1", UPDATE_SPEC, {"spec": spec([{"name": "bob", "key": other_public}])})
    tracker.recorded(at(10), {"type": "SpecUpdated", "update_id": "u1"})
    assert verify_against(signed, in_force_at(tracker.steps, at(5))) == ""
    # decided after the removal: not verified, and the report names the signing key
    later = signed.model_copy(update={"at": "2030-01-01T12:11:00.000Z"})
    problem = verify_against(later, in_force_at(tracker.steps, at(11)))
    assert problem.startswith("not verified against prd's approvers") and fingerprint in problem, problem
    assert "cannot be told" in verify_against(signed, None)
