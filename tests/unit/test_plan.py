"""The pure reconcile logic: preparation, diff against defaulted live objects, order, inventory maths."""

from __future__ import annotations

from typing import Any

from ferry.fieldpaths import leaf_paths
from ferry.health import object_status
from ferry.plan import (
    ENVIRONMENT_LABEL,
    FIELD_MANAGER,
    ObjectId,
    apply_order,
    confirm_update,
    delete_order,
    plan_object,
    prepare,
    stale,
)
from ferry.versions import SemverRange, select


def test_prepare_sets_namespace_labels_and_folds_string_data() -> None:
    secret = prepare({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}},
                     "staging", "apps", namespaced=True)
    assert secret["metadata"]["namespace"] == "apps" and secret["metadata"]["labels"][ENVIRONMENT_LABEL] == "staging"
    assert secret["data"] == {"a": "Yg=="} and "stringData" not in secret
    ns = prepare({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}}, "e", "d",
                 namespaced=False)
    assert "namespace" not in ns["metadata"]


def _owned_by_ferry(live: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """`live` with the managedFields entry an apply of `applied` by ferry leaves (FieldsV1, "." entries aside)."""
    fields: dict[str, Any] = {}
    body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in applied["metadata"].items() if k not in ("name", "namespace")}
    for path in leaf_paths(body):
        node = fields
        for token in path:
            node = node.setdefault(token, {})
    live["metadata"]["managedFields"] = [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields}]
    return live


def test_server_defaults_are_not_drift_but_changes_are() -> None:
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1", "ports": [
                   {"containerPort": 80}]}]}}}}
    live = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a", "uid": "u"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "imagePullPolicy": "IfNotPresent",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}], "restartPolicy": "Always"}}},
            "status": {"replicas": 3}}
    assert plan_object(desired, live).action == "update"  # ferry owns none of it yet: adopt it
    _owned_by_ferry(live, desired)
    assert plan_object(desired, live).action == "unchanged"
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"  # type: ignore[index]
    change = plan_object(desired, live)
    assert change.action == "update" and change.fields == [".spec.template.spec.containers[name=app].image"]
    assert plan_object(desired, None).action == "create"


def _deployment(resources: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": labels or {}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1",
                                                           "resources": resources}]}}}}


def test_quantities_compare_by_amount() -> None:
    # What a real API server stores for `cpu: 0.5` and `1000m`: the same amounts, so no change and no request.
    desired = _deployment({"limits": {"cpu": 0.5, "memory": "1Gi"}, "requests": {"cpu": "1000m"}})
    live = _owned_by_ferry(_deployment({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1"}}),
                           desired)
    assert plan_object(desired, live).action == "unchanged"
    more = _deployment({"limits": {"cpu": "600m", "memory": "1Gi"}, "requests": {"cpu": "1000m"}})
    assert plan_object(more, live).fields == [".spec.template.spec.containers[name=app].resources.limits.cpu"]
    # only in resource maps: elsewhere "0.5" and "500m" are different strings
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"ratio": "0.5"}}
    live_config = _owned_by_ferry({**config, "data": {"ratio": "500m"}, "metadata": {"name": "c"}}, config)
    assert plan_object(config, live_config).action == "update"


def test_a_field_dropped_from_the_manifest_is_a_change() -> None:
    v1 = _deployment({}, labels={"team": "a", "tier": "web"})
    live = _owned_by_ferry(_deployment({}, labels={"team": "a", "tier": "web"}), v1)
    v2 = _deployment({}, labels={"team": "a"})  # every field v2 sets is live: only ownership says otherwise
    change = plan_object(v2, live)
    assert change.action == "update" and change.fields == [".metadata.labels.tier"]


def test_the_servers_dry_run_decides_a_candidate() -> None:
    desired = _deployment({"limits": {"cpu": "0.5"}}, labels={"team": "a"})
    live = _owned_by_ferry(_deployment({"limits": {"cpu": "500m"}}, labels={"team": "b"}), desired)
    normalised = _owned_by_ferry(_deployment({"limits": {"cpu": "500m"}}, labels={"team": "b"}), desired)
    assert confirm_update(desired, live, normalised).action == "unchanged"  # the apply would change nothing
    applied = _owned_by_ferry(_deployment({"limits": {"cpu": "500m"}}, labels={"team": "a"}), desired)
    change = confirm_update(desired, live, applied)
    assert change.action == "update" and change.fields == [".metadata.labels.team"]  # not the cpu


def test_order_and_inventory_maths() -> None:
    objs = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
            {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}}]
    assert [o["kind"] for o in apply_order(objs)] == ["CustomResourceDefinition", "Namespace", "ConfigMap",
                                                      "Deployment"]
    ids = [ObjectId.of(o) for o in objs]
    assert [i.kind for i in delete_order(ids)] == ["Deployment", "ConfigMap", "Namespace", "CustomResourceDefinition"]
    assert stale(["a", "b", "c"], ["b"]) == ["a", "c"]


def test_semver_selection_skips_prereleases_unparsable_and_held() -> None:
    tags = ["1.0.0", "1.1.0", "1.2.0-rc.1", "latest", "v1.3.0", "2.0.0"]
    assert select(tags, SemverRange(">=1.0.0 <2.0.0")) == "v1.3.0"
    assert select(tags, SemverRange(">=1.0.0 <2.0.0"), held=frozenset({"v1.3.0"})) == "1.1.0"
    assert select(["1.2.0-rc.1", "1.1.0"], SemverRange(">=1.1.0"), prereleases=True) == "1.2.0-rc.1"
    assert select(tags, SemverRange("^2")) == "2.0.0"
    assert select(tags, SemverRange("<1.0.0 || >=3.0.0")) is None


def test_kstatus_rules() -> None:
    base = {"kind": "Deployment", "metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2}}
    assert object_status({**base, "status": {"observedGeneration": 1}})[0] == "InProgress"
    assert object_status({**base, "status": {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2,
                                             "availableReplicas": 2}})[0] == "Current"
    failed = {**base, "status": {"observedGeneration": 2, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}
    assert object_status(failed)[0] == "Failed"
    assert object_status({"kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}})[0] == "Failed"
    assert object_status({"kind": "ConfigMap", "metadata": {"name": "c"}})[0] == "Current"
