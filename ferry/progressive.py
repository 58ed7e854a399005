"""A progressive rollout's records (workflows/rollout.py): its input, status, steering requests and outcome.

Every list is bounded: a rollout's status is queried and its outcome signalled, so both stay small whatever the
strategy or the people steering it send.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ferry.analysis import Failure
from ferry.bounded import cap_ids
from ferry.model import Message, Model
from ferry.reconcile import VersionRef
from ferry.rollout_spec import Strategy
from ferry.spec import MAX_NAME, MAX_REASON, ApprovalPolicy, rollout_workflow_id

PROMOTE_GATE = "promote"  # the gate a `rollout promote` decision names (skips the remaining steps)
MAX_STEPS_KEPT = 40
MAX_INTERVALS_KEPT = 20
MAX_DECISIONS_KEPT = 20

Phase = Literal[
    "Initializing",
    "Progressing",
    "Paused",
    "Analysing",
    "AwaitingApproval",
    "Promoting",
    "Promoted",
    "Failed",
    "Aborted",
    "Superseded",
]
FINAL_PHASES: frozenset[str] = frozenset({"Promoted", "Failed", "Aborted", "Superseded"})
OutcomeKind = Literal["promoted", "failed", "aborted", "superseded"]


class RolloutInput(Model):
    environment: str
    namespace: str
    cluster: str = ""
    repository: str = Field("", description="where the candidate was released (its publisher is read there)")
    candidate: VersionRef
    primary: VersionRef | None = Field(None, description="what the primary serves; None: first release")
    strategy: Strategy
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    publisher: str = Field("", description="who published the candidate (may not approve its gates)")
    immediate: bool = Field(False, description="a rollback or first release: promote at once, no steps")
    ready_timeout_seconds: int = Field(300, description="how long a scaled workload has to become ready")
    reason: str = ""


class StepRecord(Message):
    index: int  # the spec's step index; -1 for the implicit promote
    kind: str
    weight: int
    at: str
    outcome: str = ""
    detail: str = ""


class IntervalRecord(Message):
    step: int
    interval: int
    at: str
    values: dict[str, float | None] = Field(default_factory=dict, description="check -> value (None: no data)")
    failed: list[str] = Field(default_factory=list, description="the checks that failed, with their threshold")


class SteerRecord(Message):
    """Who did what to a rollout: a verified fingerprint, or a claimed name (said so)."""

    action: str
    by: str
    at: str
    verified: str = Field("", description="the signing key's fingerprint; empty: the name is a claim")
    reason: str = ""
    refused: str = Field("", description="why it was refused (nothing changed)")

    def words(self) -> str:
        proof = f"verified {self.verified}" if self.verified else "claimed"
        refused = f" (refused: {self.refused})" if self.refused else ""
        return f"{self.action} by {self.by} ({proof}){refused}"


class RolloutStatus(Model):
    environment: str
    candidate: VersionRef
    primary: VersionRef | None = None
    run_id: str = ""
    phase: Phase | str = "Initializing"
    step: int = Field(0, description="the position in the plan being walked")
    weight: int = 0
    paused: bool = False
    steps: list[StepRecord] = Field(default_factory=list)
    intervals: list[IntervalRecord] = Field(default_factory=list, description="the latest analysis intervals")
    decisions: list[SteerRecord] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    reason: str = ""
    awaiting: str = Field("", description="the statement an approval must name (promotion field), when waiting")


class RolloutOutcome(Model):
    """What a rollout signals its environment when it ends (Signal.ROLLOUT_OUTCOME): the environment checks it is
    from the run it started, and a promotion against the cluster, before acting on it."""

    environment: str = Field(max_length=MAX_NAME)
    version: str = Field(max_length=MAX_NAME)
    digest: str = Field(max_length=MAX_NAME)
    run_id: str = Field(max_length=MAX_NAME)
    outcome: OutcomeKind
    reason: str = Field("", max_length=MAX_REASON)
    failures: list[Failure] = Field(default_factory=list, max_length=16)
    decisions: list[str] = Field(default_factory=list, max_length=MAX_DECISIONS_KEPT)


class SteerRequest(Model):
    """pause | resume | abort: `{"by": "alice", "reason": "..."}` (a claim, recorded as one)."""

    by: str = Field("unknown", max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_REASON)


class SteerResult(Message):
    accepted: bool
    phase: str
    message: str = ""


def decision_lines(decisions: list[SteerRecord]) -> list[str]:
    return cap_ids([d.words() for d in decisions if not d.refused])


def gate_id(environment: str, step: int | str) -> str:
    """What a signed statement's `promotion` field names for one gate of this environment's rollout: the rollout's
    workflow id and the step (its index in the spec, or PROMOTE_GATE)."""
    return f"{rollout_workflow_id(environment)}#{step}"
