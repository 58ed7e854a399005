"""A Helm release to adopt: a chart installed by the real helm v4.3.2 (tests/kit/charts.py) on the test control
plane, and Ferry's reconcile activity applying it (for `ferry env import-helm`'s tests, activities and e2e).

``installed(kube_server, namespace, tmp)`` checks the helm build (no skip: a missing helm fails with the `make helm`
hint) and returns a ``Release``; ``adopt_by_reconcile`` applies what `helm template` renders as plain manifests,
``reconcile_chart`` lets the activity render the chart itself (``helm=`` on its input)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import AppsV1Api, VersionApi

from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.cluster.client import Cluster
from activities.cluster.helm_storage import HelmStorage
from activities.helm.render import helm_env, render_chart
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from ferry.helm_render import HelmRenderInput
from ferry.helm_spec import HelmSource
from ferry.reconcile import ReconcileInput, ReconcileResult
from ferry.settings import Settings
from tests.kit.charts import HELM_VERSION, helm_binary_path, write_chart
from tests.kit.environments import publish, publish_dir

VALUES = {"replicaCount": 2, "greeting": "imported"}


class Release:
    """A chart installed by the real helm into a fresh namespace (admin kubeconfig, no --wait: no kubelet)."""

    def __init__(self, helm: Path, kube: KubeServer, namespace: str, tmp: Path) -> None:
        self.helm, self.kube, self.namespace, self.tmp = helm, kube, namespace, tmp
        self.root = tmp / "release"
        self.chart = write_chart(self.root / "charts")
        self.admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        self.storage = HelmStorage(Cluster(str(kube.kubeconfig), None))
        self.environment = f"shop-{uuid.uuid4().hex[:6]}"

    def try_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """helm with a private HOME (activities.helm.render.helm_env) and the admin kubeconfig."""
        home = self.tmp / f"helm-home-{uuid.uuid4().hex[:6]}"
        (home / "docker").mkdir(parents=True)
        env = {**helm_env(home), "KUBECONFIG": str(self.kube.kubeconfig)}
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(proxy)
        return subprocess.run(
            [str(self.helm), *args], env=env, capture_output=True, text=True, timeout=120, check=False, cwd=home
        )

    def run(self, *args: str) -> str:
        proc = self.try_run(*args)
        assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def install(self, values: dict[str, Any]) -> None:
        sets = [f"--set={k}={v}" for k, v in values.items()]
        self.run("install", "shop", str(self.chart), f"--namespace={self.namespace}", *sets)

    def deployment(self) -> dict[str, Any]:
        found: dict[str, Any] = self.admin.sanitize_for_serialization(
            AppsV1Api(self.admin).read_namespaced_deployment("shop", self.namespace)
        )
        return found

    def settled(self, timeout: float = 30.0) -> dict[str, Any]:
        """The Deployment once its status answers its spec (the simulated controller's observedGeneration) and two
        reads half a second apart agree (no controller is still writing)."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            now = self.deployment()
            observed = (now.get("status") or {}).get("observedGeneration") == now["metadata"]["generation"]
            if observed and now["metadata"]["resourceVersion"] == last:
                return now
            last = now["metadata"]["resourceVersion"] if observed else None
            time.sleep(0.5)
        raise AssertionError("the Deployment did not settle")

    def kube_version(self) -> str:
        return str(VersionApi(self.admin).get_code().git_version)


def installed(kube_server: KubeServer, namespace: str, tmp_path: Path) -> Release:
    helm = helm_binary_path()
    assert os.access(helm, os.X_OK), (
        f"helm {HELM_VERSION} is not built at {helm}: run `make helm` (make setup builds it)"
    )
    return Release(helm, kube_server, namespace, tmp_path)


def managers(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["manager"], e.get("subresource", "")) for e in obj["metadata"].get("managedFields") or []]


def helm_entries(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``helm`` manager's entries of the object itself (subresource entries are not the release's)."""
    return [m for m in managers(obj) if m[0] == "helm" and not m[1]]


def _reconcile(
    release: Release, settings: Settings, repository: str, digest: str, path: str, helm: HelmSource | None
) -> ReconcileResult:
    """The reconcile activity as the least-privileged worker."""
    acts = ClusterActivities(
        BundleCache(release.tmp / "cache", RegistryActivities(Registries(settings.registry)).pull_artifact),
        str(release.kube.worker_kubeconfig),
    )
    return acts.reconcile_environment(
        ReconcileInput(
            environment=release.environment,
            repository=repository,
            digest=digest,
            version="1.0.0",
            path=path,
            namespace=release.namespace,
            helm=helm,
        )
    )


def adopt_by_reconcile(release: Release, settings: Settings, values: dict[str, Any]) -> ReconcileResult:
    """Ferry's reconcile applying what `helm template` renders for the chart and values, released as plain
    manifests (the path every reconcile shares with a chart's render)."""
    rendered = render_chart(
        release.chart,
        HelmRenderInput(
            release_name="shop", namespace=release.namespace, kube_version=release.kube_version(), values=values
        ),
    )
    repository = f"{settings.registry.default}/team/imported-{uuid.uuid4().hex[:6]}"
    digest = publish(settings, repository, "1.0.0", [m.object for m in rendered.manifests])
    return _reconcile(release, settings, repository, digest, ".", None)


def reconcile_chart(release: Release, settings: Settings, path: str, helm: HelmSource) -> ReconcileResult:
    """The reconcile activity rendering the chart itself: the release directory (charts/shop inside) published as
    a Ferry release, ``helm=`` on the input."""
    repository = f"{settings.registry.default}/team/cfg-{uuid.uuid4().hex[:6]}"
    digest = publish_dir(settings, repository, "1.0.0", release.root)
    return _reconcile(release, settings, repository, digest, path, helm)
