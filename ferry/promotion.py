"""PromotionWorkflow and RollbackWorkflow vocabulary, and the approval policy as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ferry.approvals import ApprovalError, SignedDecision, verify_decision
from ferry.environment import MAX_NAME, MAX_REASON, ApprovalPolicy
from ferry.model import Model
from ferry.names import PROMOTE_PREFIX, ROLLBACK_PREFIX
from ferry.sshsig import key_fingerprint

MAX_STATEMENT = 4096
MAX_DECISIONS_KEPT = 50  # a flood of refused decisions must not grow the status without bound
MAX_SIGNATURE = 8192


_Model = Model  # NB: the one base (ferry/model.py): unknown fields from a newer worker are ignored


def promotion_workflow_id(environment: str, version: str) -> str:
    return f"{PROMOTE_PREFIX}{environment}/{version}"


def rollback_workflow_id(environment: str, target: str) -> str:
    return f"{ROLLBACK_PREFIX}{environment}/{target}"


class PromotionInput(_Model):
    environment: str
    version: str
    requested_by: str
    reason: str = ""


class DecisionSignal(BaseModel):
    """What an SRE sends: `{"approver": "alice", "comment": "looks good"}`, plus for signed approvals the canonical
    `statement` and its SSH `signature` (`ferry approve --key` builds them). version/digest are optional guards.
    Every field is bounded: an oversized decision is refused on the record, never stored."""

    model_config = ConfigDict(extra="ignore")

    approver: str = Field("", max_length=MAX_NAME)
    comment: str = Field("", max_length=MAX_REASON)
    version: str | None = Field(None, max_length=MAX_NAME)
    digest: str | None = Field(None, max_length=MAX_NAME)
    statement: str | None = Field(None, max_length=MAX_STATEMENT)
    signature: str | None = Field(None, max_length=MAX_SIGNATURE)

    @field_validator("approver")
    @classmethod
    def _approver(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _someone(self) -> DecisionSignal:
        if not self.approver and not self.statement:
            raise ValueError("approver: Field required (a name, or a signed statement)")
        return self


class Decision(_Model):
    at: str
    action: Literal["approve", "reject"]
    by: str
    accepted: bool
    reason: str = ""
    comment: str = ""
    via: Literal["signal", "update"] = "signal"
    verified: bool = Field(False, description="an SSH signature proved `by`; otherwise `by` is a claim")
    fingerprint: str = Field("", description="the approver key's SHA256 fingerprint, when verified")
    update_id: str = Field("", description="the Update this record answers (audit pairs senders by it)")


Outcome = Literal["succeeded", "failed", "rejected", "expired", "refused", "superseded"]
Phase = Literal["Resolving", "Refused", "AwaitingApproval", "Pinned", "Succeeded", "Failed", "Rejected", "Expired",
                "Superseded", "Cancelled"]


class PromotionStatus(_Model):
    environment: str
    version: str
    digest: str = ""
    publisher: str = ""
    requested_by: str
    phase: Phase = "Resolving"
    decisions: list[Decision] = Field(default_factory=list, description="the most recent MAX_DECISIONS_KEPT")
    deadline: str = ""
    approvers: list[str] = Field(default_factory=list, description="who may approve (the publisher may not)")
    signed: bool = Field(False, description="decisions must be SSH-signed statements")


class PromotionResult(_Model):
    outcome: Outcome
    environment: str
    version: str
    digest: str = ""
    publisher: str = ""
    approved_by: list[str] = Field(default_factory=list)
    reason: str = ""
    auto_rolled_back: bool = False
    decisions: list[Decision] = Field(default_factory=list)


class DecisionResult(_Model):
    accepted: bool
    reason: str = ""
    phase: Phase


class RollbackInput(_Model):
    environment: str
    to_version: str | None = None
    requested_by: str
    reason: str = ""


class RollbackResult(_Model):
    outcome: Outcome
    environment: str
    from_version: str = ""
    to_version: str = ""
    digest: str = ""
    reason: str = ""


class EnvironmentStatusInput(_Model):
    environment: str


class ConfirmPinInput(_Model):
    """What an approval-required environment checks before it applies a promotion's pin (activity confirm_pin)."""

    environment: str
    request_id: str = Field(description="workflow id@run id the pin claims to come from")
    version: str
    digest: str
    requires_healthy_in: list[str] = Field(default_factory=list)


class ConfirmPinResult(_Model):
    refusal: str = Field("", description="why the pin is not applied; empty: confirmed")




def promotion_refusal(status: PromotionStatus, environment: str, digest: str) -> str:
    """'' when a promotion run's own status vouches for a pin of `digest` to `environment`: it is that promotion,
    an approval was accepted, and it has not ended otherwise (a refused or expired promotion's approval is spent)."""
    if status.environment != environment or status.digest != digest:
        return (f"that promotion is of {status.digest or '?'} to {status.environment}, not of {digest} to "
                f"{environment}")
    if not any(d.action == "approve" and d.accepted for d in status.decisions):
        return "that promotion accepted no approval"
    if status.phase not in ("AwaitingApproval", "Pinned"):
        return f"that promotion is {status.phase}: its approval moves nothing any more"
    return ""


def healthy_in_refusal(other: str, state: Any, version: str, digest: str) -> str:
    """'' when `digest` was applied and healthy in environment `other` (its EnvironmentState) and has not failed
    there since: the requires-healthy-in rule, for the promotion and for the environment itself."""
    if not any(ref.digest == digest for ref in state.good_history):
        return f"{version} ({digest}) has not been applied and healthy in {other}"
    if version in state.holds or (state.health.digest == digest and state.health.status == "Failed"):
        return f"{version} ({digest}) has failed in {other} since it was healthy there"
    return ""


class DecisionContext(_Model):
    """What a decision must be about: the promotion (or protected spec change) being decided."""

    environment: str
    version: str
    digest: str
    publisher: str = ""
    promotion: str = Field(description="workflow id the statement must name")
    run: str = Field(description="run id the statement must name")
    publisher_may_not: str = Field("published this release and may not approve its promotion",
                                   description="why the publisher (or requester) may not approve, in words")


class Judgement(_Model):
    decision: DecisionSignal | None = None
    approver: str = ""
    refusal: str = ""
    fingerprint: str = ""

    @property
    def verified(self) -> bool:
        return bool(self.fingerprint)


def same_name(a: str, b: str) -> bool:
    """People's names compare case-insensitively (`Sre-Bob` is `sre-bob`): segregation of duties must not hinge
    on how someone capitalised theirs."""
    return a.casefold() == b.casefold()


def _signed(policy: ApprovalPolicy, ctx: DecisionContext, decision: DecisionSignal, action: str, now: datetime,
            hardened: bool) -> tuple[str, str, str]:
    """-> (approver, fingerprint, refusal) for a signed decision; every binding is checked against ctx."""
    if not decision.statement or not decision.signature:
        return decision.approver, "", (f"unsigned {action}: {ctx.environment} requires signed approvals "
                                       "(ferry approve --key ~/.ssh/id_ed25519)")
    try:
        verified = verify_decision(SignedDecision(statement=decision.statement, signature=decision.signature),
                                   policy.keys())
    except ApprovalError as err:
        return decision.approver, "", str(err)
    except Exception as err:  # NB: hostile bytes must be refused on the record, never fail the workflow task
        return decision.approver, "", f"signature could not be checked ({type(err).__name__})"
    st = verified.statement
    who, fp = verified.approver, verified.fingerprint
    if decision.approver and (not same_name(decision.approver, who) if hardened else decision.approver != who):
        return who, "", f"the payload names {decision.approver} but the statement is signed by {who}"
    expected = {"environment": ctx.environment, "version": ctx.version, "digest": ctx.digest,
                "promotion": ctx.promotion, "run": ctx.run, "decision": action}
    for field, want in expected.items():
        got = getattr(st, field)
        if got != want:
            return who, "", f"the signed statement is for {field} {got}, not {want}"
    if _timestamp(st.expires) <= now:
        return who, "", f"the signed statement expired at {st.expires}"
    if hardened and _timestamp(st.expires) > now + policy.lifetime:
        return who, "", (f"the signed statement expires at {st.expires}, more than {_hours(policy.lifetime)} from "
                         f"now (max-approval-lifetime): sign one that expires sooner")
    named = same_name if hardened else str.__eq__
    if action == "approve" and ctx.publisher and any(
            named(k.name, ctx.publisher) and key_fingerprint(k.key) == fp for k in policy.keys()):
        return who, "", (f"key {fp} belongs to {ctx.publisher}, who {ctx.publisher_may_not}" if hardened
                         else f"key {fp} belongs to {ctx.publisher}, who published this release")
    return who, fp, ""


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def _timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def judge(policy: ApprovalPolicy, ctx: DecisionContext, raw: Any, action: str, now: datetime,
          hardened: bool = True) -> Judgement:
    """The approval rules, whichever way a decision arrives (signal, update, a pin's attached approvals).
    Pure: `now` is the workflow's clock. Signed policies verify the SSH signature and bind the statement to this
    environment, version, digest, promotion run and decision; unsigned ones trust the typed name (a claim).
    `hardened` (step 15; workflows pass workflow.patched(GATE_HARDENED), so runs from before decide as they did):
    names compare case-insensitively and a statement may expire at most the policy's lifetime from now."""
    try:
        decision = DecisionSignal.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"{p}: " for p in first["loc"][:1]) or ("" if isinstance(raw, dict) else "payload: ")
        message = str(first["msg"]).removeprefix("Value error, ")
        return Judgement(refusal=f'malformed {action}: {where}{message} (expected {{"approver": "name", "comment": '
                                 '"...", "statement": "...", "signature": "..."})')
    fingerprint = ""
    if policy.is_signed:
        approver, fingerprint, refusal = _signed(policy, ctx, decision, action, now, hardened)
        if refusal:
            return Judgement(decision=decision, approver=approver, refusal=refusal)
    else:
        approver = decision.approver
        listed = [n for n in policy.names if same_name(n, approver)] if hardened else [approver]
        approver = listed[0] if listed else approver
        if approver not in policy.names:
            return Judgement(decision=decision, approver=approver, refusal=f"{approver} is not an approver of this "
                             f"environment ({', '.join(policy.names)})")
    if action == "approve" and (same_name(approver, ctx.publisher) if hardened else approver == ctx.publisher):
        return Judgement(decision=decision, approver=approver,
                         refusal=f"{approver} {ctx.publisher_may_not}")
    if decision.version is not None and decision.version != ctx.version:
        return Judgement(decision=decision, approver=approver, refusal=f"this {action} names version "
                         f"{decision.version}, but the promotion is for {ctx.version}")
    if decision.digest is not None and decision.digest != ctx.digest:
        return Judgement(decision=decision, approver=approver, refusal=f"this {action} names digest "
                         f"{decision.digest}, but the promotion is for {ctx.digest}")
    return Judgement(decision=decision, approver=approver, fingerprint=fingerprint)
