"""The records of reconcile, plan, resolve, check and health activities, and change sets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from ferry.bounded import cap_ids, cap_objects
from ferry.helm_spec import HelmSource
from ferry.model import Model
from ferry.oci import Digest


class VersionRef(Model):
    version: str
    digest: Digest


HealthStatus = Literal["Unknown", "Healthy", "Progressing", "Failed"]


class HealthState(Model):
    status: HealthStatus | str = "Unknown"
    reason: str = ""
    digest: str = ""
    at: str = ""


class ChangeSet(Model):
    """What one reconcile did: counts and object ids, never object bodies. Serialized (into history) with at most
    MAX_IDS ids per list; `totals` keeps the true counts."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    unchanged: int = 0
    prune_skipped: list[str] = Field(default_factory=list)
    prune_failed: list[str] = Field(default_factory=list)
    drift: dict[str, list[str]] = Field(default_factory=dict, description="object -> field paths put back")
    hooks: list[str] = Field(default_factory=list, description="a chart's Helm hooks run, `Kind/ns/name event`")
    secrets: dict[str, list[str]] = Field(
        default_factory=dict, description="Secret written -> `data.KEY=hmac-sha256:…` per value (never a value)"
    )
    api_requests: int = 0
    totals: dict[str, int] = Field(default_factory=dict, description="true counts of lists capped in history")

    _LISTS = ("created", "updated", "deleted", "prune_skipped", "prune_failed", "hooks", "drift")

    @model_serializer(mode="wrap")
    def _bounded(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            data["totals"] = {name: self.count(name) for name in self._LISTS if self.count(name)}
            for name in self._LISTS[:-1]:
                data[name] = cap_ids(list(data.get(name) or []))
            data["drift"] = cap_objects(dict(data.get("drift") or {}))
            if not data.get("hooks"):
                data.pop("hooks", None)  # NB: a reconcile without a chart's hooks keeps its wire bytes (old histories)
            if data.get("secrets"):
                data["secrets"] = cap_objects(dict(data["secrets"]))
            else:
                data.pop("secrets", None)  # NB: as hooks
        return data

    def count(self, name: str) -> int:
        return self.totals.get(name, len(getattr(self, name)))

    @property
    def changed(self) -> bool:
        return bool(self.count("created") or self.count("updated") or self.count("deleted"))

    def summary(self) -> str:
        return (
            f"{self.count('created')} created, {self.count('updated')} updated, {self.count('deleted')} deleted, "
            f"{self.unchanged} unchanged"
        )


class PlanRequest(Model):
    version: str | None = None
    pending: bool = Field(False, description="plan with the spec change awaiting approval (`ferry diff --pending`)")


MAX_PLAN_ENTRIES = 200  # `ferry diff` shows this many changes; the rest are counted (history stays small)
# What a plan does to one object: written (create, update), left alone (unchanged), pruned (delete) or kept although
# stale (skip: its prune annotation says disabled, or it is outside the environment's bounds).
Action = Literal["create", "update", "unchanged", "delete", "skip"]


class PlanEntry(Model):
    """One line of a dry run's plan (`ferry diff`): the object (Kind/namespace/name), what a reconcile would do to
    it and, for an update, the field paths it would change."""

    object: str
    action: Action | str  # str: a plan from a newer worker (an action this build does not know) still decodes
    fields: list[str] = Field(default_factory=list)
    secret: list[str] = Field(
        default_factory=list, description="a Secret's keys as it would be written, `data.KEY=hmac-sha256:…`"
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not data.get("secret"):
            data.pop("secret", None)  # NB: a plan without Secrets keeps its wire bytes
        elif isinstance(data, dict):
            data["secret"] = cap_ids(list(data["secret"]))  # a Secret of 4,096 keys stays a few KiB
        return data


class PlanResult(Model):
    version: str
    digest: str
    changes: list[PlanEntry] = Field(default_factory=list, description="{object, action, fields}, capped")
    prune: list[str] = Field(default_factory=list)
    more: int = Field(0, description="changes and prunes not listed")


# --------------------------------------------------------------------------------------- activities


class ResolveInput(Model):
    repository: str
    version: str | None = None
    semver: str | None = None
    prereleases: bool = False
    held: list[str] = Field(default_factory=list)


class ResolveResult(Model):
    ref: VersionRef | None = None
    candidates: int = 0


class ReconcileInput(Model):
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
    check_only: bool = Field(
        False,
        description="stop before the first write; `pending` counts what a reconcile "
        "would write (the no-op check of an iteration)",
    )
    helm: HelmSource | None = Field(None, description="render this chart (ferry.helm_spec) instead of `path`")
    decryption: Literal["sops"] | None = Field(None, description="decrypt the release's SOPS files on the worker")
    canary_workload: str = Field(
        "",
        description="the Deployment a rollout strategy manages (ferry.rollout_objects): applied without "
        "spec.replicas (the rollout scales it) and with its canary role label",
    )


class ReconcileResult(Model):
    changes: ChangeSet
    health: HealthState
    revision: str = ""
    plan: list[PlanEntry] = Field(
        default_factory=list, description="only for dry runs (ferry diff); at most MAX_PLAN_ENTRIES entries in history"
    )
    plan_total: int = 0
    pending: int = Field(
        0,
        description="check_only: writes (creates, updates, drift, prunes, inventory) a reconcile "
        "would make; when non-zero nothing was written and `changes`/`health` are not a verdict",
    )

    @model_serializer(mode="wrap")
    def _bounded(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and len(self.plan) > MAX_PLAN_ENTRIES:
            data["plan_total"] = len(self.plan)
            data["plan"] = data["plan"][:MAX_PLAN_ENTRIES]
            for entry in data["plan"]:
                entry["fields"] = cap_ids(list(entry.get("fields") or []))
        return data


class CheckInput(Model):
    """An iteration's no-op check, run as one local activity: resolve what the spec tracks (when it tracks), and
    when that is still the applied digest, check the cluster against it without writing."""

    resolve: ResolveInput | None = None
    reconcile: ReconcileInput


class CheckResult(Model):
    found: ResolveResult | None = Field(None, description="the resolve's answer, when the check resolved")
    result: ReconcileResult | None = Field(
        None, description="None when the resolved digest is not the applied one (the cluster was not read)"
    )


class HealthInput(Model):
    environment: str
    digest: str
    cluster: str = ""
    kubeconfig: str | None = None
    context: str | None = None
    timeout_seconds: int


class HealthResult(Model):
    health: HealthState
