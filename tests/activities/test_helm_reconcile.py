"""Chart environments through the reconcile activity, on the real control plane with the real helm: an in-release
chart rendered for the target cluster (its version and API groups), values re-rendered, the render cached, drift
reverted, a failing render refused with nothing applied, crds/ CRDs applied first and never pruned (unless
prune-crds), `helm.sh/resource-policy: keep` surviving prune, and a chart's object outside the bounds refused."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.dynamic import DynamicClient
from temporalio.exceptions import ApplicationError

import activities.helm.deliver as deliver
from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.helm.binary import helm_path
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from ferry.helm_spec import HelmSource
from ferry.reconcile import ReconcileInput, ReconcileResult
from ferry.settings import Settings
from tests.kit.charts import CRD as EXAMPLE_CRD
from tests.kit.charts import write_chart
from tests.kit.environments import publish_dir

CRD = EXAMPLE_CRD.replace("widgets.example.com", "widgets.GROUP").replace("group: example.com", "group: GROUP")

WIDGET = """\
apiVersion: GROUP/v1
kind: Widget
metadata:
  name: {{ .Release.Name }}-widget
spec:
  size: {{ .Values.replicaCount }}
"""
KEPT = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-kept
  annotations:
    helm.sh/resource-policy: keep
data: {a: b}
"""
CAPABILITIES = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-capabilities
data:
  deployments: {{ .Capabilities.APIVersions.Has "apps/v1/Deployment" | quote }}
  widgets: {{ .Capabilities.APIVersions.Has "GROUP/v1" | quote }}
"""


class ChartWorld:
    def __init__(self, settings: Settings, kube: KubeServer, tmp: Path) -> None:
        helm_path()  # fails with the `make helm` hint when the binary is missing
        self.settings, self.kube, self.tmp = settings, kube, tmp
        suffix = uuid.uuid4().hex[:8]
        self.env, self.namespace = f"env-{suffix}", f"ns-{suffix}"
        self.repository = f"{settings.registry.default}/team/chart-{suffix}"
        self.admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        CoreV1Api(self.admin).create_namespace({"metadata": {"name": self.namespace}})
        self.group = f"{suffix}.example.com"
        kube.allow_worker(self.group)
        pull = RegistryActivities(Registries(settings.registry)).pull_artifact
        self.acts = ClusterActivities(BundleCache(tmp / "cache", pull), str(kube.worker_kubeconfig))
        self.digests: dict[str, str] = {}

    def release(self, version: str, **chart: Any) -> str:
        """A release with charts/shop (its texts' GROUP is this world's CRD group) and values/prod.yaml."""
        root = self.tmp / f"release-{version}"
        (root / "charts").mkdir(parents=True)
        for part in ("templates", "crds"):
            if part in chart:
                chart[part] = {k: v and v.replace("GROUP", self.group) for k, v in chart[part].items()}
        write_chart(root / "charts", **chart)
        (root / "values").mkdir()
        (root / "values" / "prod.yaml").write_text("greeting: from-prod-values\nreplicaCount: 2\n")
        self.digests[version] = publish_dir(self.settings, self.repository, version, root)
        return self.digests[version]

    def reconcile(self, version: str, baseline: bool = False, **helm: Any) -> ReconcileResult:
        source = HelmSource(chart="charts/shop", release_name="shop", values_files=["values/prod.yaml"], **helm)
        return self.acts.reconcile_environment(
            ReconcileInput(
                environment=self.env,
                repository=self.repository,
                digest=self.digests[version],
                version=version,
                path=".",
                namespace=self.namespace,
                cluster_kinds=["CustomResourceDefinition"],
                drift_baseline=baseline,
                helm=source,
            )
        )

    def get(self, api_version: str, kind: str, name: str, namespaced: bool = True) -> dict[str, Any] | None:
        resource = DynamicClient(self.admin).resources.get(api_version=api_version, kind=kind)
        try:
            found = resource.get(name=name, namespace=self.namespace if namespaced else None)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(found.to_dict())


@pytest.fixture
def world(settings: Settings, kube_server: KubeServer, tmp_path: Path) -> ChartWorld:
    return ChartWorld(settings, kube_server, tmp_path)


def test_an_in_release_chart_is_rendered_for_the_cluster_and_applied_with_its_crds_first(world: ChartWorld) -> None:
    world.release(
        "1.0.0", crds={"widgets.yaml": CRD}, templates={"widget.yaml": WIDGET, "capabilities.yaml": CAPABILITIES}
    )
    first = world.reconcile("1.0.0", values={"image": "nginx:1.27-alpine"})
    created = set(first.changes.created)
    assert {
        f"CustomResourceDefinition/widgets.{world.group}",
        f"Widget/{world.namespace}/shop-widget",
        f"Deployment/{world.namespace}/shop",
    } <= created, created
    # crds/ first: the CRD was applied (and established) before the Widget that needs it
    assert first.changes.created.index(f"CustomResourceDefinition/widgets.{world.group}") < first.changes.created.index(
        f"Widget/{world.namespace}/shop-widget"
    )
    config = world.get("v1", "ConfigMap", "shop-config")
    assert config is not None
    # values files then inline values; .Release.Namespace is the environment's; .Capabilities is the cluster's
    assert config["data"]["greeting"] == "from-prod-values"
    assert config["data"]["kubeVersion"] == "v1.35.4" and config["data"]["isUpgrade"] == "false"
    assert config["metadata"]["namespace"] == world.namespace
    deployment = world.get("apps/v1", "Deployment", "shop")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27-alpine"
    capabilities = world.get("v1", "ConfigMap", "shop-capabilities")
    assert capabilities is not None and capabilities["data"]["deployments"] == "true"


def test_values_change_re_renders_and_an_unchanged_iteration_runs_no_helm(
    world: ChartWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[str] = []
    real = deliver.render_chart

    def counted(*args: Any, **kwargs: Any) -> Any:
        renders.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(deliver, "render_chart", counted)
    world.release("1.0.0")
    world.reconcile("1.0.0")
    world.reconcile("1.0.0", baseline=True)  # now an upgrade (.Release.IsUpgrade): rendered once more
    assert len(renders) == 2
    upgraded = world.reconcile("1.0.0", baseline=True)
    assert len(renders) == 2, "an unchanged iteration must hit the render cache"
    assert not upgraded.changes.changed
    changed = world.reconcile("1.0.0", baseline=True, values={"greeting": "hola"})
    assert len(renders) == 3
    assert changed.changes.updated == [f"ConfigMap/{world.namespace}/shop-config"]
    config = world.get("v1", "ConfigMap", "shop-config")
    assert config is not None and config["data"]["greeting"] == "hola"


def test_drift_on_a_chart_object_is_reverted_with_its_field_paths(world: ChartWorld) -> None:
    world.release("1.0.0")
    world.reconcile("1.0.0")
    world.reconcile("1.0.0", baseline=True)
    CoreV1Api(world.admin).patch_namespaced_config_map(
        "shop-config", world.namespace, {"data": {"greeting": "tampered"}}
    )
    reverted = world.reconcile("1.0.0", baseline=True)
    key = f"ConfigMap/{world.namespace}/shop-config"
    assert reverted.changes.drift.get(key) == [".data.greeting"], reverted.changes.drift
    config = world.get("v1", "ConfigMap", "shop-config")
    assert config is not None and config["data"]["greeting"] == "from-prod-values"


def test_a_failing_render_is_refused_with_helms_message_and_nothing_is_applied(world: ChartWorld) -> None:
    world.release("1.0.0")
    world.reconcile("1.0.0")
    before = world.get("v1", "ConfigMap", "shop-config")
    world.release(
        "1.1.0", templates={"configmap.yaml": '{{ required "greeting must be set for production" .Values.missing }}'}
    )
    with pytest.raises(ApplicationError) as refused:
        world.reconcile("1.1.0")
    assert refused.value.type == "RenderFailed" and refused.value.non_retryable
    assert "greeting must be set for production" in refused.value.message
    assert "shop/templates/configmap.yaml" in refused.value.message
    after = world.get("v1", "ConfigMap", "shop-config")
    assert after is not None and before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_crds_leave_the_chart_but_stay_on_the_cluster_unless_prune_crds(world: ChartWorld) -> None:
    world.release("1.0.0", crds={"widgets.yaml": CRD})
    world.reconcile("1.0.0")
    world.release("1.1.0")  # no crds/ any more
    dropped = world.reconcile("1.1.0", baseline=True)
    assert f"CustomResourceDefinition/widgets.{world.group}" not in dropped.changes.deleted
    assert world.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"widgets.{world.group}", False)
    # with prune-crds the inventory records them, and their removal from the chart prunes them
    world.release("1.2.0", crds={"widgets.yaml": CRD})
    world.reconcile("1.2.0", baseline=True, prune_crds=True)
    world.release("1.3.0")
    pruned = world.reconcile("1.3.0", baseline=True, prune_crds=True)
    assert f"CustomResourceDefinition/widgets.{world.group}" in pruned.changes.deleted


def test_a_keep_resource_survives_prune(world: ChartWorld) -> None:
    world.release("1.0.0", templates={"kept.yaml": KEPT})
    world.reconcile("1.0.0")
    world.release("1.1.0")
    pruned = world.reconcile("1.1.0", baseline=True)
    key = f"ConfigMap/{world.namespace}/shop-kept"
    assert key in pruned.changes.prune_skipped and key not in pruned.changes.deleted
    assert world.get("v1", "ConfigMap", "shop-kept") is not None


def test_a_chart_object_outside_the_environments_namespaces_is_refused(world: ChartWorld) -> None:
    outside = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: escape, namespace: kube-system}\ndata: {a: b}\n"
    world.release("1.0.0", templates={"escape.yaml": outside})
    with pytest.raises(ApplicationError) as refused:
        world.reconcile("1.0.0")
    assert refused.value.type == "OutOfBounds" and "kube-system" in refused.value.message
    assert world.get("v1", "ConfigMap", "shop-config") is None


LOOKUP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  database: {{ dig "data" "database" "no lookup" (lookup "v1" "ConfigMap" .Release.Namespace "seed") | quote }}
"""


def _accounts(world: ChartWorld) -> None:
    """`reader` may read and write ConfigMaps in the namespace; `nobody` may do nothing; the worker may impersonate
    the namespace's accounts (examples/rbac/ferry-worker.yaml's ferry-worker-impersonate)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(world.admin)
    core = CoreV1Api(world.admin)
    ns = world.namespace
    for account in ("reader", "nobody"):
        core.create_namespaced_service_account(ns, {"metadata": {"name": account}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "seed"}, "data": {"database": "postgres://db:5432"}})
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}
    rbac.create_namespaced_role(ns, {"metadata": {"name": "reader"}, "rules": [rule]})
    for name, role_kind, role, subject in (
        ("reader", "Role", "reader", {"kind": "ServiceAccount", "name": "reader", "namespace": ns}),
        (
            "ferry-worker-impersonate",
            "ClusterRole",
            "ferry-worker-impersonate",
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ferry-worker"},
        ),
    ):
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
                "subjects": [subject],
            },
        )


def test_lookup_reads_the_cluster_only_when_opted_in_and_only_as_the_environments_account(world: ChartWorld) -> None:
    _accounts(world)
    world.release("1.0.0", templates={"configmap.yaml": LOOKUP, "deployment.yaml": None})

    def run(account: str, lookup: bool) -> ReconcileResult:
        as_user = f"system:serviceaccount:{world.namespace}:{account}" if lookup else ""
        source = HelmSource(chart="charts/shop", release_name="shop", lookup_as=as_user)
        return world.acts.reconcile_environment(
            ReconcileInput(
                environment=world.env,
                repository=world.repository,
                digest=world.digests["1.0.0"],
                version="1.0.0",
                path=".",
                namespace=world.namespace,
                service_account=account,
                helm=source,
            )
        )

    run("reader", lookup=False)  # hermetic by default: lookup has no cluster and answers an empty map
    config = world.get("v1", "ConfigMap", "shop-config")
    assert config is not None and config["data"]["database"] == "no lookup"
    run("reader", lookup=True)
    config = world.get("v1", "ConfigMap", "shop-config")
    assert config is not None and config["data"]["database"] == "postgres://db:5432"
    with pytest.raises(ApplicationError) as refused:  # the worker could read it; the environment's account cannot
        run("nobody", lookup=True)
    assert refused.value.type == "RenderFailed" and "forbidden" in refused.value.message
    assert f"system:serviceaccount:{world.namespace}:nobody" in refused.value.message
    # read-only: helm stored no release of its own
    secrets = CoreV1Api(world.admin).list_namespaced_secret(world.namespace, label_selector="owner=helm")
    assert secrets.items == []


PRE_HOOK_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-pre
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "5"
data: {greeting: {{ .Values.greeting | quote }}}
"""
POST_HOOK_CONFIG = PRE_HOOK_CONFIG.replace("-pre", "-post").replace("pre-install,pre-upgrade", "post-install")


def test_hooks_run_around_the_release_once_per_release_and_a_failed_pre_hook_applies_nothing(world: ChartWorld) -> None:
    from tests.kit.charts import HOOK_JOB

    templates = {"job.yaml": HOOK_JOB, "pre.yaml": PRE_HOOK_CONFIG, "post.yaml": POST_HOOK_CONFIG}
    world.release("1.0.0", templates=templates)
    first = world.reconcile("1.0.0")
    ns = world.namespace
    assert first.changes.hooks == [
        f"Job/{ns}/shop-migrate pre-install",  # weight -5 first
        f"ConfigMap/{ns}/shop-pre pre-install",
        f"ConfigMap/{ns}/shop-post post-install",
    ]
    assert world.get("batch/v1", "Job", "shop-migrate") is None  # Complete, then deleted (hook-succeeded)
    pre, deployment, post = (
        world.get("v1", "ConfigMap", "shop-pre"),
        world.get("apps/v1", "Deployment", "shop"),
        world.get("v1", "ConfigMap", "shop-post"),
    )
    assert pre is not None and deployment is not None and post is not None
    order = [int(o["metadata"]["resourceVersion"]) for o in (pre, deployment, post)]
    assert order == sorted(order), "pre-hooks before the release, post-hooks after it"
    assert pre["metadata"]["labels"]["ferry.dev/hook-of"] == world.env
    assert "ferry.dev/environment" not in pre["metadata"]["labels"]  # never in the inventory, prune or drift
    # the same release again (a re-render as an upgrade, a drift revert): no hooks
    again = world.reconcile("1.0.0", baseline=True)
    assert again.changes.hooks == []
    # new values are a new release: the upgrade's hooks run (post-install is not one of them)
    upgraded = world.reconcile("1.0.0", baseline=True, values={"greeting": "hola"})
    assert upgraded.changes.hooks == [f"Job/{ns}/shop-migrate pre-upgrade", f"ConfigMap/{ns}/shop-pre pre-upgrade"]

    failing = {**templates, "job.yaml": HOOK_JOB.replace("busybox:1.36", "busybox:1.36-broken")}
    world.release("2.0.0", templates=failing, values={"replicaCount": 1, "greeting": "v2", "image": "nginx:1.28"})
    with pytest.raises(ApplicationError) as refused:
        world.reconcile("2.0.0", baseline=False)
    assert refused.value.type == "HookFailed" and "shop-migrate" in refused.value.message
    deployment = world.get("apps/v1", "Deployment", "shop")
    assert deployment is not None  # the running release stays as it was
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_two_environments_of_one_chart_share_its_crds(
    world: ChartWorld, settings: Settings, kube_server: KubeServer, tmp_path: Path
) -> None:
    world.release("1.0.0", crds={"widgets.yaml": CRD}, templates={"widget.yaml": WIDGET})
    first = world.reconcile("1.0.0")
    assert f"CustomResourceDefinition/widgets.{world.group}" in first.changes.created
    other = ChartWorld(settings, kube_server, tmp_path / "other")
    other.repository, other.digests, other.group = world.repository, world.digests, world.group
    second = other.reconcile("1.0.0")  # the CRD is the first environment's: left to it, not refused
    assert f"Widget/{other.namespace}/shop-widget" in second.changes.created
    assert not any(c.startswith("CustomResourceDefinition/") for c in second.changes.created + second.changes.updated)


def test_a_failed_post_hook_is_run_again_not_forgotten(world: ChartWorld) -> None:
    from tests.kit.charts import HOOK_JOB

    post_job = HOOK_JOB.replace("pre-install,pre-upgrade", "post-install,post-upgrade").replace(
        "busybox:1.36", "busybox:1.36-broken"
    )
    world.release("1.0.0", templates={"job.yaml": post_job})
    for attempt in range(2):  # the release is applied, but not recorded as done while its post-hook fails
        with pytest.raises(ApplicationError) as failed:
            world.reconcile("1.0.0", baseline=bool(attempt))
        assert failed.value.type == "HookFailed" and "shop-migrate" in failed.value.message, attempt
    assert world.get("apps/v1", "Deployment", "shop") is not None
