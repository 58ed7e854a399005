"""Pure reconcile logic: object identity, apply/delete order, the plan (diff), inventory set maths."""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferry.fieldpaths import Path, differences, dotted, leaf_paths, managed_paths, value_at

ENVIRONMENT_LABEL = "ferry.dev/environment"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PRUNE_ANNOTATION = "ferry.dev/prune"
FIELD_MANAGER = "ferry"
# Fields a manifest may carry that the server owns; never compared, never applied.
_SERVER_METADATA = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "selfLink",
                    "deletionTimestamp", "deletionGracePeriodSeconds")

# Apply order (lightkube's sort_objects, Flux's ssa ordering): definitions and namespaces first, then what
# others reference, then workloads. Deletes run in reverse.
_ORDER = ["CustomResourceDefinition", "Namespace", "ResourceQuota", "LimitRange", "PriorityClass",
          "StorageClass", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolume", "PersistentVolumeClaim",
          "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Deployment",
          "ReplicaSet", "StatefulSet", "Job", "CronJob", "Ingress", "NetworkPolicy", "HorizontalPodAutoscaler"]
_RANK = {kind: i for i, kind in enumerate(_ORDER)}


class ObjectId(BaseModel):
    """group/kind/namespace/name — how an object is known in plans, inventories and history."""

    model_config = ConfigDict(frozen=True)

    api_version: str
    kind: str
    namespace: str = ""
    name: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def key(self) -> str:
        return f"{self.group}/{self.kind}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectId:
        meta = obj.get("metadata") or {}
        return cls(api_version=obj["apiVersion"], kind=obj["kind"], namespace=meta.get("namespace") or "",
                   name=meta["name"])

    @classmethod
    def parse(cls, key: str, api_version: str) -> ObjectId:
        _, kind, namespace, name = key.split("/", 3)
        return cls(api_version=api_version, kind=kind, namespace=namespace, name=name)


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=lambda o: (_RANK.get(o["kind"], len(_ORDER)), o["kind"],
                                          (o.get("metadata") or {}).get("namespace") or "",
                                          o["metadata"]["name"]))


def delete_order(ids: Iterable[ObjectId]) -> list[ObjectId]:
    return sorted(ids, key=lambda i: (_RANK.get(i.kind, len(_ORDER)), i.kind, i.namespace, i.name), reverse=True)


def prepare(obj: Mapping[str, Any], environment: str, default_namespace: str, namespaced: bool) -> dict[str, Any]:
    """The object as ferry applies it: default namespace on namespaced objects without one, ownership label.
    NB: never the digest or version in labels; that would rewrite every object on every release."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    if namespaced:
        meta.setdefault("namespace", default_namespace)
    else:
        meta.pop("namespace", None)
    meta["labels"] = {**(meta.get("labels") or {}), ENVIRONMENT_LABEL: environment, MANAGED_BY_LABEL: "ferry"}
    out["metadata"] = meta
    if out.get("kind") == "Secret" and out.get("stringData"):
        # NB: the API server folds write-only stringData into base64 data and never returns it; applying
        # data instead keeps the diff honest (no eternal drift) and the field ownership stable.
        data = dict(out.get("data") or {})
        for key, value in out.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        out["data"] = data
    return out


def outside(oid: ObjectId, namespaced: bool, namespaces: Collection[str], cluster_kinds: Collection[str]) -> str:
    """Why an environment confined to `namespaces` and `cluster_kinds` may not write `oid`, or ''. Its own
    Namespace objects are its own; any other Namespace (another environment's, the cluster's) never is."""
    if namespaced:
        if oid.namespace in namespaces:
            return ""
        return f"{oid}: namespace {oid.namespace!r} is not this environment's ({', '.join(sorted(namespaces))})"
    if oid.kind == "Namespace" and oid.group == "":
        return "" if oid.name in namespaces else (
            f"{oid}: not one of this environment's namespaces ({', '.join(sorted(namespaces))})")
    if oid.kind in cluster_kinds:
        return ""
    return f"{oid}: cluster-scoped kind {oid.kind} is not in this environment's cluster-kinds"


class ObjectChange(BaseModel):
    id: ObjectId
    action: str  # create | update | unchanged | delete | skip
    fields: list[str] = Field(default_factory=list, description="changed field paths, for updates")


def _applied_body(desired: Mapping[str, Any]) -> dict[str, Any]:
    """What managedFields records of an apply: everything but apiVersion, kind, name and namespace."""
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in desired["metadata"].items() if k not in ("name", "namespace")}
    return body


def plan_object(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> ObjectChange:
    """The local plan: create, unchanged, or a candidate update the server confirms (``confirm_update``).

    Unchanged needs both: every field the manifest sets is live with the same value (server defaults and
    fields owned by others are not differences; quantities compare by amount), and the fields ferry owns in
    live's managedFields are exactly the ones this manifest sets (a field no longer in the manifest must be
    removed). Anything else is a candidate, never applied before a server-side dry run confirms it."""
    oid = ObjectId.of(desired)
    if live is None:
        return ObjectChange(id=oid, action="create")
    body = _applied_body(desired)
    changed = {dotted(p) for p in differences(body, live)}
    owned = managed_paths(live, FIELD_MANAGER)
    if owned is None:
        changed.add(".metadata.managedFields[manager=ferry]")  # never applied by ferry: adopt it
    else:
        changed |= {dotted(p) for p in _ownership_changes(owned, set(leaf_paths(body)), body, live)}
    return ObjectChange(id=oid, action="update" if changed else "unchanged", fields=sorted(changed))


def _ownership_changes(owned: set[Path], claimed: set[Path], body: Mapping[str, Any], live: Mapping[str, Any]
                       ) -> set[Path]:
    """Paths whose ownership an apply of `body` would change: claimed but not owned, owned but no longer set.
    NB: the server owns some fields whole (atomic: a selector, a roleRef) where the local model descends into
    them; an owned atomic field is compared by value instead."""
    changes = {c for c in claimed - owned if not any(c[:len(o)] == o for o in owned)}
    for path in owned - claimed:
        if not any(c[:len(path)] == path for c in claimed):
            changes.add(path)  # dropped from the manifest: the apply removes it
        elif value_at(body, path) != value_at(live, path):
            changes.add(path)
    return changes


def confirm_update(desired: Mapping[str, Any], live: Mapping[str, Any], dry_run: Mapping[str, Any]) -> ObjectChange:
    """Judge a candidate update by the server's own answer: `dry_run` is the object as a server-side dry-run
    apply of `desired` would leave it. Changed are the fields ferry applies whose value the server would change
    (a value it merely normalises, e.g. cpu 0.5 -> 500m, or prunes, is no change) and the fields whose
    ownership by ferry would change (one dropped from the manifest is removed)."""
    body = _applied_body(desired)
    changed = {dotted(p) for p in differences(body, live) if value_at(dry_run, p) != value_at(live, p)}
    owned_live = managed_paths(live, FIELD_MANAGER) or set()
    owned_after = managed_paths(dry_run, FIELD_MANAGER) or set()
    changed |= {dotted(p) for p in owned_live ^ owned_after}
    return ObjectChange(id=ObjectId.of(desired), action="update" if changed else "unchanged", fields=sorted(changed))


def stale(previous: Iterable[str], desired: Iterable[str]) -> list[str]:
    """Inventory maths: what the previous apply had and this one lacks."""
    keep = set(desired)
    return sorted(k for k in previous if k not in keep)


def prune_disabled(live: Mapping[str, Any] | None) -> bool:
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(PRUNE_ANNOTATION, "")).lower() == "disabled"
