"""The pure reconcile logic: preparation, diff against defaulted live objects, order, inventory maths."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ferry.errors import ErrorType
from ferry.fieldpaths import leaf_paths
from ferry.health import object_status, snapshot
from ferry.plan import (
    ENVIRONMENT_LABEL,
    FIELD_MANAGER,
    PRUNE_ANNOTATION,
    ObjectId,
    Refused,
    apply_order,
    check_unique,
    confine,
    confirm_update,
    delete_order,
    inventory_data,
    inventory_entries,
    inventory_ids,
    kinds_to_list,
    plan,
    plan_object,
    prepare,
    stale,
)
from ferry.versions import SemverRange, select


def test_prepare_sets_namespace_labels_and_folds_string_data() -> None:
    secret = prepare(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}},
        "staging",
        "apps",
        namespaced=True,
    )
    assert secret["metadata"]["namespace"] == "apps" and secret["metadata"]["labels"][ENVIRONMENT_LABEL] == "staging"
    assert secret["data"] == {"a": "Yg=="} and "stringData" not in secret
    ns = prepare(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}},
        "e",
        "d",
        namespaced=False,
    )
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
    desired = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "a"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}
            }
        },
    }
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "a", "uid": "u"},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        }
                    ],
                    "restartPolicy": "Always",
                }
            },
        },
        "status": {"replicas": 3},
    }
    assert plan_object(desired, live).action == "update"  # ferry owns none of it yet: adopt it
    _owned_by_ferry(live, desired)
    assert plan_object(desired, live).action == "unchanged"
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"  # type: ignore[index]
    change = plan_object(desired, live)
    assert change.action == "update" and change.fields == [".spec.template.spec.containers[name=app].image"]
    assert plan_object(desired, None).action == "create"


def _deployment(resources: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels or {}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1", "resources": resources}]}}},
    }


def test_quantities_compare_by_amount() -> None:
    # What a real API server stores for `cpu: 0.5` and `1000m`: the same amounts, so no change and no request.
    desired = _deployment({"limits": {"cpu": 0.5, "memory": "1Gi"}, "requests": {"cpu": "1000m"}})
    live = _owned_by_ferry(_deployment({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "1"}}), desired)
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
    objs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}},
    ]
    assert [o["kind"] for o in apply_order(objs)] == [
        "CustomResourceDefinition",
        "Namespace",
        "ConfigMap",
        "Deployment",
    ]
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
    assert (
        object_status(
            {
                **base,
                "status": {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
            }
        )[0]
        == "Current"
    )
    failed = {
        **base,
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    assert object_status(failed)[0] == "Failed"
    assert (
        object_status(
            {
                "kind": "Job",
                "metadata": {"name": "j"},
                "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
            }
        )[0]
        == "Failed"
    )
    assert object_status({"kind": "ConfigMap", "metadata": {"name": "c"}})[0] == "Current"


# ------------------------------------------------------------------------------- the plan as a whole
def _cm(name: str, namespace: str = "apps", **data: str) -> dict[str, Any]:
    return prepare(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data or {"k": "v"},
        },
        "staging",
        namespace,
        namespaced=True,
    )


def _live(obj: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`obj` as the server keeps it after ferry applied it, with `overrides` on top (someone's later edit)."""
    live = _owned_by_ferry({**copy.deepcopy(obj), **overrides}, obj)
    live["metadata"]["uid"] = "u-" + obj["metadata"]["name"]
    return live


def _key(obj: dict[str, Any]) -> str:
    return ObjectId.of(obj).key()


def test_the_plan_says_create_update_unchanged_and_what_is_stale() -> None:
    new, same, edited = _cm("new"), _cm("same"), _cm("edited", k="v2")
    old_inside, old_kept, old_outside, old_gone = _cm("old"), _cm("keep-me"), _cm("theirs", "other"), _cm("gone")
    old_kept["metadata"]["annotations"] = {PRUNE_ANNOTATION: "Disabled"}
    live = {_key(o): _live(o) for o in (same, old_inside, old_kept, old_outside)}
    live[_key(edited)] = _live(_cm("edited", k="v1"))
    inventory = {_key(o): "v1" for o in (same, edited, old_inside, old_kept, old_outside, old_gone)}
    planned = plan([new, same, edited], live, inventory, prune=True, namespaces=["apps"], cluster_kinds=[])
    assert [(str(c.id), c.action) for c in planned.changes] == [
        ("ConfigMap/apps/new", "create"),
        ("ConfigMap/apps/same", "unchanged"),
        ("ConfigMap/apps/edited", "update"),
    ]
    assert planned.changes[2].fields == [".data.k"] and planned.unchanged == 1
    assert [str(i) for i in planned.stale] == [
        "ConfigMap/apps/gone",
        "ConfigMap/apps/keep-me",
        "ConfigMap/apps/old",
        "ConfigMap/other/theirs",
    ]
    # only what is still live is pruned; the annotated one and the one outside the bounds are skipped
    assert {str(c.id): c.action for c in planned.prune} == {
        "ConfigMap/apps/old": "delete",
        "ConfigMap/apps/keep-me": "skip",
        "ConfigMap/other/theirs": "skip",
    }
    assert [str(c.id) for c in planned.prune] == [str(i) for i in delete_order(c.id for c in planned.prune)]
    assert planned.inventory() == {_key(new): "v1", _key(same): "v1", _key(edited): "v1"}
    assert planned.live_objects(only_unchanged=True) == [live[_key(same)]]
    assert [e.model_dump() for e in planned.entries()] == [
        {"object": "ConfigMap/apps/new", "action": "create", "fields": []},
        {"object": "ConfigMap/apps/edited", "action": "update", "fields": [".data.k"]},
        *({"object": str(i), "action": "delete", "fields": []} for i in planned.stale),
    ]
    assert plan([new], live, inventory, prune=False, namespaces=["apps"], cluster_kinds=[]).stale == []


def test_the_servers_dry_run_confirms_an_update_in_the_plan() -> None:
    desired = _cm("c", k="0.5")
    live = _live(desired, data={"k": "500m"})  # the local diff sees "0.5" against "500m"
    planned = plan([desired], {_key(desired): live}, {}, prune=True, namespaces=["apps"], cluster_kinds=[])
    assert [c.action for c in planned.changes] == ["update"] and len(planned.writes()) == 1
    planned.confirm(0, live)  # the server's dry run answers that the apply would leave it as it is
    assert [c.action for c in planned.changes] == ["unchanged"] and planned.writes() == []


def test_apply_stages_put_definitions_first_and_defer_what_needs_them() -> None:
    def obj(api_version: str, kind: str, name: str, namespace: str = "", **extra: Any) -> dict[str, Any]:
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}

    rbac = "rbac.authorization.k8s.io/v1"
    crd = obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "caches.example.com")
    cache = obj("example.com/v1", "Cache", "c", "apps")
    namespace = obj("v1", "Namespace", "fresh")
    in_fresh = obj("v1", "ConfigMap", "x", "fresh")
    in_apps = obj("v1", "ConfigMap", "y", "apps")
    role = obj(rbac, "Role", "r", "apps")
    binding = obj(rbac, "RoleBinding", "b", "apps", roleRef={"kind": "Role", "name": "r"})
    old_binding = obj(rbac, "RoleBinding", "old", "apps", roleRef={"kind": "Role", "name": "existing"})
    deployment = obj("apps/v1", "Deployment", "d", "apps")
    desired = [deployment, binding, old_binding, cache, in_apps, in_fresh, role, namespace, crd]
    planned = plan(
        desired,
        {},
        {},
        prune=True,
        namespaces=["apps", "fresh"],
        cluster_kinds=[],
        unserved={("example.com/v1", "Cache")},
    )
    definitions, rest = planned.stages()
    assert [str(c.id) for _, c in definitions.writes] == [
        "CustomResourceDefinition/caches.example.com",
        "Namespace/fresh",
        "Role/apps/r",
    ]
    assert definitions.deferred == []
    assert [str(c.id) for _, c in rest.writes] == [
        "ConfigMap/apps/y",
        "ConfigMap/fresh/x",
        "RoleBinding/apps/b",
        "RoleBinding/apps/old",
        "Deployment/apps/d",
        "Cache/apps/c",
    ]
    # deferred: its kind is not served yet, its namespace or the Role it binds is created by this very plan
    assert [ObjectId.of(o).name for o in rest.deferred] == ["b", "c", "x"]
    assert not planned.deferred(in_apps) and not planned.deferred(old_binding)


def test_duplicates_are_refused_naming_the_object() -> None:
    check_unique([_cm("a"), _cm("b"), _cm("a", "other")])  # same name, another namespace: two objects
    with pytest.raises(Refused) as err:
        check_unique([_cm("a"), _cm("b"), _cm("a", k="other")])
    assert err.value.type == ErrorType.RENDER_FAILED and str(err.value).endswith(": /ConfigMap/apps/a")


def test_confinement_refuses_the_whole_artifact() -> None:
    assert confine("staging", "apps", [], [], [_cm("a")]) == ["apps"]
    assert confine("staging", "apps", ["apps", "more"], [], [_cm("a"), _cm("b", "more")]) == ["apps", "more"]
    for namespace, namespaces, fragment in [
        ("apps", ["more"], "is not one of its namespaces"),
        ("apps", ["apps", "ferry-system"], "reserved"),
    ]:
        with pytest.raises(Refused) as err:
            confine("staging", namespace, namespaces, [], [])
        assert err.value.type == ErrorType.OUT_OF_BOUNDS and fragment in str(err.value)
    strays = [_cm(f"s{n}", "elsewhere") for n in range(7)]
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}
    with pytest.raises(Refused) as err:
        confine("staging", "apps", [], [], [_cm("a"), *strays, cluster_role])
    assert str(err.value).startswith("8 object(s) outside environment staging's bounds; nothing was applied: ")
    assert str(err.value).endswith("; and 3 more") and "ConfigMap/elsewhere/s0" in str(err.value)
    assert confine("staging", "apps", [], ["ClusterRole"], [cluster_role]) == ["apps"]


def test_inventory_keys_round_trip() -> None:
    objects = [
        _cm("a"),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}},
        {"apiVersion": "example.com/v1beta1", "kind": "Cache", "metadata": {"name": "c", "namespace": "x"}},
    ]
    entries = {_key(o): o["apiVersion"] for o in objects}
    data = inventory_data(entries, "sha256:" + "0" * 64, "1.0.0")
    assert data["digest"] == "sha256:" + "0" * 64 and data["version"] == "1.0.0"
    assert inventory_data(dict(reversed(entries.items())), "sha256:" + "0" * 64, "1.0.0") == data  # byte-stable
    assert inventory_entries(data) == entries and inventory_entries(None) == {}
    assert sorted(inventory_ids(inventory_entries(data)), key=str) == sorted((ObjectId.of(o) for o in objects), key=str)
    assert kinds_to_list([_cm("a")], {_key(objects[2]): "example.com/v1beta1"}) == [
        ("example.com/v1beta1", "Cache"),
        ("v1", "ConfigMap"),
    ]

    # a hand-edited inventory: malformed entries are dropped (never listed, never pruned), the rest kept
    rbac = "rbac.authorization.k8s.io/v1"
    tampered = {
        "entries": json.dumps(
            [
                {"id": "nokey", "v": "v1"},
                {"id": _key(objects[0])},
                ["x"],
                {"id": 7, "v": "v1"},
                {"id": _key(objects[1]), "v": rbac},
            ]
        )
    }
    assert inventory_entries(tampered) == {_key(objects[1]): rbac}


def test_a_snapshot_is_as_healthy_as_its_least_healthy_object() -> None:
    def deployment(name: str, ready: int, **status: Any) -> dict[str, Any]:
        return {
            "kind": "Deployment",
            "metadata": {"name": name, "generation": 1},
            "spec": {"replicas": 1},
            "status": {
                "observedGeneration": 1,
                "updatedReplicas": ready,
                "readyReplicas": ready,
                "availableReplicas": ready,
                **status,
            },
        }

    stuck = deployment(
        "stuck", 0, conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    )
    healthy = snapshot([deployment("a", 1), {"kind": "ConfigMap", "metadata": {"name": "c"}}], "sha256:d")
    assert (healthy.status, healthy.reason, healthy.digest) == ("Healthy", "all objects current", "sha256:d")
    waiting = snapshot([deployment("a", 1), deployment("b", 0)], "sha256:d")
    assert waiting.status == "Progressing" and waiting.reason == "Deployment/b: updatedReplicas 0/1"
    failed = snapshot([deployment("b", 0), stuck], "sha256:d")
    assert failed.status == "Failed" and failed.reason.startswith("Deployment/stuck: ProgressDeadlineExceeded")
    assert len(snapshot([deployment(f"d{n:03}" * 10, 0) for n in range(50)], "").reason) == 1000
    assert snapshot([], "sha256:d").status == "Healthy"


def _app_deployment(name: str) -> dict[str, Any]:
    return prepare(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"replicas": 1},
        },
        "staging",
        "apps",
        namespaced=True,
    )


def _rolled_out(obj: dict[str, Any], ready: bool = True) -> dict[str, Any]:
    live = _live(obj)
    live["metadata"]["generation"] = 1
    live["status"] = {
        "observedGeneration": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1 if ready else 0,
        "availableReplicas": 1 if ready else 0,
    }
    return live


def test_a_writing_reconcile_waits_for_health_only_when_a_workload_rolls_out() -> None:
    """wait_healthy reads only the inventory's workloads: written configuration beside healthy unchanged workloads
    is Healthy at once; a written workload, or a stale one whose prune failed (kept in the inventory), is Progressing
    (wait_healthy judges it); an unchanged workload still rolling out keeps the verdict at Progressing too."""
    config, app = _cm("config", k="v2"), _app_deployment("app")
    live = {_key(config): _live(_cm("config", k="v1")), _key(app): _rolled_out(app)}
    inventory = {_key(config): "v1", _key(app): "apps/v1"}
    planned = plan([config, app], live, inventory, prune=True, namespaces=["apps"], cluster_kinds=[])
    assert [c.action for c in planned.changes] == ["update", "unchanged"]
    health = planned.rollout_health(planned.inventory(), "1 updated", "sha256:d")
    assert (health.status, health.digest) == ("Healthy", "sha256:d")

    rolling = plan(
        [config, app],
        {**live, _key(app): _rolled_out(app, ready=False)},
        inventory,
        prune=True,
        namespaces=["apps"],
        cluster_kinds=[],
    )
    assert rolling.rollout_health(rolling.inventory(), "1 updated", "sha256:d").status == "Progressing"

    changed_app = copy.deepcopy(app)
    changed_app["spec"]["replicas"] = 3
    written = plan([config, changed_app], live, inventory, prune=True, namespaces=["apps"], cluster_kinds=[])
    assert [c.action for c in written.changes] == ["update", "update"]
    assert written.rollout_health(written.inventory(), "2 updated", "sha256:d").status == "Progressing"

    old = _app_deployment("old")
    live[_key(old)], inventory[_key(old)] = _rolled_out(old), "apps/v1"
    pruning = plan([config, app], live, inventory, prune=True, namespaces=["apps"], cluster_kinds=[])
    assert pruning.rollout_health(pruning.inventory(), "", "sha256:d").status == "Healthy"  # pruned: gone
    kept = {**pruning.inventory(), _key(old): "apps/v1"}  # its delete failed: still in the inventory
    assert pruning.rollout_health(kept, "", "sha256:d").status == "Progressing"
