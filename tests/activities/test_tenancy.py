"""Tenancy on the real API server, as the least-privileged worker: clusters by name (auth plugins refused before
they could run), confinement to an environment's namespaces and cluster-kinds, one reconcile per environment at a
time (a Lease), and service-account impersonation judged by the cluster's own RBAC."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import CoordinationV1Api, CoreV1Api, RbacAuthorizationV1Api
from temporalio.exceptions import ApplicationError

from activities.bundle import BundleCache
from activities.cluster import INVENTORY_NAMESPACE, ClusterActivities, load_clusters
from activities.cluster.lease import _acquire, _Lease, _renew
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from ferry.clusters import ClustersFile
from ferry.reconcile import ReconcileInput, ReconcileResult
from ferry.settings import Settings
from tests.kit.environments import publish


def configmap(name: str, namespace: str | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


class Tenants:
    """Two environments on one cluster: staging (no approval needed) and production, each in its namespace."""

    def __init__(self, settings: Settings, kube: KubeServer, tmp: Path, clusters: ClustersFile | None = None) -> None:
        self.settings, self.kube, self.tmp = settings, kube, tmp
        suffix = uuid.uuid4().hex[:8]
        self.suffix = suffix
        self.staging, self.production = f"staging-{suffix}", f"production-{suffix}"
        self.repository = f"{settings.registry.default}/team/tenancy-{suffix}"
        self.admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        self.core = CoreV1Api(self.admin)
        for ns in (self.staging, self.production):
            self.core.create_namespace({"metadata": {"name": ns}})
        pull = RegistryActivities(Registries(settings.registry)).pull_artifact
        self.acts = ClusterActivities(BundleCache(tmp / "cache", pull), str(kube.worker_kubeconfig), clusters)
        self._versions = 0

    def input(self, environment: str, docs: list[dict[str, Any]], **kw: Any) -> ReconcileInput:
        self._versions += 1
        version = f"1.0.{self._versions}"
        digest = publish(self.settings, self.repository, version, docs)
        fields: dict[str, Any] = {
            "environment": environment,
            "repository": self.repository,
            "digest": digest,
            "version": version,
            "path": ".",
            "namespace": environment,
            **kw,
        }
        return ReconcileInput(**fields)

    def reconcile(self, environment: str, docs: list[dict[str, Any]], **kw: Any) -> ReconcileResult:
        return self.acts.reconcile_environment(self.input(environment, docs, **kw))

    def refused(self, environment: str, docs: list[dict[str, Any]], **kw: Any) -> ApplicationError:
        with pytest.raises(ApplicationError) as err:
            self.reconcile(environment, docs, **kw)
        return err.value

    def configmaps(self, namespace: str) -> dict[str, dict[str, str]]:
        return {
            c.metadata.name: c.data
            for c in self.core.list_namespaced_config_map(namespace).items
            if c.metadata.name != "kube-root-ca.crt"
        }

    def inventory(self, environment: str) -> str | None:
        try:
            return str(
                self.core.read_namespaced_config_map(f"ferry-inventory-{environment}", INVENTORY_NAMESPACE).data[
                    "entries"
                ]
            )
        except kubernetes.client.ApiException as err:
            assert err.status == 404
            return None


@pytest.fixture
def tenants(settings: Settings, kube_server: KubeServer, tmp_path: Path) -> Tenants:
    return Tenants(settings, kube_server, tmp_path)


# ----------------------------------------------------------------------------------------- clusters by name


def _plugin_kubeconfig(kube: KubeServer, tmp: Path, marker: Path, kind: str) -> Path:
    """The worker's own kubeconfig, but its user authenticates through a plugin that creates `marker` when run."""
    config = yaml.safe_load(Path(kube.worker_kubeconfig).read_text())
    script = tmp / f"plugin-{kind}.sh"
    script.write_text(
        f'#!/bin/sh\ntouch {marker}\necho \'{{"apiVersion": "client.authentication.k8s.io/v1", '
        '"kind": "ExecCredential", "status": {"token": "t"}}\'\n'
    )
    script.chmod(0o755)
    for user in config["users"]:
        if kind == "exec":
            user["user"] = {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(script),
                    "args": ["--cluster", "x"],
                    "interactiveMode": "Never",
                }
            }
        else:
            user["user"] = {"auth-provider": {"name": "gcp", "config": {"cmd-path": str(script)}}}
    path = tmp / f"{kind}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("kind", ["exec", "auth-provider"])
def test_a_kubeconfig_plugin_never_runs_unless_its_cluster_allows_it(
    settings: Settings, kube_server: KubeServer, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "plugin-ran"
    kubeconfig = str(_plugin_kubeconfig(kube_server, tmp_path, marker, kind))
    clusters_file = tmp_path / "clusters.yaml"
    clusters_file.write_text(
        yaml.safe_dump(
            {
                "clusters": {
                    "plugged": {"kubeconfig": kubeconfig},
                    "plugged-allowed": {"kubeconfig": kubeconfig, "allow-auth": [kind]},
                }
            }
        )
    )
    clusters = load_clusters(clusters_file, str(kube_server.worker_kubeconfig))
    assert sorted(clusters.clusters) == ["plugged", "plugged-allowed"]  # a file is the whole list
    t = Tenants(settings, kube_server, tmp_path, clusters)
    docs = [configmap("app")]
    for attempt in range(2):  # a retry does not run it either
        err = t.refused(t.staging, docs, cluster="plugged")
        assert err.type == "AuthPluginRefused" and err.non_retryable, err.message
        assert "'plugged'" in err.message and kind in err.message and "plugin-" in err.message
        assert not marker.exists(), f"the {kind} plugin ran (attempt {attempt})"
    # the legacy lookup by path (a workflow from before clusters by name) is refused the same way
    err = t.refused(t.staging, docs, cluster="", kubeconfig=kubeconfig)
    assert err.type == "AuthPluginRefused" and not marker.exists()
    # the issue's reproduction: a kubeconfig planted where the artifact cache puts released files, named by an old
    # state's path: not an entry of the clusters file, so never loaded
    planted = tmp_path / "cache" / "sha256" / "kubeconfig.yaml"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(Path(kubeconfig).read_text())
    err = t.refused(t.staging, docs, cluster="", kubeconfig=str(planted))
    assert err.type == "UnknownCluster" and str(planted) in err.message and not marker.exists()
    assert t.configmaps(t.staging) == {}
    # allowed for this cluster: the plugin runs (and the test could tell if it had run above)
    with pytest.raises(ApplicationError):
        t.reconcile(t.staging, docs, cluster="plugged-allowed")  # its token is not one the server knows
    assert marker.exists()


def test_clusters_by_name_unknown_names_and_legacy_paths(tenants: Tenants, kube_server: KubeServer) -> None:
    t = tenants
    err = t.refused(t.staging, [configmap("app")], cluster="prod-eu")
    assert err.type == "UnknownCluster" and err.non_retryable
    assert "'prod-eu'" in err.message and "default" in err.message
    # an old workflow's state names a path: only a key into the worker's own file, never loaded as such
    err = t.refused(t.staging, [configmap("app")], cluster="", kubeconfig="/tmp/artifact-cache/kubeconfig.yaml")
    assert err.type == "UnknownCluster" and "/tmp/artifact-cache/kubeconfig.yaml" in err.message
    assert t.configmaps(t.staging) == {}
    # ... the path of a listed entry, or no name and no path, is the documented fallback
    t.reconcile(t.staging, [configmap("app")], cluster="", kubeconfig=str(kube_server.worker_kubeconfig))
    t.reconcile(t.staging, [configmap("app"), configmap("two")], cluster="")
    assert sorted(t.configmaps(t.staging)) == ["app", "two"]


# ------------------------------------------------------------------------------------------------ confinement


def test_a_staging_bundle_cannot_write_outside_its_bounds_and_nothing_of_it_is_applied(tenants: Tenants) -> None:
    t = tenants
    t.reconcile(t.production, [configmap("api", message="production")])
    prod_inventory = t.inventory(t.production)
    assert prod_inventory and "api" in prod_inventory
    crb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"pwn-{t.suffix}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": t.staging}],
    }
    forged_inventory = configmap(
        f"ferry-inventory-{t.production}", INVENTORY_NAMESPACE, entries='[{"id":"/Namespace//kube-system","v":"v1"}]'
    )
    attacks = {
        "another environment's namespace": (
            configmap("api", t.production, message="owned by staging"),
            f"ConfigMap/{t.production}/api",
        ),
        "a ClusterRoleBinding": (crb, f"ClusterRoleBinding/pwn-{t.suffix}"),
        "an inventory": (forged_inventory, f"ConfigMap/{INVENTORY_NAMESPACE}/ferry-inventory-{t.production}"),
        "another environment's Namespace": (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": t.production, "labels": {"x": "y"}}},
            f"Namespace/{t.production}",
        ),
    }
    for what, (attack, named) in attacks.items():
        err = t.refused(t.staging, [configmap("mine"), attack])
        assert err.type == "OutOfBounds" and err.non_retryable, (what, err.message)
        assert named in err.message and "nothing was applied" in err.message, (what, err.message)
        assert t.configmaps(t.staging) == {}, what  # not even its own objects
    assert t.configmaps(t.production) == {"api": {"message": "production"}}
    assert t.inventory(t.production) == prod_inventory
    assert t.inventory(t.staging) is None
    rbac = RbacAuthorizationV1Api(t.admin)
    assert f"pwn-{t.suffix}" not in [b.metadata.name for b in rbac.list_cluster_role_binding().items]
    # the reserved namespace cannot be an environment's own either
    err = t.refused(t.staging, [configmap("mine")], namespace=INVENTORY_NAMESPACE)
    assert err.type == "OutOfBounds" and "reserved" in err.message
    # what the spec lists is allowed: a second namespace, its own Namespace object, a listed cluster kind
    extra = f"{t.staging}-extra"
    result = t.reconcile(
        t.staging,
        [
            configmap("mine"),
            configmap("other", extra),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra}},
        ],
        namespaces=[t.staging, extra],
    )
    assert sorted(result.changes.created) == [
        f"ConfigMap/{extra}/other",
        f"ConfigMap/{t.staging}/mine",
        f"Namespace/{extra}",
    ]


def test_an_inventory_from_wider_bounds_never_prunes_outside_the_current_ones(tenants: Tenants) -> None:
    t = tenants
    extra = f"{t.staging}-old"
    t.core.create_namespace({"metadata": {"name": extra}})
    t.reconcile(t.staging, [configmap("mine"), configmap("old", extra)], namespaces=[t.staging, extra])
    # the spec narrows to its own namespace: the inventory still names ConfigMap/<extra>/old
    result = t.reconcile(t.staging, [configmap("mine")])
    assert result.changes.deleted == [] and result.changes.prune_skipped == [f"ConfigMap/{extra}/old"]
    assert t.configmaps(extra) == {"old": {"k": "v"}}
    assert "old" not in (t.inventory(t.staging) or "")


def test_the_clusters_file_bounds_what_a_spec_may_claim(
    settings: Settings, kube_server: KubeServer, tmp_path: Path
) -> None:
    """CI may apply staging's spec (no approval needed) and point it at production's namespace: the spec's bounds
    are the spec author's word. An entry's `environments` is the worker operator's, and it wins."""
    probe = Tenants(settings, kube_server, tmp_path / "probe")
    staging, production = probe.staging, probe.production
    clusters_file = tmp_path / "clusters.yaml"
    clusters_file.write_text(
        yaml.safe_dump(
            {
                "clusters": {
                    "default": {
                        "kubeconfig": str(kube_server.worker_kubeconfig),
                        "environments": {staging: {"namespaces": [staging]}, production: {"namespaces": [production]}},
                    }
                }
            }
        )
    )
    t = Tenants(settings, kube_server, tmp_path, load_clusters(clusters_file, None))
    t.staging, t.production = staging, production  # the probe's namespaces exist already
    err = t.refused(staging, [configmap("api", production)], namespaces=[staging, production])
    assert err.type == "OutOfBounds" and err.non_retryable and production in err.message, err.message
    err = t.refused(staging, [configmap("x")], cluster_kinds=["ClusterRoleBinding"])
    assert err.type == "OutOfBounds" and "cluster-kind ClusterRoleBinding" in err.message
    err = t.refused(f"intruder-{t.suffix}", [configmap("x")], namespace=staging)
    assert err.type == "OutOfBounds" and "may not use cluster 'default'" in err.message
    assert t.configmaps(staging) == {} and t.configmaps(production) == {}
    t.reconcile(production, [configmap("api")])
    assert sorted(t.configmaps(production)) == ["api"]


def test_the_clusters_file_can_require_impersonation(
    settings: Settings, kube_server: KubeServer, tmp_path: Path
) -> None:
    """An operator bound `service-account:` is not the spec's to drop or change (CI may apply staging's spec)."""
    probe = Tenants(settings, kube_server, tmp_path / "probe")
    staging = probe.staging
    clusters_file = tmp_path / "clusters.yaml"
    clusters_file.write_text(
        yaml.safe_dump(
            {
                "clusters": {
                    "default": {
                        "kubeconfig": str(kube_server.worker_kubeconfig),
                        "environments": {staging: {"namespaces": [staging], "service-account": "deployer"}},
                    }
                }
            }
        )
    )
    t = Tenants(settings, kube_server, tmp_path, load_clusters(clusters_file, None))
    t.staging = staging
    for account in (None, "default"):
        err = t.refused(staging, [configmap("api")], service_account=account)
        assert err.type == "OutOfBounds" and "must apply as service account deployer" in err.message, err.message
    assert t.configmaps(staging) == {}


def test_an_object_of_another_environment_is_never_taken_over(tenants: Tenants) -> None:
    """Two environments may share a namespace; an artifact of one that renders an object the other applied is
    refused before anything is written (an object no environment labelled is adopted, as Flux does)."""
    shared = tenants.production
    tenants.reconcile(tenants.production, [configmap("db-config", value="production's")])
    err = tenants.refused(
        tenants.staging, [configmap("fresh"), configmap("db-config", value="staging's")], namespace=shared
    )
    assert err.type == "OutOfBounds" and err.non_retryable
    assert f"ConfigMap/{shared}/db-config: belongs to environment {tenants.production}" in err.message
    assert tenants.configmaps(shared) == {"db-config": {"value": "production's"}}  # and "fresh" was not written
    tenants.core.create_namespaced_config_map(shared, {"metadata": {"name": "by-hand"}, "data": {"k": "v"}})
    tenants.reconcile(tenants.staging, [configmap("by-hand", k="adopted")], namespace=shared)
    assert tenants.configmaps(shared)["by-hand"] == {"k": "adopted"}


# ------------------------------------------------------------------------------------------------------ lease


def _lease(t: Tenants, environment: str) -> Any:
    return CoordinationV1Api(t.admin).read_namespaced_lease(f"ferry-reconcile-{environment}", INVENTORY_NAMESPACE)


def test_a_held_lease_stops_a_second_reconcile_before_it_writes_and_expires(tenants: Tenants) -> None:
    t = tenants
    t.reconcile(t.staging, [configmap("first")])
    assert _lease(t, t.staging).spec.holder_identity is None  # released at the end
    # another reconcile holds it (renewed just now)
    coordination = CoordinationV1Api(t.admin)
    lease = _lease(t, t.staging)
    lease.spec.holder_identity = "env/other/1#1@elsewhere"
    lease.spec.renew_time = datetime.now(UTC)
    lease.spec.lease_duration_seconds = 30
    coordination.replace_namespaced_lease(lease.metadata.name, INVENTORY_NAMESPACE, lease)
    err = t.refused(t.staging, [configmap("first"), configmap("second")])
    assert err.type == "LeaseHeld" and not err.non_retryable
    assert "env/other/1#1@elsewhere" in err.message
    assert sorted(t.configmaps(t.staging)) == ["first"]
    # ... until it expires (a crashed holder): then it is taken over
    lease = _lease(t, t.staging)
    lease.spec.renew_time = datetime.now(UTC) - timedelta(seconds=31)
    coordination.replace_namespaced_lease(lease.metadata.name, INVENTORY_NAMESPACE, lease)
    transitions = lease.spec.lease_transitions or 0
    t.reconcile(t.staging, [configmap("first"), configmap("second")])
    assert sorted(t.configmaps(t.staging)) == ["first", "second"]
    assert _lease(t, t.staging).spec.lease_transitions == transitions + 1


def test_two_concurrent_reconciles_of_one_environment_never_both_write(tenants: Tenants) -> None:
    t = tenants
    many = [configmap(f"a-{i}") for i in range(120)]
    first = t.input(t.staging, many)
    second = t.input(t.staging, [configmap("b-only")])
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["first"] = t.acts.reconcile_environment(first)
        except Exception as err:
            outcome["first"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the first holds the lease: it is writing
        try:
            if _lease(t, t.staging).spec.holder_identity:
                break
        except kubernetes.client.ApiException:
            pass
        time.sleep(0.01)
    with pytest.raises(ApplicationError) as err:
        t.acts.reconcile_environment(second)
    busy = thread.is_alive()
    thread.join(60)
    assert busy, "the first reconcile finished before the second started: the test proved nothing"
    assert err.value.type == "LeaseHeld", err.value.message
    assert isinstance(outcome["first"], ReconcileResult), outcome["first"]
    assert "b-only" not in t.configmaps(t.staging) and len(t.configmaps(t.staging)) == 120


def test_the_lease_is_renewed_while_the_reconcile_runs(tenants: Tenants, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tenants
    docs = [configmap(f"c-{i}") for i in range(5)]
    t.reconcile(t.staging, docs)
    quiet = t.reconcile(t.staging, [*docs, configmap("one")]).changes.api_requests  # one object more
    import activities.cluster.lease

    monkeypatch.setattr(activities.cluster.lease, "LEASE_RENEW_AFTER", 0.0)  # renew before every request
    busy = t.reconcile(t.staging, [*docs, configmap("one"), configmap("two")]).changes
    assert busy.created == [f"ConfigMap/{t.staging}/two"]
    # each request after taking the lease was preceded by a renewal (a GET and a PUT of the Lease)
    assert busy.api_requests > 2 * quiet, (busy.api_requests, quiet)
    assert _lease(t, t.staging).spec.holder_identity is None  # released after its last renewal


def test_a_long_operation_keeps_its_lease_renewed_and_releases_it_after(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    import activities.cluster.lease

    t = tenants
    monkeypatch.setattr(activities.cluster.lease, "LEASE_RENEW_AFTER", 0.5)
    cluster = t.acts.cluster("default")
    environment = f"long-{t.suffix}"
    with activities.cluster.lease.held(cluster, environment):
        taken = _lease(t, environment).spec.renew_time
        time.sleep(0.7)  # a long step: the next request of the same reconcile renews first
        cluster.get(cluster.resource("v1", "Namespace"), INVENTORY_NAMESPACE, None)
        renewed = _lease(t, environment).spec
        assert renewed.renew_time > taken, (renewed.renew_time, taken)
        with pytest.raises(ApplicationError) as err:  # still held: another reconcile is refused
            _acquire(cluster, _Lease(f"ferry-reconcile-{environment}", "other", environment))
        assert err.value.type == "LeaseHeld"
    assert _lease(t, environment).spec.holder_identity is None
    cluster.get(cluster.resource("v1", "Namespace"), INVENTORY_NAMESPACE, None)  # no renewal once released
    assert _lease(t, environment).spec.holder_identity is None


def test_racing_for_a_free_lease_one_wins(tenants: Tenants) -> None:
    t = tenants
    cluster = t.acts.cluster("default")
    for round_ in range(5):
        environment = f"race-{t.suffix}-{round_}"
        results: list[str] = []
        barrier = threading.Barrier(2)

        def take(
            holder: str,
            environment: str = environment,
            results: list[str] = results,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            try:
                _acquire(cluster, _Lease(f"ferry-reconcile-{environment}", holder, environment))
                results.append("won")
            except ApplicationError as err:
                results.append(err.type or "")

        threads = [threading.Thread(target=take, args=(h,)) for h in ("one", "two")]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(results) == ["LeaseHeld", "won"], results


def test_a_lease_taken_over_stops_its_old_holder(tenants: Tenants) -> None:
    t = tenants
    cluster = t.acts.cluster("default")
    mine = _Lease(f"ferry-reconcile-{t.staging}", "stalled", t.staging)
    _acquire(cluster, mine)
    lease = _lease(t, t.staging)
    lease.spec.holder_identity = "the-next-one"
    CoordinationV1Api(t.admin).replace_namespaced_lease(lease.metadata.name, INVENTORY_NAMESPACE, lease)
    with pytest.raises(ApplicationError) as err:
        _renew(cluster, mine)
    assert err.value.type == "LeaseHeld" and "the-next-one" in err.value.message


# ------------------------------------------------------------------------------------------- impersonation


def test_impersonated_service_account_is_held_to_its_own_rbac(tenants: Tenants) -> None:
    t = tenants
    sa = "deployer"
    rbac = RbacAuthorizationV1Api(t.admin)
    t.core.create_namespaced_service_account(t.staging, {"metadata": {"name": sa}})
    rbac.create_namespaced_role_binding(
        t.staging,
        {
            "metadata": {"name": "deployer-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": t.staging}],
        },
    )
    # the worker may impersonate accounts only where an admin bound it (examples/rbac/ferry-worker.yaml)
    err = t.refused(t.staging, [configmap("mine")], service_account=sa)
    assert err.type == "Forbidden" and 'cannot impersonate resource "serviceaccounts"' in err.message, err.message
    rbac.create_namespaced_role_binding(
        t.staging,
        {
            "metadata": {"name": "ferry-worker-impersonate"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ferry-worker-impersonate",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ferry-worker"}],
        },
    )
    # confinement "bypassed": the spec lets it write to production's namespace; the account may not
    bounds = {"namespaces": [t.staging, t.production], "service_account": sa}
    err = t.refused(t.staging, [configmap("mine"), configmap("theirs", t.production)], **bounds)
    assert err.type == "Forbidden" and err.non_retryable, err.message
    assert f"system:serviceaccount:{t.staging}:{sa}" in err.message
    assert t.configmaps(t.staging) == {} and t.configmaps(t.production) == {}
    # in its own namespace it applies, and prunes, as that account
    t.reconcile(t.staging, [configmap("mine"), configmap("gone")], **bounds)
    result = t.reconcile(t.staging, [configmap("mine")], **bounds)
    assert result.changes.deleted == [f"ConfigMap/{t.staging}/gone"]
    assert sorted(t.configmaps(t.staging)) == ["mine"]
    # a spec that picks a controller's account (broad cluster rights) cannot borrow it: no binding there
    err = t.refused(
        f"borrow-{t.suffix}",
        [configmap(f"x-{t.suffix}")],
        namespace="kube-system",
        service_account="generic-garbage-collector",
    )
    assert err.type == "Forbidden" and "cannot impersonate" in err.message
    assert f"x-{t.suffix}" not in t.configmaps("kube-system")
    # an account without rights: even its own namespace is refused, by the server
    err = t.refused(t.staging, [configmap("mine", changed="yes")], service_account="nobody")
    assert err.type == "Forbidden" and f"system:serviceaccount:{t.staging}:nobody" in err.message
