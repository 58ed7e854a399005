"""Helm hooks as Helm v4.3.2 reads, orders and deletes them (pure: objects in, decisions out).

Sources (the helm.sh/helm/v4 v4.3.2 module, the same tree as github.com/helm/helm at tag v4.3.2):
- events and parsing: ``pkg/release/v1/util/manifest_sorter.go:54-66`` (the event names, ``test-success`` an alias
  of ``test``) and ``:164-239`` (``helm.sh/hook`` split on commas, each trimmed and lower-cased, one unknown event
  drops the object; ``helm.sh/hook-weight`` through ``strconv.Atoi``, 0 when that fails; delete policies split,
  trimmed and lower-cased, unknown ones kept but never matching);
- order: ``pkg/release/v1/util/kind_sorter.go:31-70`` (InstallOrder) and ``:120-161`` (a stable sort by kind,
  unknown kinds last and alphabetical) over the template files sorted by path (``manifest_sorter.go:80-84``), then
  ``pkg/action/hooks.go:73-74`` (``sort.Stable(hookByWeight(...))``) with ``:170-177`` (weight, then name). So kind
  only breaks ties of equal weight *and* name (the docs' "weight, kind, name" is wrong: helm/helm#12414);
- deletion: ``hooks.go:237-246`` (no policy means ``before-hook-creation``), ``:183-186`` (a CustomResourceDefinition
  hook is never deleted), ``:133-141`` (a failed hook: ``hook-failed`` for it, ``hook-succeeded`` for those before
  it, in order) and ``:150-158`` (all succeeded: ``hook-succeeded`` in reverse order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HOOK_ANNOTATION = "helm.sh/hook"
HOOK_WEIGHT_ANNOTATION = "helm.sh/hook-weight"
HOOK_DELETE_ANNOTATION = "helm.sh/hook-delete-policy"

PRE_INSTALL, POST_INSTALL = "pre-install", "post-install"
PRE_UPGRADE, POST_UPGRADE = "pre-upgrade", "post-upgrade"
PRE_DELETE, POST_DELETE = "pre-delete", "post-delete"
PRE_ROLLBACK, POST_ROLLBACK = "pre-rollback", "post-rollback"
TEST = "test"
# The annotation's words and the event each means (manifest_sorter.go:54-66).
EVENTS: Mapping[str, str] = {
    e: e
    for e in (
        PRE_INSTALL,
        POST_INSTALL,
        PRE_DELETE,
        POST_DELETE,
        PRE_UPGRADE,
        POST_UPGRADE,
        PRE_ROLLBACK,
        POST_ROLLBACK,
        TEST,
    )
} | {"test-success": TEST}

BEFORE_HOOK_CREATION = "before-hook-creation"
HOOK_SUCCEEDED = "hook-succeeded"
HOOK_FAILED = "hook-failed"
CRD_KIND = "CustomResourceDefinition"

# kind_sorter.go:31-70, in Helm's order.
HELM_INSTALL_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_RANK = {kind: i for i, kind in enumerate(HELM_INSTALL_ORDER)}
# strconv.Atoi: an optional sign and ASCII digits only (no spaces, no underscores), within int64.
_ATOI = re.compile(r"[+-]?[0-9]+")
_INT64 = 1 << 63


class HookRefused(ValueError):
    """A hook annotation Helm itself would not have read (not a string): names the object and annotation."""


@dataclass(frozen=True)
class Hook:
    """One hook object: ``path`` is the template it came from (``# Source:``), ``events`` in annotation order."""

    name: str
    kind: str
    path: str
    events: tuple[str, ...]
    weight: int
    delete_policies: tuple[str, ...]
    object: dict[str, Any] = field(compare=False, repr=False)

    @property
    def is_test(self) -> bool:
        """A ``test``/``test-success`` hook: `helm test` runs it, a release never does (Ferry skips it)."""
        return TEST in self.events

    @property
    def effective_delete_policies(self) -> tuple[str, ...]:
        """The policies Helm acts on: ``before-hook-creation`` when the annotation names none (hooks.go:237-246)."""
        return self.delete_policies or (BEFORE_HOOK_CREATION,)


def _annotation(annotations: Mapping[str, Any], key: str, where: str) -> str | None:
    value = annotations.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HookRefused(f"{where}: annotation {key} is {type(value).__name__}, not a string (quote it)")
    return value


def _words(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",")]


def hook_weight(value: str | None) -> int:
    """``helm.sh/hook-weight`` as Helm reads it: strconv.Atoi, else 0 (" 5", "1.5", "1_0" and 2**63 are all 0)."""
    if value is None or not _ATOI.fullmatch(value):
        return 0
    number = int(value)
    return number if -_INT64 <= number < _INT64 else 0


def parse_hook(obj: Mapping[str, Any], path: str) -> Hook | None:
    """The hook ``obj`` is, or None when Helm drops it (an unknown or empty event, e.g. Helm 2's ``crd-install``).

    Call it only for objects that carry ``helm.sh/hook`` (the others are plain manifests). HookRefused when an
    annotation Helm reads is not a string."""
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    name, kind = str(metadata.get("name", "")), str(obj.get("kind", ""))
    where = f"{path}: {kind}/{name}"
    raw_events = _annotation(annotations, HOOK_ANNOTATION, where)
    if raw_events is None:
        raise HookRefused(f"{where}: no {HOOK_ANNOTATION} annotation: not a hook")
    events: list[str] = []
    for word in _words(raw_events):
        if word not in EVENTS:
            return None
        events.append(EVENTS[word])
    deletes = _annotation(annotations, HOOK_DELETE_ANNOTATION, where)
    return Hook(
        name=name,
        kind=kind,
        path=path,
        events=tuple(events),
        weight=hook_weight(_annotation(annotations, HOOK_WEIGHT_ANNOTATION, where)),
        delete_policies=tuple(_words(deletes)) if deletes is not None else (),
        object=dict(obj),
    )


def kind_rank(kind: str) -> tuple[int, int, str]:
    """Helm's lessByKind as a key: InstallOrder first, unknown kinds after, alphabetically (kind_sorter.go:139-161)."""
    if kind in _RANK:
        return (0, _RANK[kind], "")
    return (1, 0, kind)


def ordered(hooks: Sequence[Hook], event: str) -> list[Hook]:
    """The hooks that run for ``event``, in the order Helm runs them.

    ``hooks`` in render order (as `helm template` prints them, or any order within one template file's kind).
    Helm's release holds the hooks kind-sorted (stable) over template files sorted by path
    (manifest_sorter.go:80-84, kind_sorter.go:131-137); the event's hooks are then ``sort.Stable`` by weight, then
    name (hooks.go:73-74,170-177). One stable sort on (weight, name, kind, path) is the same order. A hook that names
    the event twice runs twice, as in Helm (hooks.go:65-71 appends once per matching event)."""
    chosen = [hook for hook in hooks for e in hook.events if e == event]
    return sorted(chosen, key=lambda h: (h.weight, h.name, kind_rank(h.kind), h.path))


def deletes_before_creation(hook: Hook) -> bool:
    """Whether the old copy of ``hook`` is deleted (and waited for) before it is created again (hooks.go:78-80)."""
    return hook.kind != CRD_KIND and BEFORE_HOOK_CREATION in hook.effective_delete_policies


def deletions(succeeded: Sequence[Hook], failed: Hook | None = None) -> list[Hook]:
    """The hooks to delete once an event's hooks have run, in Helm's order.

    ``succeeded``: the hooks that ran and succeeded, in run order; ``failed``: the one that failed after them (the
    rest never ran). On failure: ``failed`` when it has ``hook-failed``, then each of ``succeeded`` with
    ``hook-succeeded`` in run order (hooks.go:133-141). On success: those with ``hook-succeeded`` in reverse run
    order (hooks.go:150-158). A CustomResourceDefinition is never deleted (hooks.go:183-186)."""
    out: list[Hook] = []
    if failed is not None:
        if HOOK_FAILED in failed.effective_delete_policies:
            out.append(failed)
        out.extend(h for h in succeeded if HOOK_SUCCEEDED in h.effective_delete_policies)
    else:
        out.extend(h for h in reversed(succeeded) if HOOK_SUCCEEDED in h.effective_delete_policies)
    return [h for h in out if h.kind != CRD_KIND]


# ---------------------------------------------------------------------------------- running hooks
# How Ferry runs an event's hooks on the cluster (activities/cluster/hooks.py, which also holds the rules that need
# ferry.plan: this module sits below it in the layers). A hook object carries these two labels and never
# ferry.plan.ENVIRONMENT_LABEL: hooks are not in Helm's release manifest, so they stay out of the
# environment's inventory, prune, drift and health listing (all of which select on ENVIRONMENT_LABEL).
HOOK_OF_LABEL = "ferry.dev/hook-of"  # the environment whose hook it is
HOOK_EVENT_LABEL = "ferry.dev/hook"  # the event it last ran for
# Helm's --timeout default (pkg/cmd/install.go:196): each hook's wait (and each wait for a deleted copy to go).
HOOK_TIMEOUT = 300.0
HOOK_POLL_SECONDS = 0.25
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


def runs_for(hooks: Sequence[Hook], event: str) -> list[Hook]:
    """The hooks a release runs for ``event``, in Helm's order: never a test hook (Ferry renders with
    ``--skip-tests``, which drops any hook naming ``test``; this keeps that true of any Hook list)."""
    if event == TEST:
        return []
    return [hook for hook in ordered(hooks, event) if not hook.is_test]


def _true_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def hook_state(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(RUNNING | SUCCEEDED | FAILED, why) of a live hook, as Helm's hook waiter reads it
    (internal/statusreaders/job_status_reader.go, pod_status_reader.go; pkg/kube/statuswait.go:78-97): a Job by
    its Complete or Failed condition, a Pod by its phase, any other kind succeeded as soon as it exists."""
    kind = obj.get("kind")
    if kind == "Job":
        for type_, state in (("Complete", SUCCEEDED), ("Failed", FAILED)):
            cond = _true_condition(obj, type_)
            if cond is not None:
                reason = ": ".join(str(cond[k]) for k in ("reason", "message") if cond.get(k))
                return state, reason or f"condition {type_}"
        return RUNNING, "Job in progress"
    if kind == "Pod":
        phase = str((obj.get("status") or {}).get("phase") or "")
        if phase in ("Succeeded", "Failed"):
            reason = str((obj.get("status") or {}).get("reason") or (obj.get("status") or {}).get("message") or "")
            return (SUCCEEDED if phase == "Succeeded" else FAILED), f"phase {phase}" + (f": {reason}" if reason else "")
        return RUNNING, f"Pod {phase or 'pending'}"
    return SUCCEEDED, "ready at once"
