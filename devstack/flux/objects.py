"""Flux objects for a Ferry release (an OCIRepository and the Kustomization that applies it), and waiting for them:
what the interop tests and bench/flux_vs_ferry.py create, written once."""

from __future__ import annotations

import time
from typing import Any

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"


def oci_repository(
    name: str,
    namespace: str,
    url: str,
    ref: dict[str, str],
    *,
    interval: str = "1m",
    cosign_secret: str | None = None,
    insecure: bool = True,
) -> dict[str, Any]:
    """``url``: ``oci://host/repo``; ``ref``: ``{"semver": ">=1.0.0"}``, ``{"tag": …}`` or ``{"digest": …}``;
    ``cosign_secret``: a Secret holding ``cosign.pub`` (``verify.provider: cosign``)."""
    spec: dict[str, Any] = {
        "url": url,
        "ref": ref,
        "interval": interval,
        "insecure": insecure,
        "layerSelector": {"mediaType": FLUX_CONTENT_MEDIA_TYPE, "operation": "extract"},
    }
    if cosign_secret:
        spec["verify"] = {"provider": "cosign", "secretRef": {"name": cosign_secret}}
    return {
        "apiVersion": SOURCE_API,
        "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def kustomization(
    name: str,
    namespace: str,
    source: str,
    target_namespace: str,
    *,
    interval: str = "1m",
    path: str = "./",
    prune: bool = True,
    wait: bool = True,
    timeout: str = "2m",
) -> dict[str, Any]:
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": interval,
            "path": path,
            "prune": prune,
            "wait": wait,
            "timeout": timeout,
            "targetNamespace": target_namespace,
            "sourceRef": {"kind": "OCIRepository", "name": source},
        },
    }


def cosign_secret(name: str, namespace: str, public_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"cosign.pub": public_pem},
    }


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True for the object's current generation (Flux's own rule: observedGeneration caught up)."""
    cond = condition(obj)
    status = obj.get("status") or {}
    return (
        cond is not None
        and cond.get("status") == "True"
        and status.get("observedGeneration") == obj["metadata"].get("generation")
    )


def wait_ready(dyn: Any, obj: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Poll ``obj`` (an OCIRepository or Kustomization) until Ready; -> the live object. AssertionError names the
    last Ready condition on time-out."""
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    meta = obj["metadata"]
    deadline = time.monotonic() + timeout
    live: dict[str, Any] = {}
    while time.monotonic() < deadline:
        live = resource.get(name=meta["name"], namespace=meta["namespace"]).to_dict()
        if is_ready(live):
            return live
        time.sleep(0.2)
    raise AssertionError(
        f"{obj['kind']} {meta['namespace']}/{meta['name']} not Ready in {timeout:.0f}s: {condition(live)}"
    )


def apply(dyn: Any, obj: dict[str, Any], manager: str = "ferry-flux-test") -> dict[str, Any]:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    return dict(resource.server_side_apply(body=obj, field_manager=manager, force_conflicts=True).to_dict())
