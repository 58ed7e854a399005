"""EnvironmentWorkflow against the local stack: real Temporal dev server, real registry, the real Kubernetes API
server (the worker as the least-privileged ferry-worker user, through the fault proxy)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import AppsV1Api, CoreV1Api
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port
from devstack.registry import Registry
from ferry.environment import LenientPayload
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import (
    app_manifests,
    next_iteration,
    publish,
    reconcile_now,
    record_histories,
    start_environment,
    wait_status,
)
from tests.kit.stack import settings_for, terminate_running
from workers.worker import build_worker
from workflows.environment import EnvironmentWorkflow


def _names() -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"env-{suffix}", f"ns-{suffix}", f"team/app-{suffix}"


def _spec(settings: Settings, name: str, ns: str, repo: str, **kw: Any) -> EnvironmentSpec:
    data = {
        "name": name,
        "repository": f"{settings.registry.default}/{repo}",
        "namespace": ns,
        "interval": "2s",
        "health_timeout": "20s",
        **kw,
    }
    if "version" not in data and "semver" not in data:
        data["semver"] = ">=1.0.0"
    return EnvironmentSpec.model_validate(data)


def _apis(kube_server: Any) -> tuple[CoreV1Api, AppsV1Api]:
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    return CoreV1Api(api), AppsV1Api(api)


def _ensure_ns(core: CoreV1Api, ns: str) -> None:
    core.create_namespace({"metadata": {"name": ns}})


async def test_first_deploy_new_version_prune_and_noop(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    repository = f"{dev_worker.registry.default}/{repo}"
    d1 = publish(dev_worker, repository, "1.0.0", app_manifests("web"))
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo))
    status = await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="first deploy healthy")
    assert status.state.last_applied and status.state.last_applied.digest == d1
    assert apps.read_namespaced_deployment("web", ns).metadata.labels["ferry.dev/environment"] == name
    assert core.read_namespaced_config_map("web-config", ns).data == {"message": "hello"}
    inventory = core.read_namespaced_config_map(f"ferry-inventory-{name}", "ferry-system")
    assert inventory.data["digest"] == d1 and "Deployment" in inventory.data["entries"]

    # a no-op reconcile changes no resourceVersion
    def versions() -> dict[str, str]:
        return {
            f"{o.kind}/{o.metadata.name}": o.metadata.resource_version
            for o in [
                *apps.list_namespaced_deployment(ns).items,
                *core.list_namespaced_service(ns).items,
                *core.list_namespaced_config_map(ns).items,
                inventory,
            ]
        }

    await asyncio.sleep(1)  # let the simulated controller finish writing rollout status
    before = versions()
    await next_iteration(handle)
    await next_iteration(handle)
    assert versions() == before

    # a new version in the range is picked up within one interval; a removed object is pruned
    d2 = publish(dev_worker, repository, "1.1.0", app_manifests("web", image="nginx:1.26", configmap=False))
    status = await wait_status(
        handle,
        lambda s: (
            s.state.last_applied is not None
            and s.state.last_applied.digest == d2
            and s.state.health.status == "Healthy"
        ),
        timeout=20,
        what="1.1.0 applied",
    )
    assert apps.read_namespaced_deployment("web", ns).spec.template.spec.containers[0].image == "nginx:1.26"
    with pytest.raises(kubernetes.client.ApiException) as gone:
        core.read_namespaced_config_map("web-config", ns)
    assert gone.value.status == 404
    applied = [e for e in status.state.events if e.type == "Applied"]
    assert applied[-1].objects["deleted"] == [f"ConfigMap/{ns}/web-config"]
    await handle.terminate("test done")


async def test_drift_reverted_and_recorded_fields_not_set_left_alone(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("api"))  # no replicas set
    handle = await start_environment(
        dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo, interval="1h")
    )
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
    # a person edits the image by hand; an HPA scales replicas (a field the manifest does not set)
    apps.patch_namespaced_deployment(
        "api",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:hotfix"}]}}}},
        field_manager="kubectl-edit",
    )
    apps.patch_namespaced_deployment("api", ns, {"spec": {"replicas": 4}}, field_manager="hpa-controller")
    status = await next_iteration(handle)
    deployment = apps.read_namespaced_deployment("api", ns)
    assert deployment.spec.template.spec.containers[0].image == "nginx:1.25"
    assert deployment.spec.replicas == 4
    drift = status.state.last_drift
    assert drift is not None and drift.type == "DriftCorrected"
    assert drift.objects == {f"Deployment/{ns}/api": [".spec.template.spec.containers[name=app].image"]}
    await handle.terminate("test done")
    await record_histories("local-check-drift", {"environment": handle})


async def test_a_noop_iteration_is_one_local_check_and_no_activity(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """Issue 13 (at most 8 history events per no-op iteration) and 16 (the resolve costs no activity round trip):
    an iteration that changes nothing is one local-activity marker, whether the environment tracks a range or is
    pinned; a change found by the check still goes through the reconcile activity."""
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("noop"))
    handle = await start_environment(
        dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo, interval="1h")
    )
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
    await next_iteration(handle)  # settle: the first iterations after a rollout may still judge health

    async def events() -> list[str]:
        return [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events]

    async def iterate_unobserved() -> list[str]:
        """One signalled iteration, watched through history only: a status query arriving while the check runs
        would make the worker answer it mid-task (one more workflow task, 3 events), which is not the iteration's
        own cost."""
        before = await events()
        await reconcile_now(handle)
        for _ in range(300):
            added = (await events())[len(before) :]
            if added and added[-1] == "EVENT_TYPE_TIMER_STARTED":
                return added
            await asyncio.sleep(0.1)
        raise AssertionError(f"no iteration finished: {added}")

    for _ in range(3):
        added = await iterate_unobserved()
        assert len(added) <= 8, added
        assert "EVENT_TYPE_MARKER_RECORDED" in added
        assert not any(t.startswith("EVENT_TYPE_ACTIVITY_TASK") for t in added), added
    status = await handle.query(EnvironmentWorkflow.status)
    assert status.state.health.status == "Healthy" and status.state.last_error == ""
    # drift is found by the check and corrected by the reconcile activity
    apps.patch_namespaced_deployment(
        "noop",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:by-hand"}]}}}},
        field_manager="kubectl-edit",
    )
    before = await events()
    status = await next_iteration(handle)
    added = (await events())[len(before) :]
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" in added
    assert status.state.last_drift is not None
    assert apps.read_namespaced_deployment("noop", ns).spec.template.spec.containers[0].image == "nginx:1.25"
    await handle.terminate("test done")


async def test_failing_rollout_rolls_back_automatically_and_holds(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    repository = f"{dev_worker.registry.default}/{repo}"
    good = publish(dev_worker, repository, "1.0.0", app_manifests("shop"))
    handle = await start_environment(
        dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo, health_timeout="10s")
    )
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
    broken = publish(dev_worker, repository, "1.1.0", app_manifests("shop", image="shop:1.1.0-broken"))
    rolling = await wait_status(
        handle,
        lambda s: s.state.last_applied is not None and s.state.last_applied.digest == broken,
        what="1.1.0 applied",
    )
    # while the rollout is judged, status says so: never 1.0.0's "Healthy" next to 1.1.0 (Progressing, or already
    # Failed when the simulated rollout failed between two polls)
    assert rolling.state.health.digest == broken and rolling.state.health.status in ("Progressing", "Failed"), (
        rolling.state.health
    )
    status = await wait_status(
        handle,
        lambda s: (
            any(e.type == "AutoRollback" for e in s.state.events)
            and s.state.health.status == "Healthy"
            and s.state.last_applied is not None
            and s.state.last_applied.digest == good
        ),
        timeout=40,
        what="auto-rollback",
    )
    event = next(e for e in status.state.events if e.type == "AutoRollback")
    assert "1.1.0 failed health" in event.message and "ProgressDeadlineExceeded" in event.message
    assert status.state.holds == ["1.1.0"]
    assert status.state.pin is not None and status.state.pin.kind == "auto-rollback"
    assert apps.read_namespaced_deployment("shop", ns).spec.template.spec.containers[0].image == "nginx:1.25"
    await record_histories("auto-rollback", {"environment": handle})
    # the range does not move back onto the held version...
    await next_iteration(handle)
    status = await next_iteration(handle)
    assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
    # ...until a newer version appears
    fixed = publish(dev_worker, repository, "1.2.0", app_manifests("shop", image="nginx:1.27"))
    status = await wait_status(
        handle,
        lambda s: (
            s.state.last_applied is not None
            and s.state.last_applied.digest == fixed
            and s.state.health.status == "Healthy"
        ),
        timeout=30,
        what="1.2.0 after hold",
    )
    assert status.state.pin is None
    await handle.terminate("test done")


async def test_suspend_stops_new_versions_and_drift_correction(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    repository = f"{dev_worker.registry.default}/{repo}"
    publish(dev_worker, repository, "1.0.0", app_manifests("db"))
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo))
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
    await handle.signal(EnvironmentWorkflow.suspend, LenientPayload({"by": "alice", "reason": "incident 42"}))
    await wait_status(handle, lambda s: s.state.suspended, what="suspended")
    publish(dev_worker, repository, "1.1.0", app_manifests("db", image="nginx:1.26"))
    apps.patch_namespaced_deployment(
        "db",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:by-hand"}]}}}},
        field_manager="kubectl-edit",
    )
    await reconcile_now(handle)
    await asyncio.sleep(5)  # two intervals
    assert apps.read_namespaced_deployment("db", ns).spec.template.spec.containers[0].image == "nginx:by-hand"
    status = await handle.query(EnvironmentWorkflow.status)
    assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
    await handle.signal(EnvironmentWorkflow.resume, LenientPayload({"by": "alice"}))
    status = await wait_status(
        handle, lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.1.0", what="resumed"
    )
    assert apps.read_namespaced_deployment("db", ns).spec.template.spec.containers[0].image == "nginx:1.26"
    assert [e.type for e in status.state.events if e.type in ("Suspended", "Resumed")] == ["Suspended", "Resumed"]
    await handle.terminate("test done")


async def test_registry_outage_keeps_environment_and_recovers(
    dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path, task_queue: str
) -> None:
    reg = Registry(port=free_port(), root=tmp_path / "outage-registry")
    reg.start()
    settings = settings_for(reg, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    try:
        publish(settings, f"{reg.host}/{repo}", "1.0.0", app_manifests("cart"))
        async with build_worker(dev_env.client, settings):
            handle = await start_environment(dev_env.client, task_queue, _spec(settings, name, ns, repo))
            await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
            reg.stop()
            status = await wait_status(
                handle,
                lambda s: s.state.source_unavailable_since is not None,
                timeout=40,
                what="source outage in status",
            )
            assert "unreachable" in status.state.source_error
            # nothing deleted, and drift is still corrected from the worker's cache
            apps.patch_namespaced_deployment(
                "cart",
                ns,
                {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:during-outage"}]}}}},
                field_manager="kubectl-edit",
            )
            await wait_status(handle, lambda s: s.state.last_drift is not None, timeout=40, what="drift during outage")
            assert apps.read_namespaced_deployment("cart", ns).spec.template.spec.containers[0].image == "nginx:1.25"
            assert core.read_namespaced_config_map("cart-config", ns).data == {"message": "hello"}
            reg.start()
            await wait_status(handle, lambda s: s.state.source_unavailable_since is None, timeout=40, what="recovery")
            await record_histories("local-check-outage", {"environment": handle})
            await terminate_running(dev_env.client, task_queue)
    finally:
        reg.stop()


async def test_cluster_outage_shows_in_status_and_recovers(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("queue"))
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo))
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
    kube_server.inject_faults(1000, "error")  # the fault proxy drops every connection of the worker's
    try:
        status = await wait_status(
            handle, lambda s: s.state.cluster_unreachable_since is not None, timeout=40, what="cluster outage in status"
        )
        assert "cluster unreachable" in status.state.cluster_error
    finally:
        kube_server.inject_faults(0)
    await wait_status(handle, lambda s: s.state.cluster_unreachable_since is None, timeout=40, what="recovery")
    assert apps.read_namespaced_deployment("queue", ns).spec.template.spec.containers[0].image == "nginx:1.25"
    await handle.terminate("test done")


async def test_broken_artifact_never_prunes_everything(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, apps = _apis(kube_server)
    _ensure_ns(core, ns)
    repository = f"{dev_worker.registry.default}/{repo}"
    publish(dev_worker, repository, "1.0.0", app_manifests("mail"))
    handle = await start_environment(dev_env.client, dev_worker.temporal.task_queue, _spec(dev_worker, name, ns, repo))
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed")
    publish(dev_worker, repository, "1.1.0", [])  # an artifact that renders nothing
    status = await wait_status(
        handle, lambda s: "renders no objects" in s.state.last_error, timeout=20, what="empty artifact refused"
    )
    assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
    assert apps.read_namespaced_deployment("mail", ns) is not None
    await handle.terminate("test done")


async def test_crd_and_its_custom_resource_in_one_bundle_and_prune_disabled(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    name, ns, repo = _names()
    core, _ = _apis(kube_server)
    group = f"{name}.example.com"
    kube_server.allow_worker(group)  # as a cluster admin does for the custom resources a bundle ships
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
                        }
                    },
                }
            ],
        },
    }
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    kept = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "keep-me", "annotations": {"ferry.dev/prune": "disabled"}},
        "data": {"k": "v"},
    }
    repository = f"{dev_worker.registry.default}/{repo}"
    # the Namespace, the CRD and an instance of it arrive together: definitions are applied (and established)
    # before what uses them
    publish(dev_worker, repository, "1.0.0", [widget, kept, crd, namespace, *app_manifests("api")])
    # NB: a CRD is cluster-scoped: the environment lists the kind (its own Namespace needs no listing)
    handle = await start_environment(
        dev_env.client,
        dev_worker.temporal.task_queue,
        _spec(dev_worker, name, ns, repo, cluster_kinds=["CustomResourceDefinition"]),
    )
    status = await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="deployed with a CRD")
    created = next(e for e in status.state.events if e.type == "Applied").objects["created"]
    assert created.index(f"CustomResourceDefinition/widgets.{group}") < created.index(f"Widget/{ns}/w1")
    assert created.index(f"Namespace/{ns}") < created.index(f"Deployment/{ns}/api")
    dyn = kubernetes.dynamic.DynamicClient(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    assert dyn.resources.get(api_version=f"{group}/v1", kind="Widget").get(name="w1", namespace=ns).spec.size == 3
    # 1.1.0 drops the ConfigMap (annotated prune: disabled) and the Widget: one is kept, the other pruned
    publish(dev_worker, repository, "1.1.0", [crd, namespace, *app_manifests("api")])
    status = await wait_status(
        handle,
        lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.1.0",
        what="1.1.0 applied",
    )
    assert core.read_namespaced_config_map("keep-me", ns).data == {"k": "v"}
    deleted = [e for e in status.state.events if e.type == "Applied"][-1].objects["deleted"]
    assert deleted == [f"Widget/{ns}/w1"]
    await handle.terminate("test done")
