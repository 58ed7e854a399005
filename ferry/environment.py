"""EnvironmentWorkflow's vocabulary: the spec people write, the state the workflow carries, its messages."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ferry.approvals import NAME_PATTERN, ApproverKey, SignedDecision, key_fingerprint
from ferry.cosign import PublisherKey
from ferry.durations import MAX_DURATION_TEXT, Duration, parse_duration
from ferry.errors import validation_message
from ferry.model import PEOPLE as PEOPLE  # re-exported: what people type is validated with it
from ferry.model import Model
from ferry.names import ENV_PREFIX
from ferry.oci import Digest, Repository
from ferry.versions import SemverRange, parse_release_version

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Bounds on what people and systems send: every string and list a message carries is capped, so no payload
# can grow a workflow's history or memo past Temporal's limits.
MAX_NAME = 128
MAX_REASON = 1024
MAX_KEY = 4096
MAX_APPROVERS = 32
MAX_APPROVALS_PER_PIN = 8


_Model = Model  # NB: the one base (ferry/model.py)


def env_workflow_id(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


MIN_INTERVAL = timedelta(seconds=1)


def _duration(value: str, field: str) -> str:
    if len(value) > MAX_DURATION_TEXT:
        return value  # NB: refused by its type (Duration), as too long, without parsing it
    try:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be positive")
    except ValueError as err:
        raise ValueError(f"{field}: {err}") from None
    return value


class Approver(_Model):
    """An approver: a name, and (for signed approvals) the SSH public key that proves it."""

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)
    key: str | None = Field(None, max_length=MAX_KEY, description="OpenSSH public key line (ssh-ed25519 AAAA…)")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            key_fingerprint(value)  # raises ValueError naming what is wrong with the key
        return value


DEFAULT_APPROVAL_LIFETIME = "168h"  # a week: the CLI signs for at most this long, and the workflow holds it too


class ApprovalPolicy(_Model):
    required: bool = False
    approvers: list[Approver] = Field(default_factory=list, max_length=MAX_APPROVERS,
                                      description="who may approve promotions and roll back: names, or "
                                      "{name, key} for signed approvals")
    signed: bool | None = Field(None, description="decisions must be SSH-signed statements (default: when every "
                                "approver has a key)")
    requires_healthy_in: list[Annotated[str, Field(max_length=53)]] = Field(
        default_factory=list, alias="requires-healthy-in", max_length=16)
    timeout: Duration = Field(Duration("24h"), description="how long a promotion waits for a decision")
    max_lifetime: Duration | None = Field(None, alias="max-approval-lifetime", description="a signed statement "
                                          f"may expire at most this long after it is judged (default "
                                          f"{DEFAULT_APPROVAL_LIFETIME})")

    @field_validator("approvers", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # NB: a plain name is today's (and every older state's) unsigned approver
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return _duration(value, "timeout") if isinstance(value, str) else value

    @field_validator("max_lifetime", mode="before")
    @classmethod
    def _max_lifetime(cls, value: Any) -> Any:
        return _duration(value, "max-approval-lifetime") if isinstance(value, str) else value

    @property
    def lifetime(self) -> timedelta:
        return (self.max_lifetime or Duration(DEFAULT_APPROVAL_LIFETIME)).delta

    @model_validator(mode="after")
    def _approvers_when_required(self) -> ApprovalPolicy:
        if self.required and not self.approvers:
            raise ValueError("approval.required is true but approval.approvers is empty: nobody could approve")
        names = [a.name for a in self.approvers]
        if len(set(names)) != len(names):
            raise ValueError("approval.approvers: each name may be listed once")
        if self.signed and (missing := [a.name for a in self.approvers if not a.key]):
            raise ValueError(f"approval.signed is true but approver(s) {', '.join(missing)} have no key")
        return self

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.approvers]

    @property
    def is_signed(self) -> bool:
        if self.signed is not None:
            return self.signed
        return bool(self.approvers) and all(a.key for a in self.approvers)

    def keys(self) -> list[ApproverKey]:
        return [ApproverKey(name=a.name, key=a.key) for a in self.approvers if a.key]


class VerifyPolicy(_Model):
    """Releases must carry a cosign signature by one of these keys; the signed publisher is the one that counts."""

    publishers: list[PublisherKey] = Field(min_length=1, max_length=MAX_APPROVERS)


DEFAULT_CLUSTER = "default"
# NB: the worker keeps its inventories and leases here; no environment may write to it (or name it as its own).
RESERVED_NAMESPACES = ("ferry-system",)
CLUSTER_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ClusterRef(_Model):
    """Which cluster, by the name the worker's clusters file (FERRY_CLUSTERS) gives it: `cluster: prod-eu` or
    `cluster: {name: prod-eu}`. A spec never names a path: the worker alone knows kubeconfigs and credentials."""

    name: str | None = Field(None, max_length=63, pattern=CLUSTER_NAME,
                             description=f"an entry of the worker's clusters file (default: {DEFAULT_CLUSTER!r})")
    # NB: legacy, persisted only: states written before clusters by name carry these. People may not set them
    # (refused below); the worker uses them only to look up an entry of its own clusters file with that
    # kubeconfig path, never to load a path (docs/tenancy.md).
    kubeconfig: str | None = Field(None, max_length=4096)
    context: str | None = Field(None, max_length=253)

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and info.context and info.context.get(PEOPLE):
            named = [k for k in ("kubeconfig", "context") if data.get(k) is not None]
            if named:
                raise ValueError(f"cluster.{named[0]}: an environment names a cluster of the worker's clusters file "
                                 "(cluster: NAME), never a kubeconfig path or context; ask the worker's operator "
                                 "to add an entry to FERRY_CLUSTERS")
        return data

    @property
    def effective(self) -> str:
        return self.name or DEFAULT_CLUSTER


class EnvironmentSpec(_Model):
    # NB: every string is bounded: a spec arrives in an Update and lives in the workflow's state and history
    name: str = Field(max_length=53)
    repository: Repository = Field(max_length=255)
    path: str = Field(".", max_length=255)
    cluster: ClusterRef = Field(default_factory=ClusterRef)
    namespace: str = Field("default", max_length=63)
    namespaces: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=32, description="every namespace it may write to (default: [namespace])")
    cluster_kinds: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, alias="cluster-kinds", max_length=32, description="cluster-scoped kinds it may write "
        "(e.g. CustomResourceDefinition); its own Namespace objects need no listing")
    service_account: str | None = Field(None, alias="service-account", max_length=253, pattern=CLUSTER_NAME,
                                        description="apply and prune as system:serviceaccount:<namespace>:<name>")
    version: str | None = Field(None, max_length=128, description="pinned version")
    semver: str | None = Field(None, max_length=256, description="range to track, e.g. '>=1.2.0 <2.0.0'")
    prereleases: bool = False
    interval: Duration = Duration("1m")
    timeout: Duration = Duration("5m")
    prune: bool = True
    allow_empty: bool = Field(False, alias="allow-empty", description="permit pruning everything")
    health_timeout: Duration = Field(Duration("5m"), alias="health-timeout")
    auto_rollback: bool = Field(True, alias="auto-rollback")
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    verify: VerifyPolicy | None = Field(None, description="require releases signed by one of these publishers")

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

    @field_validator("interval", "timeout", "health_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> Any:
        # NB: before the type (Duration), so a bad duration is refused with the field's label as it always was
        if not isinstance(value, str):
            return value
        _duration(value, "duration")
        if (info.field_name == "interval" and info.context and info.context.get(PEOPLE) and len(value) <=
                MAX_DURATION_TEXT and parse_duration(value) < MIN_INTERVAL):
            # NB: only what people type: a persisted state decodes whatever an older build accepted
            raise ValueError(f"duration: an interval under {MIN_INTERVAL.total_seconds():.0f}s would loop the "
                             "workflow without pause")
        return value

    @model_validator(mode="after")
    def _tracks_one_thing(self) -> EnvironmentSpec:
        if (self.version is None) == (self.semver is None):
            raise ValueError("give exactly one of `version` (pinned) or `semver` (a range to track)")
        return self

    @model_validator(mode="after")
    def _confined(self, info: ValidationInfo) -> EnvironmentSpec:
        if not (info.context and info.context.get(PEOPLE)):
            return self  # NB: a persisted state always decodes; the worker refuses a reserved namespace itself
        for ns in [self.namespace, *self.namespaces]:
            if not _NAME.match(ns):
                raise ValueError(f"namespace {ns!r} must be a lowercase DNS label")
            if ns in RESERVED_NAMESPACES:
                raise ValueError(f"namespace {ns!r} is reserved for ferry's inventories and leases")
        if self.namespaces and self.namespace not in self.namespaces:
            raise ValueError(f"namespace {self.namespace!r} (where objects without one go) must be one of "
                             f"namespaces {self.namespaces}")
        return self

    @property
    def writable_namespaces(self) -> list[str]:
        """Where this environment may write: `namespaces`, else its one `namespace`."""
        return list(self.namespaces) or [self.namespace]

    @property
    def tracking(self) -> str:
        return f"version {self.version}" if self.version else f"semver {self.semver}"


# Spec fields that decide what production runs and who may move it: for an approval-required environment a
# change to any of them waits for an approval like a promotion.
PROTECTED_FIELDS = ("approval", "verify", "repository", "path", "cluster", "namespace", "namespaces",
                    "cluster-kinds", "service-account", "version", "semver", "prereleases", "prune", "allow-empty")
# ... and what weakens the safety net (step 15: changed without approval before): the automatic rollback, how long a
# release has to become healthy, how often drift is reverted
SAFETY_NET_FIELDS = ("auto-rollback", "health-timeout", "interval")
MAX_DIFF_LINES = 40


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def spec_diff(old: EnvironmentSpec, new: EnvironmentSpec) -> list[str]:
    """Field-level differences, `path: old -> new`, at most MAX_DIFF_LINES (then a count of the rest)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(old.model_dump(mode="json", by_alias=True), "", before)
    _flatten(new.model_dump(mode="json", by_alias=True), "", after)
    lines = [f"{path}: {_short(before.get(path))} -> {_short(after.get(path))}"
             for path in sorted(before.keys() | after.keys()) if before.get(path) != after.get(path)]
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... and {len(lines) - MAX_DIFF_LINES} more"]
    return lines


def protected_changes(diff: list[str], safety_net: bool = True) -> list[str]:
    """The diff lines an approval-required environment applies only with a signed approval (`safety_net`: with
    SAFETY_NET_FIELDS; runs from before them decide without)."""
    fields = PROTECTED_FIELDS + SAFETY_NET_FIELDS if safety_net else PROTECTED_FIELDS
    return [line for line in diff if re.split(r"[.\[:]", line, maxsplit=1)[0] in fields]


_ADDED_FIELDS: dict[str, Any] = {"namespaces": [], "cluster-kinds": [], "service-account": None}


def spec_digest(spec: EnvironmentSpec) -> str:
    """What a signed approval of a spec change names as its digest: sha256 of the spec's canonical JSON."""
    data = spec.model_dump(mode="json", by_alias=True)
    # NB: fields added after specs were first signed are left out while unset, so the digest of a spec that does not
    # use them is what it always was: approvals signed before the upgrade still verify, and histories replay.
    for key, unset in _ADDED_FIELDS.items():
        if data.get(key) == unset:
            data.pop(key, None)
    if data["cluster"].get("name") is None:
        data["cluster"].pop("name", None)
    if data["approval"].get("max-approval-lifetime") is None:
        data["approval"].pop("max-approval-lifetime", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class EnvironmentsFile(_Model):
    environments: list[EnvironmentSpec]
    alerts: list[dict[str, Any]] = Field(default_factory=list, description="applied by `ferry alerts apply` "
                                         "(ferry.alerts.AlertSpec); validated here too, so a typo fails env apply")

    @field_validator("alerts")
    @classmethod
    def _alerts(cls, value: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        from ferry.alerts import AlertsFile  # NB: lazily: the alert models are needed only to check this field

        AlertsFile.model_validate({"alerts": value}, context=info.context)
        return value

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
# What persisted state holds: a kind or status this build does not know (written by a newer worker, carried through
# continue-as-new) still decodes, as itself; what people and senders type stays strict (PinRequest.kind).
PersistedPinKind = PinKind | str
HealthStatus = Literal["Unknown", "Healthy", "Progressing", "Failed"]


class Pin(VersionRef):
    by: str
    reason: str = ""
    kind: PersistedPinKind = "manual"
    at: str = ""
    request_id: str = Field("", description="the promotion/rollback workflow (id@run) that pinned it")
    hold: str | None = None
    approved_by: list[str] = Field(default_factory=list, description="approvals this pin rests on (verified "
                                   "fingerprints or claimed names)")
    answered: bool = Field(False, description="its sender was told the outcome (pin_outcome)")
    confirm: bool = Field(False, description="a promotion's pin not yet confirmed by the environment itself "
                          "(its promotion run vouches for it, requires-healthy-in holds): nothing applied until then")
    lifts_hold: bool = Field(False, description="applying it lifts the hold on its version (a promotion)")
    confirm_attempts: int = Field(0, description="confirmations that could not be made yet (refused at a bound)")


class PendingSpec(_Model):
    """A protected spec change waiting for an approval (approval-required environments)."""

    id: str
    spec: EnvironmentSpec
    digest: str = Field(description="what a signed approval of this change names (spec_digest)")
    by: str
    at: str
    changes: list[str] = Field(default_factory=list)


MAX_IDS = 50  # object ids kept per list in anything that enters history (events, reconcile results)
# ... and entries (object ids, field paths) across all lists of one record, each at most MAX_ENTRY characters and
# MAX_RECORD_CHARS in all: 1,000 objects drifting on 10 fields make one record of a few KB, not ~1 MB, whatever
# the names' lengths, so the 50 events an environment keeps stay far below the 512 KiB a continue-as-new input may
# carry (bench/history.py measures the worst case: every list and string at its cap).
MAX_ENTRIES = 200
MAX_ENTRY = 256
MAX_RECORD_CHARS = 2048


_MORE = "... and "


def _more(line: str) -> int:
    """How many entries a '... and N more' line counts (0 for any other line)."""
    if not line.startswith(_MORE):
        return 0
    count = line[len(_MORE):].split(" ", 1)[0]
    return int(count) if count.isdigit() else 0


def cap_ids(items: list[str], limit: int = MAX_IDS, chars: int | None = None) -> list[str]:
    """The first `limit` ids (and no more than `chars` characters of them), then one line saying how many more:
    history never grows with the bundle. Idempotent: a list capped before is left as it is."""
    more = _more(items[-1]) if items else 0
    real = items[:-1] if more else items
    kept: list[str] = []
    used = 0
    for item in real[:limit]:
        entry = item[:MAX_ENTRY]
        if chars is not None and used + len(entry) > chars:
            break
        kept.append(entry)
        used += len(entry)
    more += len(real) - len(kept)
    return [*kept, f"{_MORE}{more} more"] if more else kept


def cap_objects(objects: dict[str, list[str]], limit: int = MAX_IDS, budget: int = MAX_ENTRIES,
                chars: int = MAX_RECORD_CHARS) -> dict[str, list[str]]:
    """At most `limit` keys and `limit` entries per list, `budget` entries and `chars` characters in all (then each
    list kept keeps at least its count; keys past the characters are counted). Idempotent, like cap_ids."""
    keys = [k for k in objects if not k.startswith(_MORE)]
    capped: dict[str, list[str]] = {}
    left = budget - min(len(keys), limit)
    room = chars
    for key in keys[:limit]:
        name = key[:MAX_ENTRY]
        if len(name) > room:
            break
        room -= len(name)
        items = cap_ids(list(objects[key]), min(limit, max(left, 0)), chars=room)
        real = items[:-1] if items and _more(items[-1]) else items
        left -= len(real)
        room -= sum(len(i) for i in real)
        capped[name] = items
    more = len(keys) - len(capped) + sum(_more(k) for k in objects)
    if more > 0:
        capped[f"{_MORE}{more} more"] = []
    return capped


class ChangeSet(_Model):
    """What one reconcile did: counts and object ids, never object bodies. Serialized (into history) with at most
    MAX_IDS ids per list; `totals` keeps the true counts."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    unchanged: int = 0
    prune_skipped: list[str] = Field(default_factory=list)
    prune_failed: list[str] = Field(default_factory=list)
    drift: dict[str, list[str]] = Field(default_factory=dict, description="object -> field paths put back")
    api_requests: int = 0
    totals: dict[str, int] = Field(default_factory=dict, description="true counts of lists capped in history")

    _LISTS = ("created", "updated", "deleted", "prune_skipped", "prune_failed", "drift")

    @model_serializer(mode="wrap")
    def _bounded(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            data["totals"] = {name: self.count(name) for name in self._LISTS if self.count(name)}
            for name in self._LISTS[:-1]:
                data[name] = cap_ids(list(data.get(name) or []))
            data["drift"] = cap_objects(dict(data.get("drift") or {}))
        return data

    def count(self, name: str) -> int:
        return self.totals.get(name, len(getattr(self, name)))

    @property
    def changed(self) -> bool:
        return bool(self.count("created") or self.count("updated") or self.count("deleted"))

    def summary(self) -> str:
        return (f"{self.count('created')} created, {self.count('updated')} updated, {self.count('deleted')} deleted, "
                f"{self.unchanged} unchanged")


class Applied(VersionRef):
    revision: str = ""
    at: str
    changes: str = ""


class EventType(StrEnum):
    """What an EnvironmentWorkflow records (Event.type): the audit, the alerts and the metrics name these."""

    APPLIED = "Applied"
    HEALTHY = "Healthy"
    HEALTH_FAILED = "HealthFailed"
    AUTO_ROLLBACK = "AutoRollback"
    DRIFT_CORRECTED = "DriftCorrected"
    RECONCILE_FAILED = "ReconcileFailed"
    PINNED = "Pinned"
    PIN_REFUSED = "PinRefused"
    PIN_RELEASED = "PinReleased"
    TAG_MOVED = "TagMoved"
    VERIFICATION_FAILED = "VerificationFailed"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    SPEC_UPDATED = "SpecUpdated"
    SPEC_CHANGE_PENDING = "SpecChangePending"
    SPEC_CHANGE_REJECTED = "SpecChangeRejected"
    SPEC_DECISION_REFUSED = "SpecDecisionRefused"
    RECORD_RECOVERED = "RecordRecovered"  # a run that replaced the last one took that run's safety record

    @classmethod
    def _missing_(cls, value: object) -> EventType | None:
        """NB: a type this build does not know (recorded by a newer worker, in a state it continued as new) still
        decodes, as itself: a rolling upgrade or its rollback never strands a workflow on an unknown event."""
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_, member._value_ = value, value
        return member

    @property
    def words(self) -> str:
        """How the audit timeline names it: 'drift corrected', 'rollback (automatic)'; an unknown type as itself."""
        if self.value not in EventType.__members__.values():
            return self.value
        return _EVENT_WORDS.get(self) or re.sub(r"(?<!^)(?=[A-Z])", " ", self.value).lower()


_EVENT_WORDS = {EventType.AUTO_ROLLBACK: "rollback (automatic)", EventType.TAG_MOVED: "tag moved (refused)"}


class Event(_Model):
    """Workflow-level record of something an operator cares about (also visible in history)."""

    at: str
    type: EventType
    message: str
    version: str = ""
    digest: str = ""
    by: str = ""
    objects: dict[str, list[str]] = Field(default_factory=dict, description="object ids, at most MAX_IDS per list")
    request_id: str = Field("", description="the promotion/rollback workflow a Pinned or PinRefused event answers")
    update_id: str = Field("", description="the Update that caused it (spec changes): the audit pairs its sender")

    @field_validator("objects")
    @classmethod
    def _bounded(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return cap_objects(value)


class HealthState(_Model):
    status: HealthStatus | str = "Unknown"
    reason: str = ""
    digest: str = ""
    at: str = ""


class Rollout(VersionRef):
    """A release applied and not judged yet: its health deadline is its own (from the apply), not an activity
    attempt's, so a wait cut by an outage, a worker crash or a late retry is judged again from here."""

    applied_at: str
    deadline: str = Field(description="judged Failed when not healthy by then (health-timeout after the apply)")


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
    tags: dict[str, str] = Field(default_factory=dict, description="tag -> digest, bound the first time a tag "
                                 "resolved; a tag that later points elsewhere is refused (bounded, oldest dropped)")
    verified: dict[str, str] = Field(default_factory=dict, description="digest -> publisher whose signature "
                                     "verified (bounded)")
    consumed_approvals: list[str] = Field(default_factory=list, description="promotion runs whose approvals "
                                          "already moved this environment (bounded); a replay is refused")
    pending_spec: PendingSpec | None = None
    blocked: str = Field("", description="why the environment is not moving to what it resolves (TagMoved, "
                         "VerificationFailed)")
    rollout: Rollout | None = Field(None, description="the applied release still waiting for its health verdict")
    unknown_signals: int = Field(0, description="signals of names the environment does not have, dropped")
    pin_before: Pin | None = Field(None, description="the pin an unconfirmed one replaced, back if it is refused")
    unverified_record: str = Field("", description="why this run could not recover the last run's record (it "
                                   "started suspended; a resume clears it)")

    @property
    def phase(self) -> str:
        """What the FerryPhase search attribute says: Suspended, else the health status."""
        return "Suspended" if self.suspended else self.health.status


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


def first_payload(payloads: tuple[object, ...]) -> LenientPayload:
    """A signal's input as anyone may send it: no payload (`temporal workflow signal` without --input), null, a
    wrong type, or several (the first one counts). Handlers take `*payloads` so no such call fails a workflow
    task; they validate what they get and record a refusal."""
    if not payloads:
        return LenientPayload(None)
    first = payloads[0]
    return first if isinstance(first, LenientPayload) else LenientPayload(first)


class PinRequest(_Model):
    version: str = Field(max_length=MAX_NAME)
    digest: str = Field(max_length=MAX_NAME)
    by: str = Field(max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_REASON)
    kind: PinKind = "manual"
    request_id: str = Field("", max_length=2 * MAX_NAME)
    hold: str | None = Field(None, max_length=MAX_NAME, description="a version to hold (the one rolled back from)")
    repository: str = Field("", max_length=2 * MAX_NAME, description="where the digest was resolved; a pin from "
                            "another repository than the environment deploys from is refused")
    approvals: list[SignedDecision] = Field(default_factory=list, max_length=MAX_APPROVALS_PER_PIN,
                                            description="the signed approvals this pin rests on")
    approved_by: list[str] = Field(default_factory=list, max_length=MAX_APPROVALS_PER_PIN,
                                   description="claimed approvers (environments with approval.signed: false)")
    publisher: str = Field("", max_length=MAX_NAME, description="the release's publisher as the sender resolved it")


PinVerdict = Literal["succeeded", "failed", "refused", "superseded"]


class PinOutcome(_Model):
    """What the environment tells the promotion or rollback that sent a pin (signal `pin_outcome`)."""

    request_id: str = Field(max_length=2 * MAX_NAME)
    outcome: PinVerdict
    reason: str = Field("", max_length=MAX_REASON)
    auto_rolled_back: bool = False


class ActorRequest(_Model):
    by: str = Field("unknown", max_length=MAX_NAME)
    reason: str = Field("", max_length=MAX_REASON)


def people_check(spec: EnvironmentSpec) -> None:
    """Validate an already-decoded spec by the rules for what people type (ValueError naming what is wrong)."""
    try:
        EnvironmentSpec.model_validate(spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                                       context={PEOPLE: True})
    except ValidationError as err:
        raise ValueError(validation_message(err, "spec")) from None


class SpecUpdate(_Model):
    spec: EnvironmentSpec
    by: str = Field("", max_length=MAX_NAME, description="who sent it (claimed; the client identity is in history)")


class SpecUpdateResult(_Model):
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


class PlanRequest(_Model):
    version: str | None = None


MAX_PLAN_ENTRIES = 200  # `ferry diff` shows this many changes; the rest are counted (history stays small)


class PlanResult(_Model):
    version: str
    digest: str
    changes: list[dict[str, Any]] = Field(default_factory=list, description="{object, action, fields}, capped")
    prune: list[str] = Field(default_factory=list)
    more: int = Field(0, description="changes and prunes not listed")


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
    cluster: str = Field("", description="the worker's clusters-file entry ('' from older workflows: legacy lookup)")
    kubeconfig: str | None = Field(None, description="legacy (older workflows): looked up in the clusters file")
    context: str | None = None
    namespaces: list[str] = Field(default_factory=list, description="where it may write ('' = [namespace])")
    cluster_kinds: list[str] = Field(default_factory=list)
    service_account: str | None = None
    prune: bool = True
    allow_empty: bool = False
    dry_run: bool = False
    drift_baseline: bool = Field(False, description="the cluster had this digest applied: differences are drift")
    check_only: bool = Field(False, description="stop before the first write; `pending` counts what a reconcile "
                             "would write (the no-op check of an iteration)")


class ReconcileResult(_Model):
    changes: ChangeSet
    health: HealthState
    revision: str = ""
    plan: list[dict[str, Any]] = Field(default_factory=list, description="only for dry runs (ferry diff); at most "
                                       "MAX_PLAN_ENTRIES entries in history")
    plan_total: int = 0
    pending: int = Field(0, description="check_only: writes (creates, updates, drift, prunes, inventory) a reconcile "
                         "would make; when non-zero nothing was written and `changes`/`health` are not a verdict")

    @model_serializer(mode="wrap")
    def _bounded(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and len(self.plan) > MAX_PLAN_ENTRIES:
            data["plan_total"] = len(self.plan)
            data["plan"] = data["plan"][:MAX_PLAN_ENTRIES]
            for entry in data["plan"]:
                entry["fields"] = cap_ids(list(entry.get("fields") or []))
        return data


class CheckInput(_Model):
    """An iteration's no-op check, run as one local activity: resolve what the spec tracks (when it tracks), and
    when that is still the applied digest, check the cluster against it without writing."""

    resolve: ResolveInput | None = None
    reconcile: ReconcileInput


class CheckResult(_Model):
    found: ResolveResult | None = Field(None, description="the resolve's answer, when the check resolved")
    result: ReconcileResult | None = Field(None, description="None when the resolved digest is not the applied one "
                                           "(the cluster was not read)")


class HealthInput(_Model):
    environment: str
    digest: str
    cluster: str = ""
    kubeconfig: str | None = None
    context: str | None = None
    timeout_seconds: int


class HealthResult(_Model):
    health: HealthState
