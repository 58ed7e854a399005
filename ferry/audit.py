"""The audit's rules: which runs are Ferry's, which approver list was in force when a decision was recorded, which
runs and events a `--since` window holds, and what a recorded signed decision proves.

Pure: no I/O, no clock (the caller passes "now" as a cutoff), no Temporal types. `cli/audit.py` reads histories and
Visibility and asks these questions; every answer here is a value a unit test can check.

NB: a workflow type is a name anyone can register on any task queue. A run is Ferry's only when it is one of Ferry's
workflow types *and* ran on Ferry's task queue (the one Ferry's workers poll): a `PromotionWorkflow` started on an
attacker's own queue is served by the attacker's own code, and whatever it records (memo, result) is the attacker's
word. Such a run is listed as excluded, never read as a decision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from ferry.approvals import SignedDecision, Statement, verify_decision
from ferry.events import EventType
from ferry.names import (
    ALERT_ROUTER_WORKFLOW,
    ENVIRONMENT_WORKFLOW,
    PROMOTION_WORKFLOW,
    RELEASE_WORKFLOW,
    ROLLBACK_WORKFLOW,
    ROLLOUT_WORKFLOW,
)
from ferry.spec import ApprovalPolicy
from ferry.sshsig import ApprovalError, ApproverKey, signature_public_key

FERRY_WORKFLOW_TYPES: Final = (
    RELEASE_WORKFLOW,
    ENVIRONMENT_WORKFLOW,
    PROMOTION_WORKFLOW,
    ROLLBACK_WORKFLOW,
    ALERT_ROUTER_WORKFLOW,
    ROLLOUT_WORKFLOW,
)

UPDATE_SPEC: Final = "update_spec"  # the Update that replaces an environment's spec (ferry env apply)
APPROVE_SPEC: Final = "approve_spec"  # the Update that applies the pending protected change
RESET_CAUSE: Final = "RESET_WORKFLOW"  # WorkflowTaskFailed cause a reset writes into the new run
MAX_SHOWN: Final = 200  # characters of a hostile string (a signal name, a reason) the timeline shows
CANCEL_REQUEST: Final = "cancel request"  # the `by` an environment records for a cancel request it turned into suspend

VISIBILITY_TIME = "%Y-%m-%dT%H:%M:%SZ"


# ------------------------------------------------------------------------------------------------ whose run ---


def exclusion(workflow_type: str, task_queue: str, ferry_queue: str) -> str:
    """'' when Ferry's workers served this run; otherwise why the audit lists it as excluded (one line)."""
    if workflow_type not in FERRY_WORKFLOW_TYPES:
        return f"{workflow_type[:MAX_SHOWN]!r} is not one of Ferry's workflow types"
    if task_queue != ferry_queue:
        return (
            f"{workflow_type} on task queue {task_queue[:MAX_SHOWN]!r}, not Ferry's {ferry_queue!r}: another "
            "worker served it, so nothing it recorded is a Ferry decision"
        )
    return ""


def run_origin(continued_from: str, reset: bool, earlier_run: bool) -> str:
    """How an environment run began: 'continued' (continue-as-new of the previous run), 'reset' (a reset made it),
    'replaced' (a new run started while or after another one of the same id existed), or 'first'."""
    if reset:
        return "reset"
    if continued_from:
        return "continued"
    return "replaced" if earlier_run else "first"


# ---------------------------------------------------------------------------------------------- the window ---


def visibility_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime(VISIBILITY_TIME)


def window_query(cutoff: dt.datetime, types: tuple[str, ...] = FERRY_WORKFLOW_TYPES) -> str:
    """The Visibility query for runs that may hold an event at or after `cutoff`: closed since then, or still open
    (an environment run started a week ago holds today's suspend). Never by start time."""
    names = ", ".join(f"'{t}'" for t in types)
    return f"WorkflowType IN ({names}) AND (CloseTime >= '{visibility_time(cutoff)}' OR ExecutionStatus = 'Running')"


def in_window(at: dt.datetime, cutoff: dt.datetime) -> bool:
    return at >= cutoff


def parse_time(text: str) -> dt.datetime:
    """An entry's or record's time (ISO 8601, `Z` or an offset) as an aware datetime; ValueError if it is not one."""
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# ----------------------------------------------------------------------------------- the spec in force ---


class SpecInForce(BaseModel):
    """An environment's approval policy from `since` on, and where the audit read it (for the report)."""

    since: dt.datetime
    approval: ApprovalPolicy | None = None  # None: the history carries a spec change the audit cannot read
    source: str


@dataclass
class SpecTracker:
    """An environment's approval policy through its own history, fed event by event (every run, oldest first).

    What changes the spec (workflows/environment.py): a run's start input (first run, continue-as-new, a
    replacement); an `update_spec` Update whose change is applied at once (a `SpecUpdated` record with its update
    id); a protected change that waits (`SpecChangePending`) until an `approve_spec` Update applies it (a
    `SpecUpdated` record with that Update's id). NB: an accepted `update_spec` is not yet in force when its change
    is pending: counting it would let an unapproved change of approvers vouch for a decision."""

    steps: list[SpecInForce] = field(default_factory=list)
    _updates: dict[str, tuple[str, Any]] = field(default_factory=dict)  # update id -> (name, spec payload)
    _pending: Any = None

    def started(self, at: dt.datetime, run_id: str, state: Any) -> None:
        spec = state.get("spec") if isinstance(state, dict) else None
        self._pending = (
            state.get("pending_spec", {}).get("spec")
            if isinstance(state, dict) and isinstance(state.get("pending_spec"), dict)
            else None
        )
        self._step(at, spec, f"the start input of run {run_id}")

    def update_accepted(self, update_id: str, name: str, payload: Any) -> None:
        spec = payload.get("spec") if isinstance(payload, dict) else None
        self._updates[update_id] = (name, spec)

    def recorded(self, at: dt.datetime, event: dict[str, Any]) -> None:
        kind, update_id = event.get("type"), str(event.get("update_id") or "")
        name, spec = self._updates.get(update_id, ("", None))
        if kind == EventType.SPEC_CHANGE_PENDING:
            self._pending = spec if name == UPDATE_SPEC else None
        elif kind == EventType.SPEC_CHANGE_REJECTED:
            self._pending = None
        elif kind == EventType.SPEC_UPDATED:
            if name == UPDATE_SPEC:
                self._step(at, spec, f"update_spec {update_id}")
            elif name == APPROVE_SPEC:
                self._step(at, self._pending, f"the pending change approved by Update {update_id}")
                self._pending = None
            else:
                self._step(at, None, f"a spec change whose Update ({update_id or 'none recorded'}) is not in history")

    def _step(self, at: dt.datetime, spec: Any, source: str) -> None:
        approval = None
        if isinstance(spec, dict):
            try:
                approval = ApprovalPolicy.model_validate(spec.get("approval") or {})
            except ValidationError:
                approval = None
        self.steps.append(SpecInForce(since=at, approval=approval, source=source))


def in_force_at(steps: list[SpecInForce], at: dt.datetime) -> SpecInForce | None:
    """The spec change in force at `at`: the last one at or before it (None: the history holds none that early)."""
    before = [s for s in steps if s.since <= at]
    return max(before, key=lambda s: s.since) if before else None


# ---------------------------------------------------------------------------------- a signed decision ---


class SignedRecord(BaseModel):
    """A decision recorded as verified, with the payload that carried it: what `--verify` re-checks offline."""

    workflow_id: str
    run_id: str
    started: dict[str, Any]
    record: dict[str, Any]
    payload: Any = None
    at: str = ""  # the history event that recorded it (server time)


def verify_record(signed: SignedRecord) -> str:
    """What the signature proves by itself: the SSH signature over its statement with the key embedded in the
    signature, that key's fingerprint against the one recorded, and the statement's bindings against the workflow
    that recorded it. -> '' or what does not hold. Not whose key it is: :func:`verify_against` adds that."""
    record, payload = signed.record, signed.payload
    if not isinstance(payload, dict) or not payload.get("statement") or not payload.get("signature"):
        return "recorded as verified, but its payload carries no signed statement"
    try:
        proof = SignedDecision(statement=payload["statement"], signature=payload["signature"])
        key = signature_public_key(proof.signature)
        verified = verify_decision(proof, [ApproverKey(name=Statement.parse(proof.statement).approver, key=key)])
    except (ApprovalError, ValueError) as err:
        return f"signature does not verify: {err}"
    st = verified.statement
    checks = {
        "fingerprint": (verified.fingerprint, record.get("fingerprint")),
        "approver": (verified.approver, record.get("by")),
        "decision": (st.decision, record.get("action")),
        "promotion": (st.promotion, signed.workflow_id),
        "run": (st.run, signed.run_id),
    }
    if signed.started.get("environment"):
        checks["environment"] = (st.environment, signed.started["environment"])
        checks["version"] = (st.version, signed.started.get("version"))
    wrong = [f"{name} {got!r} != recorded {want!r}" for name, (got, want) in checks.items() if got != want]
    return "; ".join(wrong)


def verify_against(signed: SignedRecord, in_force: SpecInForce | None) -> str:
    """:func:`verify_record`, and the signing key listed under the statement's approver in the environment's spec
    in force when the decision was recorded. -> '' or what does not hold, naming the key's fingerprint."""
    problem = verify_record(signed)
    if problem:
        return problem
    environment = signed.started.get("environment", "?")
    if in_force is None:
        return (
            f"no spec of {environment} in force at {signed.at or '?'} found in its history: whose keys were "
            "listed then cannot be told"
        )
    if in_force.approval is None:
        return f"the spec of {environment} in force at {signed.at or '?'} ({in_force.source}) cannot be read"
    payload = signed.payload
    try:
        verify_decision(
            SignedDecision(statement=payload["statement"], signature=payload["signature"]), in_force.approval.keys()
        )
    except ApprovalError as err:
        return (
            f"not verified against {environment}'s approvers in force at {signed.at or '?'} "
            f"(from {in_force.source}): {err.reason}"
        )
    return ""
