"""The objects of a progressive rollout (issue 29), Flagger's design with Ferry's names; pure, no I/O.

The release's Deployment W (the strategy's `workload`) is the canary: the reconcile applies it without
spec.replicas (recorded as annotation REPLICAS_ANNOTATION) and with pod-template label ROLE_LABEL=canary
(``canary_managed``). Beside it the rollout owns (field manager ROLLOUT_FIELD_MANAGER, not in the inventory):
Deployment W-primary (W's spec, copied again at each promotion, as Flagger copies the target's spec to its primary),
Services W-primary and W-canary, and with a gateway the HTTPRoute W splitting between them by weight (Gateway API:
a backendRef's weight is its proportional share of the rule's traffic; weight 0 sends it none).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ferry.plan import ENVIRONMENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from ferry.rollout_spec import GatewayRef

ROLE_LABEL = "ferry.dev/role"
PRIMARY, CANARY = "primary", "canary"
REPLICAS_ANNOTATION = "ferry.dev/replicas"  # W's declared replicas, recorded by the reconcile transform
ROLLOUT_OF_ANNOTATION = "ferry.dev/rollout-of"  # on every object the rollout owns: the workload it serves
ROLLOUT_FIELD_MANAGER = "ferry-rollout"
PRIMARY_SUFFIX, CANARY_SUFFIX = "-primary", "-canary"
GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 1000  # a declared replica count beyond this is refused, not scaled to
MAX_RATIO = 10  # without a gateway the canary never runs more than 10 x the primary's replicas
MAX_PORTS = 32
_TEMPLATE_METADATA = ("labels", "annotations")


def is_workload(obj: Mapping[str, Any], workload: str) -> bool:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion") == "apps/v1" and obj.get("kind") == "Deployment" and meta.get("name") == workload


def canary_managed(obj: dict[str, Any], workload: str) -> dict[str, Any]:
    """The reconcile's transform: W without spec.replicas (recorded as REPLICAS_ANNOTATION, default 1: the rollout
    scales W) and with template label ROLE_LABEL=canary. Any other object is returned as it is (the same object)."""
    if not is_workload(obj, workload):
        return obj
    out = copy.deepcopy(obj)
    spec = out.setdefault("spec", {})
    replicas = spec.pop("replicas", None)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        REPLICAS_ANNOTATION: str(DEFAULT_REPLICAS if replicas is None else replicas),
    }
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), ROLE_LABEL: CANARY}
    return out


def declared_replicas(canary_live: Mapping[str, Any]) -> int:
    """The replicas the release declares for W (its REPLICAS_ANNOTATION), bounded; refused when not a count."""
    raw = ((canary_live.get("metadata") or {}).get("annotations") or {}).get(REPLICAS_ANNOTATION, str(DEFAULT_REPLICAS))
    if not str(raw).isdigit() or not 0 <= int(raw) <= MAX_REPLICAS:
        raise ValueError(f"annotation {REPLICAS_ANNOTATION}={str(raw)[:20]!r} is not a count of 0..{MAX_REPLICAS}")
    return int(raw)


def _name(canary_live: Mapping[str, Any]) -> tuple[str, str]:
    meta = canary_live.get("metadata") or {}
    if not is_workload(canary_live, str(meta.get("name") or "")) or not meta.get("namespace"):
        raise ValueError("the workload is not a namespaced apps/v1 Deployment")
    return str(meta["name"]), str(meta["namespace"])


def match_labels(canary_live: Mapping[str, Any]) -> dict[str, str]:
    """W's selector labels, which both roles extend. Refused: no matchLabels, a role label already in them, or a
    matchExpression on the role label (a selector the role cannot extend)."""
    name, _ = _name(canary_live)
    selector = (canary_live.get("spec") or {}).get("selector") or {}
    labels = dict(selector.get("matchLabels") or {})
    if not labels:
        raise ValueError(f"Deployment {name} has no selector matchLabels to extend with {ROLE_LABEL}")
    if ROLE_LABEL in labels or any(e.get("key") == ROLE_LABEL for e in selector.get("matchExpressions") or []):
        raise ValueError(f"Deployment {name}'s selector already uses {ROLE_LABEL}: the rollout cannot extend it")
    return labels


def _owned_metadata(canary_live: Mapping[str, Any], name: str, role: str) -> dict[str, Any]:
    workload, namespace = _name(canary_live)
    environment = ((canary_live.get("metadata") or {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
    if not environment:
        raise ValueError(f"Deployment {workload} has no {ENVIRONMENT_LABEL} label: not an environment's workload")
    return {
        "name": name,
        "namespace": namespace,
        "labels": {ENVIRONMENT_LABEL: environment, MANAGED_BY_LABEL: MANAGED_BY, ROLE_LABEL: role},
        "annotations": {ROLLOUT_OF_ANNOTATION: workload},
    }


def owned_by_rollout(obj: Mapping[str, Any] | None, workload: str) -> bool:
    """Whether `obj` is one the rollout of `workload` made (never take over an object of the same name)."""
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(ROLLOUT_OF_ANNOTATION) == workload


def primary_deployment(canary_live: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """W-primary from the live W: its spec (template included; no status, no server metadata), selector and
    template labels extended with ROLE_LABEL=primary, `replicas`, labelled for W's environment."""
    name, _ = _name(canary_live)
    if not 0 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"{replicas} replicas for {name}{PRIMARY_SUFFIX} is outside 0..{MAX_REPLICAS}")
    spec = copy.deepcopy(dict(canary_live.get("spec") or {}))
    template = spec.get("template")
    if not isinstance(template, dict) or not (template.get("spec") or {}).get("containers"):
        raise ValueError(f"Deployment {name} has no pod template with containers to copy")
    labels = match_labels(canary_live)
    spec["selector"] = {**spec["selector"], "matchLabels": {**labels, ROLE_LABEL: PRIMARY}}
    spec["template"] = primary_template(template)
    spec["replicas"] = replicas
    spec.pop("paused", None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _owned_metadata(canary_live, name + PRIMARY_SUFFIX, PRIMARY),
        "spec": spec,
    }


def primary_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A pod template as the primary runs it: its labels and annotations only, the role label primary."""
    meta = template.get("metadata") or {}
    out_meta = {k: copy.deepcopy(meta[k]) for k in _TEMPLATE_METADATA if meta.get(k)}
    out_meta["labels"] = {**(out_meta.get("labels") or {}), ROLE_LABEL: PRIMARY}
    return {**copy.deepcopy(dict(template)), "metadata": out_meta}


def templates_match(canary_live: Mapping[str, Any], primary_live: Mapping[str, Any] | None) -> bool:
    """Whether the primary runs the canary's pod template (their labels and annotations, the role label aside)."""
    if primary_live is None:
        return False

    def bare(obj: Mapping[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(dict((obj.get("spec") or {}).get("template") or {}))
        meta = template.get("metadata") or {}
        template["metadata"] = {k: meta[k] for k in _TEMPLATE_METADATA if meta.get(k)}
        template["metadata"].setdefault("labels", {}).pop(ROLE_LABEL, None)
        return template

    return bare(canary_live) == bare(primary_live)


def release_service(candidates: Sequence[Mapping[str, Any]], canary_live: Mapping[str, Any]) -> dict[str, Any] | None:
    """The release's Service whose selector picks W's pods (the first by name), not one the rollout made."""
    name, _ = _name(canary_live)
    pod_labels = (((canary_live.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    pod_labels = {k: v for k, v in pod_labels.items() if k != ROLE_LABEL}
    for svc in sorted(candidates, key=lambda s: str((s.get("metadata") or {}).get("name"))):
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and not owned_by_rollout(svc, name) and all(pod_labels.get(k) == v for k, v in selector.items()):
            return dict(svc)
    return None


def _ports(name: str, release_svc: Mapping[str, Any] | None, port: int | None) -> list[dict[str, Any]]:
    if release_svc is not None:
        keep = ("name", "port", "targetPort", "protocol", "appProtocol")
        ports = [{k: p[k] for k in keep if k in p} for p in (release_svc.get("spec") or {}).get("ports") or []]
        if ports and len(ports) <= MAX_PORTS:
            return ports
    if port is not None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1..65535")
        return [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]
    raise ValueError(
        f"no Service of the release selects {name}'s pods and the strategy names no port: "
        "the rollout cannot make its Services"
    )


def services(
    canary_live: Mapping[str, Any], release_svc: Mapping[str, Any] | None, port: int | None
) -> list[dict[str, Any]]:
    """Services W-primary and W-canary (ClusterIP; selector W's matchLabels + the role; the release Service's
    ports when given, else the strategy's port, else refused)."""
    name, _ = _name(canary_live)
    labels, ports = match_labels(canary_live), _ports(name, release_svc, port)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _owned_metadata(canary_live, name + suffix, role),
            "spec": {"type": "ClusterIP", "selector": {**labels, ROLE_LABEL: role}, "ports": copy.deepcopy(ports)},
        }
        for suffix, role in ((PRIMARY_SUFFIX, PRIMARY), (CANARY_SUFFIX, CANARY))
    ]


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError(f"weight {weight!r} is outside 0..100")
    return weight


def route(
    workload: str,
    namespace: str,
    gateway: GatewayRef,
    weight: int,
    hostnames: Sequence[str],
    port: int,
    labels: Mapping[str, str] | None = None,
    mirror: bool = False,
) -> dict[str, Any]:
    """HTTPRoute W: parentRef the gateway, one rule sending 100-weight to W-primary and weight to W-canary; with
    `mirror` (a blue-green preview), a RequestMirror filter copying every request to W-canary (answers dropped)."""
    check_weight(weight)
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
    parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    backends = [
        {"group": "", "kind": "Service", "name": workload + suffix, "port": port, "weight": share}
        for suffix, share in ((PRIMARY_SUFFIX, 100 - weight), (CANARY_SUFFIX, weight))
    ]
    rule: dict[str, Any] = {"backendRefs": backends}
    if mirror:
        ref = {"group": "", "kind": "Service", "name": workload + CANARY_SUFFIX, "port": port}
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {"backendRef": ref}}]
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": [rule]}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    meta: dict[str, Any] = {"name": workload, "namespace": namespace, "annotations": {ROLLOUT_OF_ANNOTATION: workload}}
    meta["labels"] = {MANAGED_BY_LABEL: MANAGED_BY, **(labels or {})}
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": meta, "spec": spec}


def route_weight(route_live: Mapping[str, Any] | None, workload: str) -> int | None:
    """The canary's share of the route in percent (None without a route or with no weight at all)."""
    rules = ((route_live or {}).get("spec") or {}).get("rules") or []
    refs = [r for rule in rules[:1] for r in rule.get("backendRefs") or []]
    weights = {r.get("name"): int(r.get("weight", 1)) for r in refs}
    total = sum(weights.values())
    return round(100 * weights.get(workload + CANARY_SUFFIX, 0) / total) if total else None


def canary_replicas(primary_replicas: int, weight: int) -> int:
    """Replica-ratio mode (no gateway): the fewest canary replicas whose share of all pods is at least `weight`
    percent, at most MAX_RATIO x the primary's (and at least 1 for any weight above 0); 0 at weight 0."""
    check_weight(weight)
    if primary_replicas < 0:
        raise ValueError(f"primary replicas {primary_replicas} is negative")
    if weight == 0:
        return 0
    limit = max(1, MAX_RATIO * primary_replicas)
    if weight == 100:
        return limit
    needed = -(-weight * primary_replicas // (100 - weight))  # ceil(w p / (100 - w)): c / (p + c) >= w / 100
    return min(limit, max(1, needed))


def ratio_weight(primary_replicas: int, canary: int) -> int:
    """The canary's share of the pods in percent (replica-ratio mode)."""
    total = primary_replicas + canary
    return round(100 * canary / total) if total else 0
