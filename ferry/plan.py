"""Pure reconcile logic: object identity, apply/delete order, the plan (diff), inventory set maths."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferry.fieldpaths import differences, dotted

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


class ObjectChange(BaseModel):
    id: ObjectId
    action: str  # create | update | unchanged | delete | skip
    fields: list[str] = Field(default_factory=list, description="changed field paths, for updates")


def plan_object(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> ObjectChange:
    oid = ObjectId.of(desired)
    if live is None:
        return ObjectChange(id=oid, action="create")
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in desired["metadata"].items() if k not in ("name", "namespace")}
    changed = sorted({dotted(p) for p in differences(body, live)})
    return ObjectChange(id=oid, action="update" if changed else "unchanged", fields=changed)


def stale(previous: Iterable[str], desired: Iterable[str]) -> list[str]:
    """Inventory maths: what the previous apply had and this one lacks."""
    keep = set(desired)
    return sorted(k for k in previous if k not in keep)


def prune_disabled(live: Mapping[str, Any] | None) -> bool:
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(PRUNE_ANNOTATION, "")).lower() == "disabled"
