"""The rollout's cluster activities on the real control plane with the Gateway API CRDs, as the worker's own
least-privileged identity (granted the Gateway API group, as an operator would), and the reconcile's canary
transform against its field ownership."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException, AppsV1Api, CoreV1Api
from kubernetes.dynamic import DynamicClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.bundle import BundleCache
from activities.cluster import Cluster, ClusterActivities
from activities.cluster.rollout import RolloutActivities
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from ferry.plan import prepare
from ferry.reconcile import ReconcileInput
from ferry.rollout_cluster import CanaryStatus, CanaryTarget
from ferry.rollout_objects import REPLICAS_ANNOTATION, ROLE_LABEL, ROLLOUT_FIELD_MANAGER, canary_managed
from ferry.rollout_spec import GatewayRef
from ferry.settings import Settings
from ferry.spec import env_workflow_id, rollout_workflow_id
from tests.kit.environments import app_manifests, publish

GATEWAY = GatewayRef(name="public", namespace="infra")


@pytest.fixture(scope="module")
def worker_kubeconfig(kube_server: KubeServer, gateway_api: list[str]) -> str:
    with contextlib.suppress(ApiException):  # granted already by another module of the session
        kube_server.allow_worker("gateway.networking.k8s.io")
    return str(kube_server.worker_kubeconfig)


@dataclasses.dataclass
class Stand:
    admin: Any
    acts: RolloutActivities
    env: str
    namespace: str
    kubeconfig: str

    def target(self, gateway: GatewayRef | None = GATEWAY, **kw: Any) -> CanaryTarget:
        return CanaryTarget(
            environment=self.env, namespace=self.namespace, workload="shop", gateway=gateway, hostnames=[], **kw
        )

    def deploy(self, image: str = "shop:1", replicas: int = 3, environment: str | None = None) -> None:
        """W and its Service as the reconcile writes them (prepared, the canary transform, field manager ferry)."""
        cluster = Cluster(self.kubeconfig, None)
        for doc in app_manifests("shop", image, configmap=False, replicas=replicas):
            obj = canary_managed(prepare(doc, environment or self.env, self.namespace, True), "shop")
            cluster.apply(cluster.resource(obj["apiVersion"], obj["kind"]), obj)

    def deployment(self, name: str) -> Any:
        return AppsV1Api(self.admin).read_namespaced_deployment(name, self.namespace)

    def weights(self) -> list[tuple[str, int]]:
        dyn = DynamicClient(self.admin)
        routes = dyn.resources.get(api_version="gateway.networking.k8s.io/v1", kind="HTTPRoute")
        live = routes.get(name="shop", namespace=self.namespace).to_dict()
        return [(r["name"], r["weight"]) for r in live["spec"]["rules"][0]["backendRefs"]]


@pytest.fixture
def stand(kube_server: KubeServer, worker_kubeconfig: str, tmp_path: Path) -> Stand:
    suffix = uuid.uuid4().hex[:8]
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    namespace = f"ns-{suffix}"
    CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    acts = RolloutActivities(BundleCache(tmp_path / "cache", _no_pull), worker_kubeconfig)
    return Stand(admin, acts, f"env-{suffix}", namespace, worker_kubeconfig)


def _no_pull(*args: Any) -> Any:
    raise AssertionError("the rollout activities pull no artifact")


def test_initialize_makes_the_pair_and_a_route_at_0_and_scales_the_canary_to_0(stand: Stand) -> None:
    stand.deploy(replicas=3)
    started = time.monotonic()
    status = stand.acts.rollout_initialize(stand.target())
    print(f"initialize: {time.monotonic() - started:.2f} s")
    assert status.model_dump(exclude={"canary_ready"}) == CanaryStatus(
        weight=0,
        canary_image="shop:1",
        primary_image="shop:1",
        canary_replicas=0,
        primary_replicas=3,
        primary_ready=3,
        primary_matches_canary=True,
        route=True,
    ).model_dump(exclude={"canary_ready"})  # the canary's ready count follows its scale-down a moment later
    primary = stand.deployment("shop-primary")
    assert primary.spec.selector.match_labels == {"app": "shop", ROLE_LABEL: "primary"}
    assert primary.spec.template.metadata.labels == {"app": "shop", ROLE_LABEL: "primary"}
    core = CoreV1Api(stand.admin)
    for role in ("primary", "canary"):
        svc = core.read_namespaced_service(f"shop-{role}", stand.namespace)
        assert svc.spec.selector == {"app": "shop", ROLE_LABEL: role}
        assert [(p.port, p.target_port) for p in svc.spec.ports] == [(80, 8080)]  # the release Service's
    assert stand.weights() == [("shop-primary", 100), ("shop-canary", 0)]
    canary = stand.deployment("shop")
    assert canary.spec.replicas == 0
    assert any(m.manager == ROLLOUT_FIELD_MANAGER for m in canary.metadata.managed_fields)
    again = stand.acts.rollout_initialize(stand.target())  # idempotent
    assert again.primary_replicas == 3 and again.canary_replicas == 0 and again.weight == 0


def test_a_canary_walk_set_weight_promote_finish(stand: Stand) -> None:
    stand.deploy(replicas=2)
    stand.acts.rollout_initialize(stand.target())
    stand.deploy(image="shop:2", replicas=2)  # the next release: only W changes
    status = stand.acts.rollout_set_weight(stand.target(), 10)
    assert stand.weights() == [("shop-primary", 90), ("shop-canary", 10)]
    assert status.weight == 10 and status.canary_replicas == 2 and status.canary_image == "shop:2"
    assert status.primary_image == "shop:1" and not status.primary_matches_canary
    promoted = stand.acts.rollout_promote(stand.target())
    assert promoted.primary_image == "shop:2" and promoted.primary_matches_canary
    assert stand.deployment("shop-primary").spec.template.metadata.labels[ROLE_LABEL] == "primary"
    finished = stand.acts.rollout_finish(stand.target())
    assert stand.weights() == [("shop-primary", 100), ("shop-canary", 0)]
    assert finished.canary_replicas == 0 and finished.weight == 0 and finished.primary_ready == 2
    now = stand.acts.rollout_status(stand.target())
    assert (now.weight, now.canary_replicas, now.primary_image, now.route) == (0, 0, "shop:2", True)


def test_the_replica_ratio_carries_the_traffic_without_a_gateway(stand: Stand) -> None:
    stand.deploy(replicas=4)
    target = stand.target(gateway=None)
    assert not stand.acts.rollout_initialize(target).route
    counts = {w: stand.acts.rollout_set_weight(target, w).canary_replicas for w in (10, 25, 50, 0)}
    assert counts == {10: 1, 25: 2, 50: 4, 0: 0}
    assert stand.deployment("shop").spec.replicas == 0
    assert stand.acts.rollout_status(target).weight == 0
    with pytest.raises(ApplicationError, match="outside 0..100") as err:
        stand.acts.rollout_set_weight(target, 101)
    assert err.value.type == "RolloutRefused" and err.value.non_retryable


def refused(call: Any, *args: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        call(*args)
    return err.value


def test_a_workload_ferry_does_not_own_or_that_is_missing_is_refused(stand: Stand) -> None:
    missing = refused(stand.acts.rollout_initialize, stand.target())
    assert missing.type == "RolloutRefused" and missing.non_retryable and "does not exist" in missing.message
    stand.deploy(environment="someone-else")
    foreign = refused(stand.acts.rollout_initialize, stand.target())
    assert foreign.type == "RolloutRefused" and "a workload Ferry does not own" in foreign.message
    with pytest.raises(ApiException):
        stand.deployment("shop-primary")  # nothing was made


def test_an_object_of_the_rollouts_names_it_did_not_make_is_refused(stand: Stand) -> None:
    stand.deploy()
    CoreV1Api(stand.admin).create_namespaced_service(
        stand.namespace, {"metadata": {"name": "shop-canary"}, "spec": {"ports": [{"port": 1}]}}
    )
    err = refused(stand.acts.rollout_initialize, stand.target())
    assert err.type == "RolloutRefused" and "shop-canary" in err.message and "not the rollout's" in err.message


def test_only_the_environments_workflows_may_roll_it_out(stand: Stand) -> None:
    stand.deploy()
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"env/{stand.env}-other")
    err = refused(env.run, stand.acts.rollout_status, stand.target())
    assert err.type == "OutOfBounds" and rollout_workflow_id(stand.env) in err.message
    for workflow_id in (rollout_workflow_id(stand.env), env_workflow_id(stand.env)):
        env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
        assert env.run(stand.acts.rollout_status, stand.target()).canary_image == "shop:1"


def test_reconciling_the_canary_leaves_its_replicas_to_the_rollout(
    stand: Stand, settings: Settings, kube_server: KubeServer, tmp_path: Path
) -> None:
    pull = RegistryActivities(Registries(settings.registry)).pull_artifact
    reconciler = ClusterActivities(BundleCache(tmp_path / "reconcile", pull), str(kube_server.worker_kubeconfig))
    repository = f"{settings.registry.default}/team/canary-{uuid.uuid4().hex[:8]}"
    digest = publish(settings, repository, "1.0.0", app_manifests("shop", replicas=3))

    def reconcile(workload: str = "shop") -> Any:
        return reconciler.reconcile_environment(
            ReconcileInput(
                environment=stand.env,
                repository=repository,
                digest=digest,
                version="1.0.0",
                path=".",
                namespace=stand.namespace,
                drift_baseline=True,
                canary_workload=workload,
            )
        )

    reconcile()
    canary = stand.deployment("shop")
    assert canary.metadata.annotations[REPLICAS_ANNOTATION] == "3"
    assert canary.spec.template.metadata.labels[ROLE_LABEL] == "canary"
    stand.acts.rollout_initialize(stand.target(gateway=None))
    assert stand.deployment("shop").spec.replicas == 0
    again = reconcile()
    assert stand.deployment("shop").spec.replicas == 0
    assert again.changes.drift == {} and not again.changes.updated
    err = refused(reconcile, "cart")
    assert err.type == "RolloutRefused" and "cart" in err.message and stand.env in err.message
