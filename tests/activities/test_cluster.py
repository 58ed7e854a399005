"""The cluster adapter against the real API server (the local control plane), as the least-privileged worker:
what only a real server reveals — normalised values, validation, field ownership."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio.exceptions import ApplicationError

from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.registry import Registries, RegistryActivities
from devstack.kube.controller import settled
from devstack.kube.session import KubeServer
from ferry.reconcile import ReconcileInput, ReconcileResult
from ferry.settings import Settings
from tests.kit.environments import publish
from tests.kit.pools import pool_overflowed


def realistic_bundle(group: str) -> list[dict[str, Any]]:
    """What a real application ships; written as people write manifests (`cpu: 0.5`, int targetPort,
    stringData), not as the server stores them."""
    labels = {"app": "shop"}
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"caches.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "caches", "singular": "cache", "kind": "Cache"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "string"}, "ttlSeconds": {"type": "integer"}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": f"{group}/v1",
            "kind": "Cache",
            "metadata": {"name": "sessions"},
            "spec": {"size": "1Gi", "ttlSeconds": 300},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shop-config"},
            "data": {"LOG_LEVEL": "info", "RATIO": "0.5"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-secret"},
            "type": "Opaque",
            "stringData": {"password": "hunter2"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "shop"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shop"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shop", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "shop",
                        "containers": [
                            {
                                "name": "app",
                                "image": "ghcr.io/acme/shop:1.0.0",
                                "ports": [{"containerPort": 8080}],
                                "env": [{"name": "MODE", "value": "production"}],
                                "resources": {
                                    "requests": {"cpu": 0.5, "memory": "1Gi"},
                                    "limits": {"cpu": "1000m", "memory": "1Gi"},
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop"},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "shop"},
            "spec": {
                "podSelector": {"matchLabels": labels},
                "ingress": [{"ports": [{"port": 8080}], "from": [{"podSelector": {}}]}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "shop"},
            "spec": {
                "rules": [
                    {
                        "host": "shop.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "shop", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]


class World:
    def __init__(self, settings: Settings, kube_server: KubeServer, tmp: Path) -> None:
        self.settings = settings
        self.kube = kube_server
        suffix = uuid.uuid4().hex[:8]
        self.env, self.namespace = f"env-{suffix}", f"ns-{suffix}"
        self.repository = f"{settings.registry.default}/team/shop-{suffix}"
        self.group = f"{suffix}.example.com"
        self.digests: dict[str, str] = {}
        self.admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
        CoreV1Api(self.admin).create_namespace({"metadata": {"name": self.namespace}})
        pull = RegistryActivities(Registries(settings.registry)).pull_artifact
        # the worker's own least-privileged identity (examples/rbac/ferry-worker.yaml)
        self.acts = ClusterActivities(BundleCache(tmp / "cache", pull), str(kube_server.worker_kubeconfig))

    def reconcile(
        self,
        version: str,
        docs: list[dict[str, Any]],
        baseline: bool = False,
        check_only: bool = False,
        dry_run: bool = False,
    ) -> ReconcileResult:
        if version not in self.digests:
            self.digests[version] = publish(self.settings, self.repository, version, docs)
        digest = self.digests[version]
        return self.acts.reconcile_environment(
            ReconcileInput(
                environment=self.env,
                repository=self.repository,
                digest=digest,
                version=version,
                path=".",
                namespace=self.namespace,
                namespaces=[self.namespace, f"{self.namespace}-extra"],
                cluster_kinds=["CustomResourceDefinition"],
                drift_baseline=baseline,
                check_only=check_only,
                dry_run=dry_run,
            )
        )

    def settled_versions(self, timeout: float = 30.0) -> dict[str, str]:
        """resource_versions() once every Deployment's status answers its spec (the rollout controller has written
        its final status) and two reads a second apart agree (no other controller is still writing)."""
        deadline = time.monotonic() + timeout
        apps = AppsV1Api(self.admin)
        while not all(
            settled("Deployment", self.admin.sanitize_for_serialization(d))
            for d in apps.list_namespaced_deployment(self.namespace).items
        ):
            assert time.monotonic() < deadline, "the Deployments' rollouts did not settle"
            time.sleep(0.2)
        last = self.resource_versions()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.resource_versions()
            if now == last:
                return now
            last = now
        raise AssertionError(f"objects of {self.env} still changing after {timeout}s")

    def resource_versions(self) -> dict[str, str]:
        """resourceVersion of every object of the environment, CRD and custom resources included."""
        dyn = DynamicClient(self.admin)
        out = {}
        for api_version, kind in [
            ("v1", "ServiceAccount"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "Service"),
            ("apps/v1", "Deployment"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("networking.k8s.io/v1", "Ingress"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            (f"{self.group}/v1", "Cache"),
        ]:
            try:
                resource = dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                continue  # its CRD does not exist
            for item in resource.get(label_selector=f"ferry.dev/environment={self.env}").items:
                out[f"{kind}/{item.metadata.name}"] = item.metadata.resourceVersion
        return out


@pytest.fixture
def world(settings: Settings, kube_server: KubeServer, tmp_path: Path) -> World:
    return World(settings, kube_server, tmp_path)


def test_a_noop_iteration_of_a_realistic_bundle_writes_nothing(world: World) -> None:
    world.kube.allow_worker(world.group)
    docs = realistic_bundle(world.group)
    first = world.reconcile("1.0.0", docs)
    assert len(first.changes.created) == len(docs) and not first.changes.updated
    before = world.settled_versions()  # the controllers' answer to the creates (Deployment status) first
    assert len(before) == len(docs) + 1  # and the inventory
    for _ in range(2):
        again = world.reconcile("1.0.0", docs, baseline=True)
        assert again.changes.updated == [] and again.changes.created == [] and again.changes.drift == {}
        assert again.changes.unchanged == len(docs)
        assert world.resource_versions() == before  # the server stored nothing new
    # ... and a no-op asks no dry run either (the plan knows cpu 0.5 is 500m, which fields the server keeps
    # atomic and what it defaults): the inventory GET, one LIST per kind, at most one discovery read, and the
    # environment's lease taken (a GET and a PUT; its release, one PUT, comes after the count)
    assert again.changes.api_requests <= 1 + 12 + 1 + 2


def test_the_iteration_check_reads_and_never_writes(world: World) -> None:
    """check_only (the workflow's local no-op check): in sync -> pending 0 and a health verdict; drift, a removed
    object or a missing inventory -> pending counts them and the cluster is left exactly as it was."""
    world.kube.allow_worker(world.group)
    docs = realistic_bundle(world.group)
    fresh = world.reconcile("1.0.0", docs, check_only=True)
    assert fresh.pending == len(docs) + 1 and world.resource_versions() == {}  # creates + the inventory, none made
    world.reconcile("1.0.0", docs)
    in_sync = world.reconcile("1.0.0", docs, baseline=True, check_only=True)
    assert in_sync.pending == 0 and in_sync.health.status in ("Healthy", "Progressing")
    assert in_sync.changes.unchanged == len(docs)
    apps = AppsV1Api(world.admin)
    apps.patch_namespaced_deployment(
        "shop",
        world.namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/shop:hotfix"}]}}}},
        field_manager="kubectl-edit",
    )
    before = world.settled_versions()  # the controllers' answer to the edit (status, ReplicaSets) first
    drifted = world.reconcile("1.0.0", docs, baseline=True, check_only=True)
    assert drifted.pending == 1 and drifted.changes.drift == {} and drifted.changes.updated == []
    assert world.resource_versions() == before
    assert (
        apps.read_namespaced_deployment("shop", world.namespace).spec.template.spec.containers[0].image
        == "ghcr.io/acme/shop:hotfix"
    )
    fewer = [d for d in docs if d["kind"] != "Ingress"]
    removed = world.reconcile("1.1.0", fewer, check_only=True)
    assert removed.pending >= 3  # the drifted Deployment, the Ingress to prune, the inventory to rewrite
    assert world.resource_versions() == before


def test_one_rejected_object_applies_nothing_and_the_servers_message_is_kept(world: World) -> None:
    docs = realistic_bundle(world.group)
    new_namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{world.namespace}-extra"}}
    bad = next(d for d in docs if d["kind"] == "Deployment")
    bad["spec"]["replicas"] = -1  # the server's validation refuses it
    with pytest.raises(ApplicationError) as err:
        world.reconcile("1.0.0", [new_namespace, *docs])
    assert err.value.type == "BadInput" and err.value.non_retryable
    assert "nothing was applied" in err.value.message
    assert f"Deployment/{world.namespace}/shop" in err.value.message and "spec.replicas" in err.value.message
    assert world.resource_versions() == {}  # not the CRD, not the ConfigMap, nothing
    with pytest.raises(kubernetes.client.ApiException) as gone:
        CoreV1Api(world.admin).read_namespace(f"{world.namespace}-extra")
    assert gone.value.status == 404


def test_drift_is_only_what_ferry_manages_and_the_server_did_not_normalise(world: World) -> None:
    world.kube.allow_worker(world.group)
    docs = realistic_bundle(world.group)
    world.reconcile("1.0.0", docs)
    apps, core = AppsV1Api(world.admin), CoreV1Api(world.admin)
    # a person edits the image (a field ferry manages) and adds an annotation (one it does not)
    apps.patch_namespaced_deployment(
        "shop",
        world.namespace,
        {
            "metadata": {"annotations": {"note": "by hand"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/shop:hotfix"}]}}},
        },
        field_manager="kubectl-edit",
    )
    result = world.reconcile("1.0.0", docs, baseline=True)
    assert result.changes.updated == [f"Deployment/{world.namespace}/shop"]
    assert result.changes.drift == {
        f"Deployment/{world.namespace}/shop": [".spec.template.spec.containers[name=app].image"]
    }  # not cpu 0.5 vs 500m, not the annotation
    live = apps.read_namespaced_deployment("shop", world.namespace)
    assert live.spec.template.spec.containers[0].image == "ghcr.io/acme/shop:1.0.0"
    assert live.metadata.annotations["note"] == "by hand"
    # 1.1.0 stops setting a ConfigMap key: every value it sets is live, yet the key must go
    slim = [d for d in docs if d["kind"] != "ConfigMap"] + [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"}, "data": {"LOG_LEVEL": "info"}}
    ]
    result = world.reconcile("1.1.0", slim)
    assert result.changes.updated == [f"ConfigMap/{world.namespace}/shop-config"]
    assert core.read_namespaced_config_map("shop-config", world.namespace).data == {"LOG_LEVEL": "info"}


def test_a_dry_run_reports_the_plan_and_a_reconcile_prunes_in_delete_order(world: World) -> None:
    """ferry diff (dry_run) reports the plan and writes nothing; objects dropped from the artifact are deleted in
    delete order (the reverse of apply order), one annotated ferry.dev/prune: disabled is left alone and leaves
    the inventory."""
    world.kube.allow_worker(world.group)
    docs = realistic_bundle(world.group)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    policy["metadata"]["annotations"] = {"ferry.dev/prune": "disabled"}
    preview = world.reconcile("1.0.0", docs, dry_run=True)
    assert world.resource_versions() == {}
    assert len(preview.plan) == len(docs) and {e.action for e in preview.plan} == {"create"}
    world.reconcile("1.0.0", docs)
    dropped = ("Ingress", "Service", "NetworkPolicy")
    smaller = [d for d in docs if d["kind"] not in dropped]
    preview = world.reconcile("1.1.0", smaller, dry_run=True)
    assert [e.model_dump() for e in preview.plan] == [
        {"object": f"{kind}/{world.namespace}/shop", "action": "delete", "fields": []}
        for kind in ("Service", "Ingress", "NetworkPolicy")
    ]  # every stale object, by key
    assert len(world.resource_versions()) == len(docs) + 1  # still all there, and the inventory
    result = world.reconcile("1.1.0", smaller)
    assert result.changes.deleted == [f"Ingress/{world.namespace}/shop", f"Service/{world.namespace}/shop"]
    assert result.changes.prune_skipped == [f"NetworkPolicy/{world.namespace}/shop"]
    assert result.changes.unchanged == len(smaller) and not result.changes.prune_failed
    assert {k.split("/")[0] for k in world.resource_versions()} >= {"NetworkPolicy"}
    again = world.reconcile("1.1.0", smaller)  # no longer in the inventory: neither deleted nor skipped again
    assert again.changes.deleted == [] and again.changes.prune_skipped == [] and not again.changes.changed


@pytest.mark.parametrize(("connections", "discarded"), [(2, True), (24, False)])
def test_the_connection_pool_holds_one_connection_per_concurrent_caller(
    kube_server: KubeServer, connections: int, discarded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """24 threads (the worker's activity + local-activity slots) calling at once keep their connections alive when
    the pool is sized for them; a pool smaller than the callers discards connections (each a new TLS handshake
    next time), which urllib3 reports."""
    from activities.cluster import Cluster

    cluster = Cluster(str(kube_server.worker_kubeconfig), None, connections=connections)
    assert pool_overflowed(lambda: cluster.call("GET", "/version"), caplog, callers=24, calls=3) is discarded


def test_a_written_workload_is_progressing_and_written_configuration_is_judged_at_once(world: World) -> None:
    """What wait_healthy would judge (workloads only), the reconcile that wrote none judges itself: configuration
    alone is Healthy at the digest; a written Deployment is Progressing (its rollout is wait_healthy's)."""
    world.kube.allow_worker(world.group)
    config = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"}, "data": {"a": "1"}}]
    first = world.reconcile("1.0.0", config)
    assert first.changes.created and (first.health.status, first.health.digest) == ("Healthy", world.digests["1.0.0"])
    docs = realistic_bundle(world.group)
    with_workload = world.reconcile("1.1.0", docs)
    assert f"Deployment/{world.namespace}/shop" in with_workload.changes.created
    assert with_workload.health.status == "Progressing"
    world.settled_versions()
    changed = [d if d["kind"] != "ConfigMap" else {**d, "data": {"b": "2"}} for d in docs]
    only_config = world.reconcile("1.2.0", changed)
    assert only_config.changes.updated == [f"ConfigMap/{world.namespace}/shop-config"]
    # the unchanged Deployment decides (its status from the simulated controller: no kubelet here), rolled out
    assert (only_config.health.status, only_config.health.digest) == ("Healthy", world.digests["1.2.0"])


def test_discovery_is_never_read_from_another_processs_cache_of_the_same_address(kube_server: Any) -> None:
    # the kubernetes client's default is /tmp/osrcp-md5(host).json: a cluster rebuilt at the same host:port was
    # seen with the old one's kinds. Each client discovers into a file of its own, in a directory only it reads.
    import hashlib
    import tempfile

    from activities.cluster import Cluster

    first = Cluster(str(kube_server.worker_kubeconfig), None)
    host = first.api.configuration.host
    default = Path(tempfile.gettempdir()) / f"osrcp-{hashlib.md5(host.encode()).hexdigest()}.json"
    first.dyn.resources.get(api_version="v1", kind="ConfigMap")  # discovery ran, into this client's own file
    second = Cluster(str(kube_server.worker_kubeconfig), None)
    own = [c.dyn._DynamicClient__discoverer._Discoverer__cache_file for c in (first, second)]  # type: ignore[attr-defined]
    assert own[0] != own[1] and str(default) not in own
    assert all(Path(f).parent.stat().st_mode & 0o077 == 0 for f in own)
