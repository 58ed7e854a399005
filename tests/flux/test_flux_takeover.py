"""A team moves from Flux to Ferry without restarting workloads: kustomize-controller applied a release; the
Kustomization is suspended; `ferry import flux` writes the environment from the cluster's Flux objects; Ferry
applies the same release. Its server-side apply takes the fields over from kustomize-controller's field manager and
changes no workload: same uid, same generation (no rollout: no new ReplicaSet would be made)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment

from devstack.flux.controllers import FIELD_MANAGER, Flux
from devstack.flux.objects import apply, kustomization, oci_repository, wait_ready
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.flux.test_flux_interop import APP, namespace
from tests.kit.environments import app_manifests, publish, start_environment, wait_status


def identity(kube_api: Any, ns: str) -> dict[str, tuple[str, int, list[str]]]:
    """kind -> (uid, generation, field managers) of the app's objects."""
    import kubernetes

    apps, core = kubernetes.client.AppsV1Api(kube_api), kubernetes.client.CoreV1Api(kube_api)
    found = {
        "Deployment": apps.read_namespaced_deployment(APP, ns),
        "Service": core.read_namespaced_service(APP, ns),
        "ConfigMap": core.read_namespaced_config_map(f"{APP}-config", ns),
    }
    return {
        kind: (
            obj.metadata.uid,
            obj.metadata.generation or 0,
            sorted({m.manager for m in obj.metadata.managed_fields or []}),
        )
        for kind, obj in found.items()
    }


async def test_ferry_takes_over_what_flux_applied_without_a_rollout(
    flux: Flux,
    dev_worker: Settings,
    dev_env: WorkflowEnvironment,
    kube_server: Any,
    kube_api: Any,
    kube_dyn: Any,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    repository = f"{dev_worker.registry.default}/team/takeover-{suffix}"
    publish(dev_worker, repository, "1.0.0", app_manifests(APP))
    source_ns, target = namespace(kube_dyn, f"tsrc-{suffix}"), namespace(kube_dyn, f"take-{suffix}")
    wait_ready(
        kube_dyn, apply(kube_dyn, oci_repository("app", source_ns, f"oci://{repository}", {"semver": ">=1.0.0"}))
    )
    ks = kustomization("app", source_ns, "app", target, interval="10m")
    wait_ready(kube_dyn, apply(kube_dyn, ks))
    before = identity(kube_api, target)
    assert all(FIELD_MANAGER in managers for _, _, managers in before.values()), before

    ks["spec"]["suspend"] = True  # the way over: Flux lets go first, so the two never take turns
    apply(kube_dyn, ks)
    out = tmp_path / "environments.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "import",
            "flux",
            "--kubeconfig",
            str(kube_server.kubeconfig),
            "--flux-namespace",
            source_ns,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "suspend has no equivalent" in proc.stderr  # listed, not silently dropped
    [raw] = yaml.safe_load(out.read_text())["environments"]
    raw.update({"name": f"take-{suffix}", "interval": "2s", "health-timeout": "30s"})
    spec = EnvironmentSpec.model_validate(raw)
    assert (spec.repository, spec.semver, spec.namespace, spec.prune) == (repository, ">=1.0.0", target, True)

    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(
        env,
        lambda s: s.state.health.status == "Healthy" and s.state.last_applied is not None,
        timeout=60,
        what="Ferry took over 1.0.0",
    )
    after = identity(kube_api, target)
    for kind, (uid, generation, managers) in after.items():
        assert (uid, generation) == before[kind][:2], f"{kind} was recreated or rolled out: {before[kind]} -> {after}"
        assert "ferry" in managers, f"{kind}: Ferry did not take its fields: {managers}"
