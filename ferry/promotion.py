"""PromotionWorkflow and RollbackWorkflow vocabulary. The approval rules (judge) are :mod:`ferry.approvals`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ferry.model import Model
from ferry.names import PROMOTE_PREFIX, ROLLBACK_PREFIX

MAX_DECISIONS_KEPT = 50  # a flood of refused decisions must not grow the status without bound


_Model = Model  # the one base (ferry/model.py): unknown fields from a newer worker are ignored


def promotion_workflow_id(environment: str, version: str) -> str:
    return f"{PROMOTE_PREFIX}{environment}/{version}"


def rollback_workflow_id(environment: str, target: str) -> str:
    return f"{ROLLBACK_PREFIX}{environment}/{target}"


class PromotionInput(_Model):
    environment: str
    version: str
    requested_by: str
    reason: str = ""


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
Phase = Literal[
    "Resolving",
    "Refused",
    "AwaitingApproval",
    "Pinned",
    "Succeeded",
    "Failed",
    "Rejected",
    "Expired",
    "Superseded",
    "Cancelled",
]


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
        return f"that promotion is of {status.digest or '?'} to {status.environment}, not of {digest} to {environment}"
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
