"""What people write for an environment: its spec, approval and verify policy, cluster, and spec diffs."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ferry.cosign import PublisherKey
from ferry.durations import MAX_DURATION_TEXT, Duration, parse_duration
from ferry.helm_spec import HelmSpec, derive_oci_source
from ferry.model import PEOPLE, Model
from ferry.names import ENV_PREFIX
from ferry.oci import Repository
from ferry.rollout_spec import Strategy
from ferry.sshsig import NAME_PATTERN, ApproverKey, key_fingerprint
from ferry.versions import SemverRange, parse_release_version

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Bounds on what people and systems send: every string and list a message carries is capped, so no payload
# can grow a workflow's history or memo past Temporal's limits.
MAX_NAME = 128
MAX_REASON = 1024
MAX_KEY = 4096
MAX_APPROVERS = 32
MAX_APPROVALS_PER_PIN = 8


def env_workflow_id(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


def rollout_workflow_id(name: str) -> str:
    """The environment's progressive rollout (workflows/rollout.py): one at a time, the id reused by the next."""
    return f"rollout/{name}"


MIN_INTERVAL = timedelta(seconds=1)


def _duration(value: str, field: str) -> str:
    if len(value) > MAX_DURATION_TEXT:
        return value  # refused by its type (Duration) as too long, without parsing it
    try:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be positive")
    except ValueError as err:
        raise ValueError(f"{field}: {err}") from None
    return value


class Approver(Model):
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


class ApprovalPolicy(Model):
    required: bool = False
    approvers: list[Approver] = Field(
        default_factory=list,
        max_length=MAX_APPROVERS,
        description="who may approve promotions and roll back: names, or {name, key} for signed approvals",
    )
    signed: bool | None = Field(
        None, description="decisions must be SSH-signed statements (default: when every approver has a key)"
    )
    requires_healthy_in: list[Annotated[str, Field(max_length=53)]] = Field(
        default_factory=list, alias="requires-healthy-in", max_length=16
    )
    timeout: Duration = Field(Duration("24h"), description="how long a promotion waits for a decision")
    max_lifetime: Duration | None = Field(
        None,
        alias="max-approval-lifetime",
        description="a signed statement "
        f"may expire at most this long after it is judged (default "
        f"{DEFAULT_APPROVAL_LIFETIME})",
    )

    @field_validator("approvers", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # a plain name is an unsigned approver (persisted states carry them too)
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


class VerifyPolicy(Model):
    """Releases must carry a cosign signature by one of these keys; the signed publisher is the one that counts."""

    publishers: list[PublisherKey] = Field(min_length=1, max_length=MAX_APPROVERS)


class Decryption(Model):
    """Decrypt the release's SOPS files on the worker before rendering (activities.secrets), with the age
    identities the worker's settings name for this environment or its cluster: never a key in the spec."""

    provider: Literal["sops"]


DEFAULT_CLUSTER = "default"
# The worker keeps its inventories and leases here; no environment may write to it (or name it as its own).
RESERVED_NAMESPACES = ("ferry-system",)
CLUSTER_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ClusterRef(Model):
    """Which cluster, by the name the worker's clusters file (FERRY_CLUSTERS) gives it: `cluster: prod-eu` or
    `cluster: {name: prod-eu}`. A spec never names a path: the worker alone knows kubeconfigs and credentials."""

    name: str | None = Field(
        None,
        max_length=63,
        pattern=CLUSTER_NAME,
        description=f"an entry of the worker's clusters file (default: {DEFAULT_CLUSTER!r})",
    )
    # NB: persisted only (older states carry these): people may not set them (refused below); the worker uses
    # them only to look up an entry of its own clusters file with that kubeconfig path, never to load a path
    # (docs/tenancy.md).
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
                raise ValueError(
                    f"cluster.{named[0]}: an environment names a cluster of the worker's clusters file "
                    "(cluster: NAME), never a kubeconfig path or context; ask the worker's operator "
                    "to add an entry to FERRY_CLUSTERS"
                )
        return data

    @property
    def effective(self) -> str:
        return self.name or DEFAULT_CLUSTER


class EnvironmentSpec(Model):
    # every string is bounded: a spec arrives in an Update and lives in the workflow's state and history
    name: str = Field(max_length=53)
    repository: Repository = Field(max_length=255)
    path: str = Field(".", max_length=255)
    cluster: ClusterRef = Field(default_factory=ClusterRef)
    namespace: str = Field("default", max_length=63)
    namespaces: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=32, description="every namespace it may write to (default: [namespace])"
    )
    cluster_kinds: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        alias="cluster-kinds",
        max_length=32,
        description="cluster-scoped kinds it may write "
        "(e.g. CustomResourceDefinition); its own Namespace objects need no listing",
    )
    service_account: str | None = Field(
        None,
        alias="service-account",
        max_length=253,
        pattern=CLUSTER_NAME,
        description="apply and prune as system:serviceaccount:<namespace>:<name>",
    )
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
    helm: HelmSpec | None = Field(None, description="deliver a Helm chart (ferry.helm_spec)")
    decryption: Decryption | None = Field(None, description="decrypt SOPS files on the worker (docs/secrets.md)")
    strategy: Strategy | None = Field(
        None, description="roll a new release out progressively: canary or blue-green (docs/progressive-delivery.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _oci_chart_source(cls, data: Any) -> Any:
        return derive_oci_source(data)

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
        # before the type (Duration), so a bad duration is refused with the field's label
        if not isinstance(value, str):
            return value
        _duration(value, "duration")
        if (
            info.field_name == "interval"
            and info.context
            and info.context.get(PEOPLE)
            and len(value) <= MAX_DURATION_TEXT
            and parse_duration(value) < MIN_INTERVAL
        ):
            # NB: only what people type: a persisted state must decode whatever an older build accepted
            raise ValueError(
                f"duration: an interval under {MIN_INTERVAL.total_seconds():.0f}s would loop the workflow without pause"
            )
        return value

    @model_validator(mode="after")
    def _tracks_one_thing(self) -> EnvironmentSpec:
        if (self.version is None) == (self.semver is None):
            raise ValueError("give exactly one of `version` (pinned) or `semver` (a range to track)")
        return self

    @model_validator(mode="after")
    def _confined(self, info: ValidationInfo) -> EnvironmentSpec:
        if not (info.context and info.context.get(PEOPLE)):
            return self  # a persisted state always decodes; the worker refuses a reserved namespace itself
        for ns in [self.namespace, *self.namespaces]:
            if not _NAME.match(ns):
                raise ValueError(f"namespace {ns!r} must be a lowercase DNS label")
            if ns in RESERVED_NAMESPACES:
                raise ValueError(f"namespace {ns!r} is reserved for ferry's inventories and leases")
        if self.namespaces and self.namespace not in self.namespaces:
            raise ValueError(
                f"namespace {self.namespace!r} (where objects without one go) must be one of "
                f"namespaces {self.namespaces}"
            )
        return self

    @model_validator(mode="after")
    def _lookup_as_itself(self) -> EnvironmentSpec:
        if self.helm is not None and self.helm.lookup and not self.service_account:
            raise ValueError(
                "helm.lookup: templates read the cluster as the environment's own identity: set service-account "
                "(the worker's identity is never lent to a chart)"
            )
        return self

    @model_validator(mode="after")
    def _gates_have_approvers(self) -> EnvironmentSpec:
        if self.strategy is not None and self.strategy.has_approval() and not self.approval.approvers:
            raise ValueError(
                "strategy: an approval step needs approval.approvers (who may approve it, as for promotions)"
            )
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
PROTECTED_FIELDS = (
    "approval",
    "verify",
    "repository",
    "path",
    "cluster",
    "namespace",
    "namespaces",
    "cluster-kinds",
    "service-account",
    "version",
    "semver",
    "prereleases",
    "prune",
    "allow-empty",
    "helm",
    "decryption",
    "strategy",
)
# ... and what weakens the safety net (step 15: changed without approval before): the automatic rollback, how long a
# release has to become healthy, how often drift is reverted
SAFETY_NET_FIELDS = ("auto-rollback", "health-timeout", "interval")
MAX_DIFF_LINES = 40


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, dict) and prefix.count("."):
        return  # an empty free-form mapping (helm.values: {}) is no value: its first key shows as `null -> …`
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
    lines = [
        f"{path}: {_short(before.get(path))} -> {_short(after.get(path))}"
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... and {len(lines) - MAX_DIFF_LINES} more"]
    return lines


def protected_changes(diff: list[str], safety_net: bool = True) -> list[str]:
    """The diff lines an approval-required environment applies only with a signed approval (`safety_net`: with
    SAFETY_NET_FIELDS; runs from before them decide without)."""
    fields = PROTECTED_FIELDS + SAFETY_NET_FIELDS if safety_net else PROTECTED_FIELDS
    return [line for line in diff if re.split(r"[.\[:]", line, maxsplit=1)[0] in fields]


_ADDED_FIELDS: dict[str, Any] = {
    "namespaces": [],
    "cluster-kinds": [],
    "service-account": None,
    "helm": None,
    "decryption": None,
    "strategy": None,
}


def spec_digest(spec: EnvironmentSpec) -> str:
    """What a signed approval of a spec change names as its digest: sha256 of the spec's canonical JSON."""
    data = spec.model_dump(mode="json", by_alias=True)
    # NB: fields added after specs were first signed are left out while unset, so a spec that does not use them
    # keeps its digest: approvals signed earlier still verify, and histories replay.
    for key, unset in _ADDED_FIELDS.items():
        if data.get(key) == unset:
            data.pop(key, None)
    if data["cluster"].get("name") is None:
        data["cluster"].pop("name", None)
    if data["approval"].get("max-approval-lifetime") is None:
        data["approval"].pop("max-approval-lifetime", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def pending_plan_spec(current: EnvironmentSpec, pending: EnvironmentSpec) -> EnvironmentSpec | str:
    """The spec `ferry diff --pending` plans with: the current spec with only the pending change's chart settings
    (values, values files, release name, in-release chart path, prune-crds). Nothing else of an unapproved change
    is acted on (its repository, cluster, namespace, service account, lookup). A reason string when the pending
    change cannot be planned so (it moves to another OCI chart, or stops or starts delivering a chart)."""
    if pending.helm is None or current.helm is None:
        return "the pending change does not change a chart's settings: `ferry diff --pending` plans only those"
    if pending.helm.is_oci and pending.helm.chart != current.helm.chart:
        return "the pending change moves to another OCI chart: it is planned once approved (`ferry diff`)"
    settings = {"lookup": current.helm.lookup, "version": current.helm.version, "semver": current.helm.semver}
    return current.model_copy(update={"helm": pending.helm.model_copy(update=settings)})
