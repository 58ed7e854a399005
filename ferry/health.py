"""kstatus-style health of live objects: Current, InProgress or Failed, with a reason."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from ferry.reconcile import HealthState

Status = Literal["Current", "InProgress", "Failed"]
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CustomResourceDefinition"})


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in ((obj.get("status") or {}).get("conditions") or [])}


def object_status(obj: Mapping[str, Any]) -> tuple[Status, str]:
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    name = f"{kind}/{meta.get('name')}"
    if kind not in WORKLOAD_KINDS:
        return "Current", "applied"
    if kind == "CustomResourceDefinition":
        established = _conditions(obj).get("Established", {}).get("status") == "True"
        return ("Current", "established") if established else ("InProgress", f"{name} not yet established")
    if kind == "Job":
        conds = _conditions(obj)
        if conds.get("Failed", {}).get("status") == "True":
            return "Failed", f"{name} failed: {conds['Failed'].get('reason', '')} {conds['Failed'].get('message', '')}"
        if conds.get("Complete", {}).get("status") == "True":
            return "Current", "complete"
        return "InProgress", f"{name} running"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if observed is None or (generation is not None and observed < generation):
        return "InProgress", f"{name}: controller has not observed generation {generation}"
    if kind == "Deployment":
        progressing = _conditions(obj).get("Progressing", {})
        if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "Failed", f"{name}: ProgressDeadlineExceeded: {progressing.get('message', '')}".strip()
        replicas = int(spec.get("replicas", 1))
        for field in ("updatedReplicas", "readyReplicas", "availableReplicas"):
            if int(status.get(field) or 0) < replicas:
                return "InProgress", f"{name}: {field} {status.get(field) or 0}/{replicas}"
        return "Current", "rolled out"
    if kind == "StatefulSet":
        replicas = int(spec.get("replicas", 1))
        if int(status.get("readyReplicas") or 0) < replicas:
            return "InProgress", f"{name}: readyReplicas {status.get('readyReplicas') or 0}/{replicas}"
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return "InProgress", f"{name}: rolling to {status.get('updateRevision')}"
        return "Current", "rolled out"
    desired = int(status.get("desiredNumberScheduled") or 0)
    for field in ("updatedNumberScheduled", "numberAvailable"):
        if int(status.get(field) or 0) < desired:
            return "InProgress", f"{name}: {field} {status.get(field) or 0}/{desired}"
    return "Current", "rolled out"


def snapshot(objects: Iterable[Mapping[str, Any]], digest: str) -> HealthState:
    """The health of a set of live objects at once: Failed if any failed, Progressing if any is in progress,
    else Healthy. Reasons are joined and capped at 1,000 characters."""
    statuses = [object_status(o) for o in objects]
    failed = [reason for status, reason in statuses if status == "Failed"]
    if failed:
        return HealthState(status="Failed", reason="; ".join(failed)[:1000], digest=digest)
    waiting = [reason for status, reason in statuses if status == "InProgress"]
    if waiting:
        return HealthState(status="Progressing", reason="; ".join(waiting)[:1000], digest=digest)
    return HealthState(status="Healthy", reason="all objects current", digest=digest)
