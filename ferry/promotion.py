"""PromotionWorkflow and RollbackWorkflow vocabulary, and the approval policy as pure functions."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.environment import ApprovalPolicy


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def promotion_workflow_id(environment: str, version: str) -> str:
    return f"promote/{environment}/{version}"


def rollback_workflow_id(environment: str, target: str) -> str:
    return f"rollback/{environment}/{target}"


class PromotionInput(_Model):
    environment: str
    version: str
    requested_by: str
    reason: str = ""


class DecisionSignal(BaseModel):
    """What an SRE sends: `{"approver": "alice", "comment": "looks good"}`; version/digest optional guards."""

    model_config = ConfigDict(extra="ignore")

    approver: str
    comment: str = ""
    version: str | None = None
    digest: str | None = None

    @field_validator("approver")
    @classmethod
    def _approver(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("approver is empty")
        return value.strip()


class Decision(_Model):
    at: str
    action: Literal["approve", "reject"]
    by: str
    accepted: bool
    reason: str = ""
    comment: str = ""
    via: Literal["signal", "update"] = "signal"


Outcome = Literal["succeeded", "failed", "rejected", "expired", "refused", "superseded"]
Phase = Literal["Resolving", "Refused", "AwaitingApproval", "Pinned", "Succeeded", "Failed", "Rejected", "Expired",
                "Superseded"]


class PromotionStatus(_Model):
    environment: str
    version: str
    digest: str = ""
    publisher: str = ""
    requested_by: str
    phase: Phase = "Resolving"
    decisions: list[Decision] = Field(default_factory=list)
    deadline: str = ""


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


def judge(policy: ApprovalPolicy, publisher: str, version: str, digest: str, raw: Any, action: str
          ) -> tuple[DecisionSignal | None, str]:
    """The approval rules, whichever way a decision arrives. -> (decision, refusal reason or '')."""
    try:
        decision = DecisionSignal.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return None, f"malformed {action}: {where}: {first['msg']} (expected {{\"approver\": \"name\", " \
                     "\"comment\": \"...\"}})"
    if decision.approver not in policy.approvers:
        return decision, f"{decision.approver} is not an approver of this environment ({', '.join(policy.approvers)})"
    if action == "approve" and decision.approver == publisher:
        return decision, f"{decision.approver} published this release and may not approve its promotion"
    if decision.version is not None and decision.version != version:
        return decision, f"this {action} names version {decision.version}, but the promotion is for {version}"
    if decision.digest is not None and decision.digest != digest:
        return decision, f"this {action} names digest {decision.digest}, but the promotion is for {digest}"
    return decision, ""
