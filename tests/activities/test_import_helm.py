"""`ferry env import-helm` against a real `helm install` (helm v4.3.2) on the real control plane: the release read
from Helm's own Secrets, its values in the spec written, Ferry's reconcile adopting the objects without touching
the pod template (same generation: no new ReplicaSet), Helm's field manager removed, and `--forget-helm`
leaving `helm ls` empty.

No skip: a missing helm fails every test here with the `make helm` hint (tests/kit/helm_releases.py)."""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes.client import CoreV1Api

from activities.cluster.helm_storage import HelmStorageError, open_storage
from devstack.kube.session import KubeServer
from ferry.declared import EnvironmentsFile
from ferry.helm_release import RELEASE_TYPE, ChartSource, decode_stored, import_environment
from ferry.helm_spec import HelmSource
from ferry.model import PEOPLE
from ferry.plan import ENVIRONMENT_LABEL
from ferry.settings import Settings
from tests.kit.helm_releases import (
    VALUES,
    Release,
    adopt_by_reconcile,
    helm_entries,
    installed,
    managers,
    reconcile_chart,
)


@pytest.fixture
def release(kube_server: KubeServer, namespace: str, tmp_path: Path) -> Release:
    return installed(kube_server, namespace, tmp_path)


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
    assert helm_entries(cleaned) == []
    assert ("ferry", "") in managers(cleaned)
    assert cleaned["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ferry"
    again = release.try_run("install", "shop", str(release.chart), f"--namespace={release.namespace}")
    assert again.returncode != 0 and "invalid ownership metadata" in again.stderr  # Helm does not take them back
    assert cleaned["metadata"]["generation"] == before["metadata"]["generation"]
    config = CoreV1Api(release.admin).read_namespaced_config_map("shop-config", release.namespace)
    assert "helm" not in [e.manager for e in config.metadata.managed_fields]
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == ""
    with pytest.raises(HelmStorageError, match="no Helm release Secret"):  # forgotten: nothing left to finish
        release.storage.finish("shop", release.namespace, release.environment)


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
    assert helm_entries(release.settled()) == []
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
    assert helm_entries(after) == []
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
