"""Pure reconcile logic: object identity, apply/delete order, the plan (diff), inventory set maths.

A reconcile, after fluxcd/pkg ``ssa``: the adapter (``activities/cluster.py``) reads the live objects and the
inventory, ``plan()`` here says what each desired object needs (an ``ObjectChange``: create, update, unchanged),
what the previous inventory had that is gone from the artifact (stale, pruned in delete order) and in which stages
the writes go (definitions first); the adapter dry-runs, applies stage by stage, prunes and writes the inventory.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferry.errors import ErrorType
from ferry.fieldpaths import Path, differences, dotted, leaf_paths, managed_paths, value_at
from ferry.health import WORKLOAD_KINDS, snapshot
from ferry.reconcile import Action, HealthState, PlanEntry
from ferry.spec import RESERVED_NAMESPACES

ENVIRONMENT_LABEL = "ferry.dev/environment"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
HELM_RESOURCE_POLICY, HELM_KEEP = "helm.sh/resource-policy", "keep"  # a chart's objects Helm never deletes
PRUNE_ANNOTATION = "ferry.dev/prune"
FIELD_MANAGER = "ferry"
MANAGED_BY = FIELD_MANAGER  # the managed-by label's value on everything ferry writes
# Applied (and, for CRDs and Namespaces, awaited) before anything else: what the rest may need to exist. NB: a
# RoleBinding is judged by RBAC against its Role, so a new Role must exist before its binding can be dry-run.
DEFINITION_KINDS = ("CustomResourceDefinition", "Namespace", "ClusterRole", "Role")
AWAITED_KINDS = ("CustomResourceDefinition", "Namespace")
Kind = tuple[str, str]  # (apiVersion, kind): what the API server serves
# Fields a manifest may carry that the server owns; never compared, never applied.
_SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

# Apply order (lightkube's sort_objects, Flux's ssa ordering): definitions and namespaces first, then what
# others reference, then workloads. Deletes run in reverse.
_ORDER = [
    "CustomResourceDefinition",
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "PriorityClass",
    "StorageClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
]
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
        return cls(
            api_version=obj["apiVersion"], kind=obj["kind"], namespace=meta.get("namespace") or "", name=meta["name"]
        )

    @classmethod
    def parse(cls, key: str, api_version: str) -> ObjectId:
        _, kind, namespace, name = key.split("/", 3)
        return cls(api_version=api_version, kind=kind, namespace=namespace, name=name)


def _apply_rank(obj: Mapping[str, Any]) -> tuple[int, str, str, str]:
    return (
        _RANK.get(obj["kind"], len(_ORDER)),
        obj["kind"],
        (obj.get("metadata") or {}).get("namespace") or "",
        obj["metadata"]["name"],
    )


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=_apply_rank)


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
    meta["labels"] = {**(meta.get("labels") or {}), ENVIRONMENT_LABEL: environment, MANAGED_BY_LABEL: MANAGED_BY}
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
        return (
            ""
            if oid.name in namespaces
            else (f"{oid}: not one of this environment's namespaces ({', '.join(sorted(namespaces))})")
        )
    if oid.kind in cluster_kinds:
        return ""
    return f"{oid}: cluster-scoped kind {oid.kind} is not in this environment's cluster-kinds"


class ObjectChange(BaseModel):
    id: ObjectId
    action: Action
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


def _ownership_changes(
    owned: set[Path], claimed: set[Path], body: Mapping[str, Any], live: Mapping[str, Any]
) -> set[Path]:
    """Paths whose ownership an apply of `body` would change: claimed but not owned, owned but no longer set.
    NB: the server owns some fields whole (atomic: a selector, a roleRef) where the local model descends into
    them; an owned atomic field is compared by value instead."""
    changes = {c for c in claimed - owned if not any(c[: len(o)] == o for o in owned)}
    for path in owned - claimed:
        if not any(c[: len(path)] == path for c in claimed):
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
    """Ferry's own annotation, or Helm's ``helm.sh/resource-policy: keep`` (trimmed, lower-cased, as Helm reads it:
    pkg/action/resource_policy.go), on the live object."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(PRUNE_ANNOTATION, "")).lower() == "disabled" or (
        str(annotations.get(HELM_RESOURCE_POLICY, "")).strip().lower() == HELM_KEEP
    )


def environment_selector(environment: str) -> str:
    """The label selector of the objects an environment owns."""
    return f"{ENVIRONMENT_LABEL}={environment}"


# ------------------------------------------------------------------------------------- refusals
class Refused(ValueError):
    """The whole reconcile is refused before anything is written; ``type`` is how the adapter classifies it."""

    def __init__(self, type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.type = type


def shown(items: list[str], limit: int = 5) -> str:
    """The first `limit` items of a refusal, and how many more there are."""
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def crd_scopes(objects: Iterable[Mapping[str, Any]]) -> dict[Kind, str | None]:
    """The kinds the artifact's own CustomResourceDefinitions define, one per served version, with their scope."""
    return {
        (f"{o['spec']['group']}/{v['name']}", o["spec"]["names"]["kind"]): o["spec"].get("scope")
        for o in objects
        if o.get("kind") == "CustomResourceDefinition"
        for v in (o.get("spec") or {}).get("versions", [])
    }


def check_unique(desired: Iterable[Mapping[str, Any]]) -> None:
    """Refuse (RenderFailed) an artifact that renders one object twice."""
    dupes = sorted(key for key, n in Counter(ObjectId.of(d).key() for d in desired).items() if n > 1)
    if dupes:
        raise Refused(ErrorType.RENDER_FAILED, f"the artifact renders duplicate objects: {', '.join(dupes)}")


def confine(
    environment: str,
    namespace: str,
    namespaces: Collection[str],
    cluster_kinds: Collection[str],
    desired: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Where the environment may write (its namespaces, else its one namespace); any object of the artifact
    outside them refuses the whole reconcile (OutOfBounds), naming the objects. `desired` is prepared: a namespace
    on namespaced objects only."""
    allowed = list(namespaces) or [namespace]
    if namespace not in allowed:
        # people's specs are checked for this at apply; a raw start or update is not
        raise Refused(
            ErrorType.OUT_OF_BOUNDS,
            f"{environment}'s namespace {namespace} is not one of its namespaces {allowed}; nothing was applied",
        )
    reserved = sorted(set(allowed) & set(RESERVED_NAMESPACES))
    if reserved:
        raise Refused(
            ErrorType.OUT_OF_BOUNDS,
            f"{environment} may not write to namespace {reserved[0]}: it is "
            "reserved for ferry's inventories and leases; nothing was applied",
        )
    refused = [
        why
        for d in desired
        if (why := outside(ObjectId.of(d), bool(d["metadata"].get("namespace")), allowed, cluster_kinds))
    ]
    if refused:
        raise Refused(
            ErrorType.OUT_OF_BOUNDS,
            f"{len(refused)} object(s) outside environment {environment}'s "
            f"bounds; nothing was applied: {shown(refused)}",
        )
    return allowed


def rejection(rejected: list[str], total: int, applied: list[str] | None = None) -> str:
    """The message of a reconcile the server's dry runs refused: what it rejected, and what was applied."""
    done = (
        f"only the definitions they need were applied ({', '.join(applied[:5])})" if applied else "nothing was applied"
    )
    return f"the server rejected {len(rejected)} of {total} objects in a dry run; {done}: {shown(rejected)}"


# ------------------------------------------------------------------------------------- inventory
def inventory_entries(data: Mapping[str, str] | None) -> dict[str, str]:
    """An inventory ConfigMap's data as object key -> apiVersion. An entry that is not a well-formed key
    (group/kind/namespace/name) and apiVersion is dropped: a hand-edited inventory must not stop every reconcile and
    health check, and what it named is never pruned."""
    entries = json.loads((data or {}).get("entries", "[]"))
    return {
        e["id"]: e["v"]
        for e in entries
        if isinstance(entries, list)
        and isinstance(e, dict)
        and isinstance(e.get("id"), str)
        and e["id"].count("/") >= 3
        and isinstance(e.get("v"), str)
    }


def inventory_data(entries: Mapping[str, str], digest: str, version: str, release: str = "") -> dict[str, str]:
    """The inventory ConfigMap's data for `entries` (object key -> apiVersion), byte-stable for the same input;
    ``release``: a chart's render key (its hooks ran for it), only for charts."""
    return {
        "entries": json.dumps([{"id": k, "v": v} for k, v in sorted(entries.items())], separators=(",", ":")),
        "digest": digest,
        "version": version,
    } | ({"release": release} if release else {})


def inventory_ids(entries: Mapping[str, str]) -> list[ObjectId]:
    return [ObjectId.parse(key, api_version) for key, api_version in entries.items()]


def kinds_to_list(desired: Iterable[Mapping[str, Any]], inventory: Mapping[str, str]) -> list[Kind]:
    """One LIST per kind the artifact or the previous inventory has, in a stable order."""
    return sorted(
        {(d["apiVersion"], d["kind"]) for d in desired}
        | {(oid.api_version, oid.kind) for oid in inventory_ids(inventory)}
    )


# ------------------------------------------------------------------------------------------ plan
WRITES = ("create", "update")


@dataclass
class Stage:
    """Writes applied together, in apply order; `deferred` are dry-run first, once the stages before it are
    applied (what they need arrives with this very plan)."""

    writes: list[tuple[dict[str, Any], ObjectChange]]
    deferred: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    """What a reconcile does: one ObjectChange per desired object (the artifact's order), the stale objects (the
    previous inventory's, gone from the artifact), and `prune`: the stale objects still live, in delete order,
    each "delete" or "skip" (its prune annotation says disabled, or it is outside the environment's bounds)."""

    desired: list[dict[str, Any]]
    live: Mapping[str, dict[str, Any]]
    changes: list[ObjectChange]
    stale: list[ObjectId]
    prune: list[ObjectChange]
    unserved: frozenset[Kind] = frozenset()  # kinds the server does not serve yet (their CRD comes with the plan)

    def __post_init__(self) -> None:
        # (kind, namespace, name) of every create; the server's dry run confirms updates only, never a create
        self._created = {(c.id.kind, c.id.namespace, c.id.name) for c in self.changes if c.action == "create"}

    @property
    def unchanged(self) -> int:
        return sum(c.action == "unchanged" for c in self.changes)

    def writes(self) -> list[tuple[dict[str, Any], ObjectChange]]:
        return [(d, c) for d, c in zip(self.desired, self.changes, strict=True) if c.action in WRITES]

    def confirm(self, index: int, dry_run: Mapping[str, Any]) -> None:
        """Judge the candidate update at `index` by the server's dry run of it (``confirm_update``)."""
        desired = self.desired[index]
        self.changes[index] = confirm_update(desired, self.live[ObjectId.of(desired).key()], dry_run)

    def deferred(self, obj: Mapping[str, Any]) -> bool:
        """What it needs arrives with this very plan (its kind, its namespace, the Role it binds): the server can
        only judge it once the definitions are applied."""
        meta = obj["metadata"]
        ref = obj.get("roleRef") or {}
        ref_namespace = (meta.get("namespace") or "") if ref.get("kind") == "Role" else ""
        return (
            (obj["apiVersion"], obj["kind"]) in self.unserved
            or ("Namespace", "", meta.get("namespace") or "") in self._created
            or (
                obj["kind"].endswith("RoleBinding")
                and (ref.get("kind"), ref_namespace, ref.get("name")) in self._created
            )
        )

    def stages(self) -> tuple[Stage, Stage]:
        """Definitions (CRDs, Namespaces, Roles) first, then the rest, with its deferred objects (as Flux does):
        a bad object of a new kind, in a new namespace or binding a new Role leaves only definitions behind."""
        writes = self.writes()
        definitions = [w for w in writes if w[0]["kind"] in DEFINITION_KINDS]
        rest = [w for w in writes if w[0]["kind"] not in DEFINITION_KINDS]
        return (
            Stage(sorted(definitions, key=lambda w: _apply_rank(w[0]))),
            Stage(sorted(rest, key=lambda w: _apply_rank(w[0])), [d for d, _ in rest if self.deferred(d)]),
        )

    def inventory(self) -> dict[str, str]:
        """The inventory entries of the desired objects: key -> apiVersion."""
        return {ObjectId.of(d).key(): d["apiVersion"] for d in self.desired}

    def rollout_health(self, kept: Mapping[str, str], summary: str, digest: str) -> HealthState:
        """A writing reconcile's verdict, given the inventory it kept. A written workload (or a stale one whose prune
        failed: still in the inventory) is Progressing, judged by wait_healthy. Anything else written has no rollout
        to wait for (wait_healthy reads only the inventory's workloads): the unchanged objects' health is the
        rollout's."""
        desired = self.inventory()
        written = [c.id.kind for c in self.changes if c.action in WRITES]
        stale = [o.kind for o in inventory_ids({k: v for k, v in kept.items() if k not in desired})]
        if any(kind in WORKLOAD_KINDS for kind in written + stale):
            return HealthState(status="Progressing", reason=summary, digest=digest)
        return snapshot(self.live_objects(only_unchanged=True), digest)

    def live_objects(self, only_unchanged: bool = False) -> list[dict[str, Any]]:
        """The live counterparts of the desired objects (with `only_unchanged`, of those the plan leaves alone)."""
        keys = [c.id.key() for c in self.changes if not only_unchanged or c.action == "unchanged"]
        return [self.live[k] for k in keys if k in self.live]

    def entries(self) -> list[PlanEntry]:
        """The plan as a dry run reports it (ReconcileResult.plan, a shape old histories carry): every change
        but the unchanged, then every stale object as a delete."""
        return [
            PlanEntry(object=str(c.id), action=c.action, fields=c.fields)
            for c in self.changes
            if c.action != "unchanged"
        ] + [PlanEntry(object=str(oid), action="delete") for oid in self.stale]


def plan(
    desired: list[dict[str, Any]],
    live: Mapping[str, dict[str, Any]],
    inventory: Mapping[str, str],
    *,
    prune: bool,
    namespaces: Collection[str],
    cluster_kinds: Collection[str],
    unserved: Collection[Kind] = (),
) -> Plan:
    """The local plan, no request: `desired` prepared objects, `live` the environment's labelled objects by key,
    `inventory` the previous one (key -> apiVersion). Candidate updates are confirmed later by the server's dry
    run (``Plan.confirm``); stale objects are pruned only with `prune`, never outside `namespaces` and
    `cluster_kinds` (an inventory from before confinement, or a spec that narrowed them)."""
    changes = [plan_object(d, live.get(ObjectId.of(d).key())) for d in desired]
    gone = stale(inventory, (c.id.key() for c in changes)) if prune else []
    stale_ids = [ObjectId.parse(k, inventory[k]) for k in gone]
    to_prune = [
        ObjectChange(
            id=oid,
            action="skip"
            if prune_disabled(live[oid.key()]) or outside(oid, bool(oid.namespace), namespaces, cluster_kinds)
            else "delete",
        )
        for oid in delete_order(stale_ids)
        if oid.key() in live
    ]
    return Plan(
        desired=desired, live=live, changes=changes, stale=stale_ids, prune=to_prune, unserved=frozenset(unserved)
    )
