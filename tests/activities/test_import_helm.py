"""`ferry env import-helm` against a real `helm install` (helm v4.3.2) on the real control plane: the release read
from Helm's own Secrets, its values in the spec written, Ferry's reconcile adopting the objects without touching
the pod template (same generation: no new ReplicaSet), Helm's field manager removed, and `--forget-helm`
leaving `helm ls` empty.

No skip: a missing helm fails every test here with the `make helm` hint."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import AppsV1Api, CoreV1Api, VersionApi

from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.cluster.client import Cluster
from activities.cluster.helm_storage import HelmStorage, HelmStorageError, open_storage
from activities.helm.render import helm_env, render_chart
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from ferry.declared import EnvironmentsFile
from ferry.helm_release import RELEASE_TYPE, ChartSource, decode_stored, import_environment
from ferry.helm_render import HelmRenderInput
from ferry.helm_spec import HelmSource
from ferry.model import PEOPLE
from ferry.plan import ENVIRONMENT_LABEL
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

    def run(self, *args: str) -> str:
        home = self.tmp / f"helm-home-{uuid.uuid4().hex[:6]}"
        (home / "docker").mkdir(parents=True)
        env = {**helm_env(home), "KUBECONFIG": str(self.kube.kubeconfig)}
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(proxy)
        proc = subprocess.run(
            [str(self.helm), *args], env=env, capture_output=True, text=True, timeout=120, check=False, cwd=home
        )
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


@pytest.fixture
def release(kube_server: KubeServer, namespace: str, tmp_path: Path) -> Release:
    helm = helm_binary_path()
    assert os.access(helm, os.X_OK), (
        f"helm {HELM_VERSION} is not built at {helm}: run `make helm` (make setup builds it)"
    )
    return Release(helm, kube_server, namespace, tmp_path)


def managers(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["manager"], e.get("subresource", "")) for e in obj["metadata"].get("managedFields") or []]


def test_the_deployed_revision_is_read_and_its_values_written_into_the_spec(release: Release) -> None:
    release.install({"replicaCount": 1, "greeting": "first"})
    release.run(
        "upgrade",
        "shop",
        str(release.chart),
        f"--namespace={release.namespace}",
        "--set=replicaCount=2",
        "--set=greeting=imported",
    )
    started = time.monotonic()
    read = release.storage.read("shop", release.namespace)
    print(f"read revision {read.release.revision} in {time.monotonic() - started:.3f} s")
    assert (read.release.revision, read.release.status, read.release.chart) == (2, "deployed", "shop")
    assert read.release.values == VALUES and read.release.chart_version == "1.4.2"
    assert {str(i) for i, _ in read.objects} == {
        f"ConfigMap/{release.namespace}/shop-config",
        f"Deployment/{release.namespace}/shop",
    }
    source = ChartSource(repository="127.0.0.1:5000/team/config", path="charts/shop", version="1.0.0")
    imported = import_environment(read.release, source, read.objects, release.environment)
    spec = EnvironmentsFile.model_validate({"environments": [imported.environment]}, context={PEOPLE: True})
    helm = spec.environments[0].helm
    assert helm is not None and helm.values == VALUES and helm.release_name == "shop"
    assert spec.environments[0].namespace == release.namespace


def test_a_namespace_without_the_release_is_refused(release: Release) -> None:
    with pytest.raises(HelmStorageError, match="no Helm release Secret"):
        release.storage.read("shop", release.namespace)


def adopt_by_reconcile(release: Release, settings: Settings, values: dict[str, Any]) -> ReconcileResult:
    """Ferry's reconcile activity (as the least-privileged worker) applying what `helm template` renders for the
    chart and values, released as plain manifests (the path every reconcile shares with a chart's render)."""
    rendered = render_chart(
        release.chart,
        HelmRenderInput(
            release_name="shop", namespace=release.namespace, kube_version=release.kube_version(), values=values
        ),
    )
    repository = f"{settings.registry.default}/team/imported-{uuid.uuid4().hex[:6]}"
    digest = publish(settings, repository, "1.0.0", [m.object for m in rendered.manifests])
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
            path=".",
            namespace=release.namespace,
        )
    )


def test_adoption_keeps_the_pod_template_and_drops_helms_field_manager(release: Release, settings: Settings) -> None:
    release.install(VALUES)
    before = release.settled()
    assert ("helm", "") in managers(before)
    with pytest.raises(HelmStorageError, match="2 of 2 object.* not applied by environment"):
        release.storage.finish("shop", release.namespace, release.environment)
    result = adopt_by_reconcile(release, settings, release.storage.read("shop", release.namespace).release.values)
    assert sorted(result.changes.created) == sorted(
        [f"ConfigMap/{release.namespace}/shop-config", f"Deployment/{release.namespace}/shop"]
    )
    after = release.settled()
    assert after["metadata"]["labels"][ENVIRONMENT_LABEL] == release.environment
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    # NB: no deployment controller runs here (no kubelet): a pod-template change would bump the generation, and
    # the deployment controller makes a new ReplicaSet (revision) for exactly those; the same generation is the proof
    assert after["status"]["observedGeneration"] == before["status"]["observedGeneration"]

    started = time.monotonic()
    done = release.storage.finish("shop", release.namespace, release.environment, forget=True)
    print(f"finish (managedFields + forget) in {time.monotonic() - started:.3f} s: {done}")
    assert sorted(done.cleaned) == sorted(result.changes.created) and done.missing == []
    assert done.forgotten == ["sh.helm.release.v1.shop.v1"]
    cleaned = release.settled()
    assert [m for m in managers(cleaned) if m[0] == "helm" and not m[1]] == []
    assert ("ferry", "") in managers(cleaned)
    assert cleaned["metadata"]["generation"] == before["metadata"]["generation"]
    config = CoreV1Api(release.admin).read_namespaced_config_map("shop-config", release.namespace)
    assert "helm" not in [e.manager for e in config.metadata.managed_fields]
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == ""
    with pytest.raises(HelmStorageError, match="no Helm release Secret"):  # forgotten: nothing left to finish
        release.storage.finish("shop", release.namespace, release.environment)


def reconcile_chart(release: Release, settings: Settings, path: str, helm: HelmSource) -> ReconcileResult:
    """The reconcile activity (as the least-privileged worker) rendering the chart itself: the release directory
    (charts/shop inside) published as a Ferry release, ``helm=`` on the input."""
    repository = f"{settings.registry.default}/team/cfg-{uuid.uuid4().hex[:6]}"
    digest = publish_dir(settings, repository, "1.0.0", release.root)
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


def test_a_helm_reconcile_adopts_the_release_without_a_restart(release: Release, settings: Settings) -> None:
    """The whole path: the spec import-helm writes, rendered by the reconcile activity itself (helm= on its
    input: the chart inside a Ferry release), then --finish --forget-helm."""
    release.install(VALUES)
    before = release.settled()
    read = release.storage.read("shop", release.namespace)
    source = ChartSource(repository=f"{settings.registry.default}/team/cfg", path="charts/shop", version="1.0.0")
    spec = EnvironmentsFile.model_validate(
        {"environments": [import_environment(read.release, source, read.objects, release.environment).environment]},
        context={PEOPLE: True},
    ).environments[0]
    assert spec.helm is not None and spec.helm.values == VALUES
    started = time.monotonic()
    result = reconcile_chart(release, settings, spec.path, HelmSource.of(spec.helm, spec.name, spec.path))
    print(f"adopting reconcile (render + apply) in {time.monotonic() - started:.3f} s")
    assert sorted(result.changes.created) == [
        f"ConfigMap/{release.namespace}/shop-config",
        f"Deployment/{release.namespace}/shop",
    ], result.changes.summary()
    after = release.settled()
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    done = release.storage.finish("shop", release.namespace, release.environment, forget=True)
    assert len(done.cleaned) == 2 and len(done.forgotten) == 1
    assert [m for m in managers(release.settled()) if m[0] == "helm" and not m[1]] == []
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == ""


def test_a_client_side_install_loses_its_update_entries_too(release: Release, settings: Settings) -> None:
    """Helm's client-side apply (v3's way, v4 with --server-side=false) leaves `helm` Update entries."""
    release.run("install", "shop", str(release.chart), f"--namespace={release.namespace}", "--server-side=false",
                *(f"--set={k}={v}" for k, v in VALUES.items()))  # fmt: skip
    before = release.settled()
    assert ("helm", "Update") in [(e["manager"], e["operation"]) for e in before["metadata"]["managedFields"]]
    adopt_by_reconcile(release, settings, VALUES)
    done = release.storage.finish("shop", release.namespace, release.environment)
    assert len(done.cleaned) == 2 and done.forgotten == []
    after = release.settled()
    assert [m for m in managers(after) if m[0] == "helm" and not m[1]] == []
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == "shop"  # not forgotten


def test_revisions_are_listed_as_metadata_in_pages_and_the_deployed_one_decoded(release: Release) -> None:
    """150 more revisions than Helm keeps by default: listed in pages of metadata (no data), the newest deployed
    one (here the last) fetched and decoded alone."""
    release.install(VALUES)
    core = CoreV1Api(release.admin)
    first = core.read_namespaced_secret("sh.helm.release.v1.shop.v1", release.namespace)
    body = json.loads(decode_stored(first.data["release"]))
    for revision in range(2, 152):
        status = "deployed" if revision == 151 else "superseded"
        stored = base64.b64encode(gzip.compress(json.dumps({**body, "version": revision}).encode())).decode()
        core.create_namespaced_secret(
            release.namespace,
            {
                "metadata": {
                    "name": f"sh.helm.release.v1.shop.v{revision}",
                    "labels": {"owner": "helm", "name": "shop", "status": status, "version": str(revision)},
                },
                "type": RELEASE_TYPE,
                "stringData": {"release": stored},
            },
        )
    core.patch_namespaced_secret(
        first.metadata.name, release.namespace, {"metadata": {"labels": {"status": "superseded"}}}
    )
    listed = release.storage._secrets_metadata("shop", release.namespace)
    assert len(listed) == 151 and all("data" not in s for s in listed)  # 2 pages of LIST_PAGE=100
    started = time.monotonic()
    read = release.storage.read("shop", release.namespace)
    print(f"read the newest deployed of 151 revisions in {time.monotonic() - started:.3f} s")
    assert read.release.revision == 151 and read.release.values == VALUES


def test_a_write_between_read_and_patch_is_retried_not_undone(release: Release, settings: Settings) -> None:
    release.install(VALUES)
    adopt_by_reconcile(release, settings, VALUES)
    cluster = release.storage.cluster
    resource = cluster.resource("v1", "ConfigMap")
    stale = cluster.get(resource, "shop-config", release.namespace)
    assert stale is not None
    core = CoreV1Api(release.admin)
    core.patch_namespaced_config_map("shop-config", release.namespace, {"metadata": {"labels": {"late": "write"}}})
    late = [
        e.manager for e in core.read_namespaced_config_map("shop-config", release.namespace).metadata.managed_fields
    ]
    assert len(late) == len(stale["metadata"]["managedFields"]) + 1  # the late writer has its own entry now
    assert release.storage._remove_helm_manager(resource, stale)  # its test of resourceVersion fails once: re-read
    fresh = core.read_namespaced_config_map("shop-config", release.namespace)
    assert fresh.metadata.labels["late"] == "write"
    assert [e.manager for e in fresh.metadata.managed_fields] == [m for m in late if m != "helm"]  # none undone


def test_a_cluster_is_named_by_the_clusters_file_and_its_gate_holds(release: Release) -> None:
    """`--cluster NAME` goes through the worker's own gate: unknown names and auth plugins the entry does not
    allow are refused before any kubeconfig is loaded (the plugin never runs)."""
    release.install(VALUES)
    ran = release.tmp / "plugin-ran"
    evil = yaml.safe_load(release.kube.kubeconfig.read_text())
    for user in evil["users"]:
        user["user"] = {
            "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch", "args": [str(ran)]}
        }
    (release.tmp / "evil.kubeconfig").write_text(yaml.safe_dump(evil))
    clusters = release.tmp / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": {
        "eu": {"kubeconfig": str(release.kube.kubeconfig)},
        "evil": {"kubeconfig": str(release.tmp / "evil.kubeconfig")},
    }}))  # fmt: skip
    read = open_storage(str(clusters), None, "eu", None).read("shop", release.namespace)
    assert read.release.values == VALUES
    with pytest.raises(HelmStorageError, match="cluster 'us' is not in the worker's clusters file"):
        open_storage(str(clusters), None, "us", None)
    with pytest.raises(HelmStorageError, match="exec plugin"):
        open_storage(str(clusters), None, "evil", None)
    assert not ran.exists()
