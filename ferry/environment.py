"""EnvironmentWorkflow's vocabulary: the spec people write, the state the workflow carries, its messages."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from ferry.durations import parse_duration
from ferry.oci import Digest, Repository
from ferry.versions import SemverRange, parse_release_version

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def env_workflow_id(name: str) -> str:
    return f"env/{name}"


def _duration(value: str, field: str) -> str:
    try:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be positive")
    except ValueError as err:
        raise ValueError(f"{field}: {err}") from None
    return value


class ApprovalPolicy(_Model):
    required: bool = False
    approvers: list[str] = Field(default_factory=list, description="who may approve promotions and roll back")
    requires_healthy_in: list[str] = Field(default_factory=list, alias="requires-healthy-in")
    timeout: str = Field("24h", description="how long a promotion waits for a decision")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        return _duration(value, "timeout")

    @model_validator(mode="after")
    def _approvers_when_required(self) -> ApprovalPolicy:
        if self.required and not self.approvers:
            raise ValueError("approval.required is true but approval.approvers is empty: nobody could approve")
        return self


class ClusterRef(_Model):
    kubeconfig: str | None = Field(None, description="path on the worker; default: the worker's kubeconfig")
    context: str | None = None


class EnvironmentSpec(_Model):
    name: str
    repository: Repository
    path: str = "."
    cluster: ClusterRef = Field(default_factory=ClusterRef)
    namespace: str = "default"
    version: str | None = Field(None, description="pinned version")
    semver: str | None = Field(None, description="range to track, e.g. '>=1.2.0 <2.0.0'")
    prereleases: bool = False
    interval: str = "1m"
    timeout: str = "5m"
    prune: bool = True
    allow_empty: bool = Field(False, alias="allow-empty", description="permit pruning everything")
    health_timeout: str = Field("5m", alias="health-timeout")
    auto_rollback: bool = Field(True, alias="auto-rollback")
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value) or len(value) > 53:
            raise ValueError(f"{value!r} must be a lowercase DNS label of at most 53 characters")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be a relative path inside the artifact")
        return value.strip("/") or "."

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            parse_release_version(value)
        return value

    @field_validator("semver")
    @classmethod
    def _semver(cls, value: str | None) -> str | None:
        if value is not None:
            SemverRange(value)
        return value

    @field_validator("interval", "timeout", "health_timeout")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value, "duration")

    @model_validator(mode="after")
    def _tracks_one_thing(self) -> EnvironmentSpec:
        if (self.version is None) == (self.semver is None):
            raise ValueError("give exactly one of `version` (pinned) or `semver` (a range to track)")
        return self

    @property
    def tracking(self) -> str:
        return f"version {self.version}" if self.version else f"semver {self.semver}"


class EnvironmentsFile(_Model):
    environments: list[EnvironmentSpec]

    @model_validator(mode="after")
    def _unique(self) -> EnvironmentsFile:
        names = [e.name for e in self.environments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment names must be unique: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------------------------------- state

class VersionRef(_Model):
    version: str
    digest: Digest


PinKind = Literal["promotion", "rollback", "auto-rollback", "manual"]


class Pin(VersionRef):
    by: str
    reason: str = ""
    kind: PinKind = "manual"
    at: str = ""
    request_id: str = Field("", description="the promotion/rollback workflow (id@run) that pinned it")
    hold: str | None = None


class ChangeSet(_Model):
    """What one reconcile did: counts and object ids, never object bodies."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    unchanged: int = 0
    prune_skipped: list[str] = Field(default_factory=list)
    prune_failed: list[str] = Field(default_factory=list)
    drift: dict[str, list[str]] = Field(default_factory=dict, description="object -> field paths put back")
    api_requests: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def summary(self) -> str:
        return (f"{len(self.created)} created, {len(self.updated)} updated, {len(self.deleted)} deleted, "
                f"{self.unchanged} unchanged")


class Applied(VersionRef):
    revision: str = ""
    at: str
    changes: str = ""


class Event(_Model):
    """Workflow-level record of something an operator cares about (also visible in history)."""

    at: str
    type: str  # Applied, DriftCorrected, AutoRollback, Pinned, PinRefused, Suspended, Resumed, ...
    message: str
    version: str = ""
    digest: str = ""
    by: str = ""
    objects: dict[str, list[str]] = Field(default_factory=dict)
    request_id: str = Field("", description="the promotion/rollback workflow a Pinned or PinRefused event answers")


class HealthState(_Model):
    status: Literal["Unknown", "Healthy", "Progressing", "Failed"] = "Unknown"
    reason: str = ""
    digest: str = ""
    at: str = ""


class EnvironmentState(_Model):
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


class EnvironmentInput(_Model):
    state: EnvironmentState


class EnvironmentStatus(_Model):
    name: str
    tracking: str
    desired: VersionRef | None = None
    state: EnvironmentState


# -------------------------------------------------------------------------------------- messages

class LenientPayload(RootModel[Any]):
    """Accepts any JSON so the worker never drops a signal; the handler validates and records refusals."""


class PinRequest(_Model):
    version: str
    digest: str
    by: str
    reason: str = ""
    kind: PinKind = "manual"
    request_id: str = ""
    hold: str | None = Field(None, description="a version to hold (the one rolled back from)")
    repository: str = Field("", description="where the digest was resolved; a pin from another repository than the "
                            "environment deploys from is refused")


class ActorRequest(_Model):
    by: str = "unknown"
    reason: str = ""


class SpecUpdate(_Model):
    spec: EnvironmentSpec


class PlanRequest(_Model):
    version: str | None = None


class PlanResult(_Model):
    version: str
    digest: str
    changes: list[dict[str, Any]] = Field(default_factory=list, description="{object, action, fields}")
    prune: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------------------- activities

class ResolveInput(_Model):
    repository: str
    version: str | None = None
    semver: str | None = None
    prereleases: bool = False
    held: list[str] = Field(default_factory=list)


class ResolveResult(_Model):
    ref: VersionRef | None = None
    candidates: int = 0


class ReconcileInput(_Model):
    environment: str
    repository: str
    digest: str
    version: str
    path: str
    namespace: str
    kubeconfig: str | None = None
    context: str | None = None
    prune: bool = True
    allow_empty: bool = False
    dry_run: bool = False
    drift_baseline: bool = Field(False, description="the cluster had this digest applied: differences are drift")


class ReconcileResult(_Model):
    changes: ChangeSet
    health: HealthState
    revision: str = ""
    plan: list[dict[str, Any]] = Field(default_factory=list, description="only for dry runs (ferry diff)")


class HealthInput(_Model):
    environment: str
    digest: str
    kubeconfig: str | None = None
    context: str | None = None
    timeout_seconds: int


class HealthResult(_Model):
    health: HealthState
