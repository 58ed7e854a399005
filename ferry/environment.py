"""EnvironmentWorkflow's state and messages: versions, pins, pending specs, state, status, requests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, RootModel, ValidationError, field_validator

from ferry.approvals import SignedDecision
from ferry.bounded import cap_ids as cap_ids
from ferry.errors import validation_message
from ferry.events import Event as Event
from ferry.model import PEOPLE as PEOPLE  # re-exported: what people type is validated with it
from ferry.model import Model
from ferry.progressive import RolloutOutcome
from ferry.reconcile import HealthState as HealthState
from ferry.reconcile import VersionRef as VersionRef
from ferry.spec import MAX_APPROVALS_PER_PIN as MAX_APPROVALS_PER_PIN
from ferry.spec import MAX_NAME as MAX_NAME
from ferry.spec import MAX_REASON as MAX_REASON
from ferry.spec import EnvironmentSpec as EnvironmentSpec

PinKind = Literal["promotion", "rollback", "auto-rollback", "manual"]
# What persisted state holds: a kind or status this build does not know (written by a newer worker, carried through
# continue-as-new) still decodes, as itself; what people and senders type stays strict (PinRequest.kind).
PersistedPinKind = PinKind | str


class Pin(VersionRef):
    by: str
    reason: str = ""
    kind: PersistedPinKind = "manual"
    at: str = ""
    request_id: str = Field("", description="the promotion/rollback workflow (id@run) that pinned it")
    hold: str | None = None
    approved_by: list[str] = Field(
        default_factory=list, description="approvals this pin rests on (verified fingerprints or claimed names)"
    )
    answered: bool = Field(False, description="its sender was told the outcome (pin_outcome)")
    confirm: bool = Field(
        False,
        description="a promotion's pin not yet confirmed by the environment itself "
        "(its promotion run vouches for it, requires-healthy-in holds): nothing applied until then",
    )
    lifts_hold: bool = Field(False, description="applying it lifts the hold on its version (a promotion)")
    confirm_attempts: int = Field(0, description="confirmations that could not be made yet (refused at a bound)")


class PendingSpec(Model):
    """A protected spec change waiting for an approval (approval-required environments)."""

    id: str
    spec: EnvironmentSpec
    digest: str = Field(description="what a signed approval of this change names (spec_digest)")
    by: str
    at: str
    changes: list[str] = Field(default_factory=list)


class Applied(VersionRef):
    revision: str = ""
    at: str
    changes: str = ""


class Rollout(VersionRef):
    """A release applied and not judged yet: its health deadline is its own (from the apply), not an activity
    attempt's, so a wait cut by an outage, a worker crash or a late retry is judged again from here."""

    applied_at: str
    deadline: str = Field(description="judged Failed when not healthy by then (health-timeout after the apply)")


class CanaryRun(VersionRef):
    """The progressive rollout walking a release out (workflows/rollout.py), as the environment started it."""

    run_id: str = Field(description="the rollout run it started: an outcome from any other run is refused")
    started_at: str
    outcome: RolloutOutcome | None = Field(None, description="its answer, settled at the next iteration")


class EnvironmentState(Model):
    spec: EnvironmentSpec
    pin: Pin | None = None
    last_applied: Applied | None = None
    last_known_good: VersionRef | None = None
    good_history: list[VersionRef] = Field(default_factory=list, description="newest last, bounded")
    health: HealthState = Field(default_factory=HealthState)
    holds: list[str] = Field(default_factory=list, description="versions a semver range must not move back onto")
    suspended: bool = False
    source_unavailable_since: str | None = None
    source_error: str = ""
    cluster_unreachable_since: str | None = None
    cluster_error: str = ""
    last_error: str = ""
    last_drift: Event | None = None
    events: list[Event] = Field(default_factory=list, description="recent events, bounded")
    iterations: int = 0
    next_reconcile_at: str = ""
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="tag -> digest, bound the first time a tag "
        "resolved; a tag that later points elsewhere is refused (bounded, oldest dropped)",
    )
    verified: dict[str, str] = Field(
        default_factory=dict, description="digest -> publisher whose signature verified (bounded)"
    )
    consumed_approvals: list[str] = Field(
        default_factory=list,
        description="promotion runs whose approvals already moved this environment (bounded); a replay is refused",
    )
    pending_spec: PendingSpec | None = None
    blocked: str = Field(
        "", description="why the environment is not moving to what it resolves (TagMoved, VerificationFailed)"
    )
    rollout: Rollout | None = Field(None, description="the applied release still waiting for its health verdict")
    unknown_signals: int = Field(0, description="signals of names the environment does not have, dropped")
    pin_before: Pin | None = Field(None, description="the pin an unconfirmed one replaced, back if it is refused")
    canary: CanaryRun | None = Field(None, description="the progressive rollout in progress (spec.strategy)")
    primary: VersionRef | None = Field(None, description="the release the strategy's primary serves (last promoted)")
    failed_rollouts: list[str] = Field(
        default_factory=list, description="digests whose rollout failed or was aborted: never walked again (bounded)"
    )
    unverified_record: str = Field(
        "",
        description="why this run could not recover the last run's record (it started suspended; a resume clears it)",
    )

    @property
    def phase(self) -> str:
        """What the FerryPhase search attribute says: Suspended, else the health status."""
        return "Suspended" if self.suspended else self.health.status


class EnvironmentInput(Model):
    state: EnvironmentState


class EnvironmentStatus(Model):
    name: str
    tracking: str
    desired: VersionRef | None = None
    state: EnvironmentState


# -------------------------------------------------------------------------------------- messages


class LenientPayload(RootModel[Any]):
    """Accepts any JSON so the worker never drops a signal; the handler validates and records refusals."""


def first_payload(payloads: tuple[object, ...]) -> LenientPayload:
    """A signal's input as anyone may send it: no payload (`temporal workflow signal` without --input), null, a
    wrong type, or several (the first one counts). Handlers take `*payloads` so no such call fails a workflow
    task; they validate what they get and record a refusal."""
    if not payloads:
        return LenientPayload(None)
    first = payloads[0]
    return first if isinstance(first, LenientPayload) else LenientPayload(first)


class PinRequest(Model):
    version: str = Field(max_length=MAX_NAME)
    digest: str = Field(max_length=MAX_NAME)
    by: str = Field(max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_REASON)
    kind: PinKind = "manual"
    request_id: str = Field("", max_length=2 * MAX_NAME)
    hold: str | None = Field(None, max_length=MAX_NAME, description="a version to hold (the one rolled back from)")
    repository: str = Field(
        "",
        max_length=2 * MAX_NAME,
        description="where the digest was resolved; a pin from "
        "another repository than the environment deploys from is refused",
    )
    approvals: list[SignedDecision] = Field(
        default_factory=list, max_length=MAX_APPROVALS_PER_PIN, description="the signed approvals this pin rests on"
    )
    approved_by: list[str] = Field(
        default_factory=list,
        max_length=MAX_APPROVALS_PER_PIN,
        description="claimed approvers (environments with approval.signed: false)",
    )
    publisher: str = Field("", max_length=MAX_NAME, description="the release's publisher as the sender resolved it")


PinVerdict = Literal["succeeded", "failed", "refused", "superseded"]


class PinOutcome(Model):
    """What the environment tells the promotion or rollback that sent a pin (signal `pin_outcome`)."""

    request_id: str = Field(max_length=2 * MAX_NAME)
    outcome: PinVerdict
    reason: str = Field("", max_length=MAX_REASON)
    auto_rolled_back: bool = False


class ActorRequest(Model):
    by: str = Field("unknown", max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_REASON)


def people_check(spec: EnvironmentSpec) -> None:
    """Validate an already-decoded spec by the rules for what people type (ValueError naming what is wrong)."""
    try:
        EnvironmentSpec.model_validate(
            spec.model_dump(mode="json", by_alias=True, exclude_none=True), context={PEOPLE: True}
        )
    except ValidationError as err:
        raise ValueError(validation_message(err, "spec")) from None


class SpecUpdate(Model):
    spec: EnvironmentSpec
    by: str = Field("", max_length=MAX_NAME, description="who sent it (claimed; the client identity is in history)")


class SpecUpdateResult(Model):
    """Small on purpose: an Update's result is stored in history on every `ferry env apply` (the status query
    has the rest)."""

    applied: bool = Field(description="false: a protected change is pending approval")
    changes: list[str] = Field(default_factory=list, description="field-level diff, at most MAX_IDS lines")
    pending_id: str = ""
    spec_digest: str = Field("", description="the spec in force after the update (spec_digest)")

    @field_validator("changes")
    @classmethod
    def _bounded(cls, value: list[str]) -> list[str]:
        return cap_ids([c[:MAX_REASON] for c in value])
