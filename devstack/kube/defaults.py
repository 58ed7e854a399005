"""Defaulting and validation, as a real API server does them for the kinds Ferry's examples use.

Defaulting matters: a reconciler that compares its manifest naively with the live object must see the
same eternal "drift" here that it would see on a real cluster.
"""

from __future__ import annotations

import base64
import re
from typing import Any

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names must be DNS-1123 labels (63 chars) or DNS-1035 labels (Service) instead of subdomains.
_LABEL_NAMES = {"Namespace"}
_DNS1035_NAMES = {"Service"}


class Invalid(Exception):
    """422: a list of (field, message) causes."""

    def __init__(self, kind: str, name: str, causes: list[tuple[str, str]]) -> None:
        self.kind, self.name, self.causes = kind, name, causes
        detail = "; ".join(f"{f}: {m}" for f, m in causes)
        super().__init__(f'{kind} "{name}" is invalid: {detail}')


def validate_name(kind: str, name: Any) -> str | None:
    if not name:
        return "Required value: name or generateName is required"
    if not isinstance(name, str):
        return "Invalid value: must be a string"
    if kind in _DNS1035_NAMES:
        if len(name) > 63 or not _DNS1035_LABEL.match(name):
            return (f'Invalid value: "{name}": a DNS-1035 label must consist of lower case alphanumeric characters '
                    "or '-', start with an alphabetic character, and end with an alphanumeric character")
    elif kind in _LABEL_NAMES:
        if len(name) > 63 or not _DNS1123_LABEL.match(name):
            return (f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                    "characters or '-', and must start and end with an alphanumeric character")
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return (f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_container(c: dict[str, Any]) -> None:
    if "image" in c:
        c.setdefault("imagePullPolicy", _image_pull_policy(str(c["image"])))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        if "valueFrom" in env and "fieldRef" in env["valueFrom"]:
            env["valueFrom"]["fieldRef"].setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _default_container(c)
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            vol["configMap"].setdefault("defaultMode", 420)
        if "secret" in vol:
            vol["secret"].setdefault("defaultMode", 420)


def _default_template(spec: dict[str, Any], restart_policy: str = "Always") -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        default_pod_spec(template.setdefault("spec", {}), restart_policy)


def apply_defaults(obj: dict[str, Any], allocate_cluster_ip: Any) -> None:
    """Fill what the API server fills, in place. Only absent fields are set, so it is idempotent."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    meta = obj.setdefault("metadata", {})
    if kind == "Secret":
        # stringData is write-only: the server folds it into base64 `data` and never returns it.
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            data = obj.setdefault("data", {}) or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        obj.setdefault("type", "Opaque")
        return
    if kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        return
    if not isinstance(spec, dict):
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Service", "Job"):
            obj["spec"] = spec = {}
        else:
            return
    if kind == "Deployment":
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
            strategy["rollingUpdate"].setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(spec)
    elif kind == "StatefulSet":
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        _default_template(spec)
    elif kind == "DaemonSet":
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        spec.setdefault("revisionHistoryLimit", 10)
        _default_template(spec)
    elif kind == "Job":
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        _default_template(spec, "Never")
    elif kind == "CronJob":
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
    elif kind == "Pod":
        default_pod_spec(spec)
    elif kind == "Service":
        svc_type = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if svc_type != "ExternalName":
            if "clusterIP" not in spec:
                spec["clusterIP"] = allocate_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif kind == "PersistentVolumeClaim":
        spec.setdefault("volumeMode", "Filesystem")


def _selector_matches(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def validate(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise Invalid for what a real server refuses with 422 for these kinds."""
    kind = str(obj.get("kind"))
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    causes: list[tuple[str, str]] = []
    problem = validate_name(kind, meta.get("name"))
    if problem:
        causes.append(("metadata.name", problem))
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63:
            causes.append((f"metadata.labels[{key}]", "Invalid value: must be a string of at most 63 characters"))
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        selector = spec.get("selector")
        template = spec.get("template") or {}
        if not selector:
            causes.append(("spec.selector", "Required value"))
        elif not _selector_matches(selector, (template.get("metadata") or {}).get("labels") or {}):
            causes.append(("spec.template.metadata.labels",
                           "Invalid value: `selector` does not match template `labels`"))
        if old is not None and (old.get("spec") or {}).get("selector") != selector:
            causes.append(("spec.selector", "Invalid value: field is immutable"))
        _validate_pod_spec(template.get("spec") or {}, "spec.template.spec", causes)
    if kind == "Job":
        _validate_pod_spec(((spec.get("template") or {}).get("spec")) or {}, "spec.template.spec", causes)
        if old is not None and (old.get("spec") or {}).get("template") != spec.get("template"):
            causes.append(("spec.template", "Invalid value: field is immutable"))
    if kind == "Pod":
        _validate_pod_spec(spec, "spec", causes)
    if kind == "Service":
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
            causes.append(("spec.ports", "Required value"))
        if old is not None and (old.get("spec") or {}).get("clusterIP") not in (None, spec.get("clusterIP")):
            causes.append(("spec.clusterIP", "Invalid value: field is immutable"))
    if kind in ("ConfigMap", "Secret"):
        for key, value in (obj.get("data") or {}).items():
            if not isinstance(value, str):
                causes.append((f"data[{key}]", "Invalid value: must be a string"))
    if causes:
        raise Invalid(kind, name, causes)


def _validate_pod_spec(spec: dict[str, Any], where: str, causes: list[tuple[str, str]]) -> None:
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{where}.containers", "Required value"))
        return
    for i, c in enumerate(containers):
        if not c.get("name"):
            causes.append((f"{where}.containers[{i}].name", "Required value"))
        if not c.get("image"):
            causes.append((f"{where}.containers[{i}].image", "Required value"))
