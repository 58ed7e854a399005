"""Flux itself consumes a Ferry release: an OCIRepository reads it from the local registry (by semver range and by
digest) and verifies its cosign signature with the publisher's key; a Kustomization applies it; the objects Flux
applied equal those Ferry applies from the same release. Real registry, API server, Temporal dev server, worker, and
Flux's own source-controller and kustomize-controller (v1.9.6, `make flux`)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.testing import WorkflowEnvironment

from devstack.flux.controllers import Flux
from devstack.flux.objects import apply, condition, cosign_secret, kustomization, oci_repository, wait_ready
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish, start_environment, wait_status
from tests.kit.signing import key_pair, sign_release

APP = "interop"


def applied(kube_api: Any, namespace: str) -> dict[str, Any]:
    """What matters of the app's objects in `namespace`: the specs and data, without the fields the API server
    allocates per object (a Service's cluster IPs)."""
    import kubernetes

    apps, core = kubernetes.client.AppsV1Api(kube_api), kubernetes.client.CoreV1Api(kube_api)
    clean = kube_api.sanitize_for_serialization
    service = clean(core.read_namespaced_service(APP, namespace).spec)
    for allocated in ("clusterIP", "clusterIPs"):
        service.pop(allocated, None)
    return {
        "Deployment": clean(apps.read_namespaced_deployment(APP, namespace).spec),
        "Service": service,
        "ConfigMap": core.read_namespaced_config_map(f"{APP}-config", namespace).data,
    }


def namespace(kube_dyn: Any, name: str) -> str:
    apply(kube_dyn, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


async def test_flux_verifies_and_applies_a_ferry_release_as_ferry_does(
    flux: Flux, dev_worker: Settings, dev_env: WorkflowEnvironment, kube_api: Any, kube_dyn: Any
) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository = f"{dev_worker.registry.default}/team/interop-{suffix}"
    digest = publish(dev_worker, repository, "1.0.0", app_manifests(APP))
    signer, public = key_pair()
    sign_release(dev_worker, signer, repository, digest)
    source_ns, by_flux, by_ferry = (namespace(kube_dyn, f"{p}-{suffix}") for p in ("fsrc", "flux", "ferry"))
    apply(kube_dyn, cosign_secret("ferry-publisher", source_ns, public))

    url = f"oci://{repository}"
    semver = apply(
        kube_dyn, oci_repository("by-semver", source_ns, url, {"semver": ">=1.0.0"}, cosign_secret="ferry-publisher")
    )
    pinned = apply(
        kube_dyn, oci_repository("by-digest", source_ns, url, {"digest": digest}, cosign_secret="ferry-publisher")
    )
    for source in (semver, pinned):
        live = wait_ready(kube_dyn, source)
        verified = condition(live, "SourceVerified")
        assert verified and verified["status"] == "True", verified
        assert live["status"]["artifact"]["revision"].endswith(digest), live["status"]["artifact"]
    assert wait_ready(kube_dyn, semver)["status"]["artifact"]["revision"].startswith("1.0.0@")

    wait_ready(kube_dyn, apply(kube_dyn, kustomization("app", source_ns, "by-semver", by_flux)))

    spec = EnvironmentSpec.model_validate(
        {
            "name": by_ferry,
            "namespace": by_ferry,
            "repository": repository,
            "semver": ">=1.0.0",
            "interval": "2s",
            "health-timeout": "30s",
            "verify": {"publishers": [{"name": "ci-main", "key": public}]},
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", timeout=60, what="Ferry applied 1.0.0")

    assert applied(kube_api, by_flux) == applied(kube_api, by_ferry)


def test_flux_refuses_a_ferry_release_signed_by_another_key(flux: Flux, settings: Settings, kube_dyn: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository = f"{settings.registry.default}/team/forged-{suffix}"
    digest = publish(settings, repository, "1.0.0", app_manifests(APP))
    stranger, _ = key_pair()
    sign_release(settings, stranger, repository, digest)
    _, trusted = key_pair()
    source_ns = namespace(kube_dyn, f"fsrc-{suffix}")
    apply(kube_dyn, cosign_secret("ferry-publisher", source_ns, trusted))
    source = apply(
        kube_dyn,
        oci_repository(
            "forged", source_ns, f"oci://{repository}", {"semver": ">=1.0.0"}, cosign_secret="ferry-publisher"
        ),
    )
    import time

    deadline, verified = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        live = (
            kube_dyn.resources.get(api_version=source["apiVersion"], kind="OCIRepository")
            .get(name="forged", namespace=source_ns)
            .to_dict()
        )
        verified = condition(live, "SourceVerified")
        if verified and verified["status"] == "False":
            break
        time.sleep(0.2)
    assert verified and verified["status"] == "False", verified
    assert not (live.get("status") or {}).get("artifact"), "Flux served an artifact whose signature failed"
