"""What counts as drift (ferry/fieldpaths.py): `differences` compares what a manifest specifies with what the API
server holds, with Kubernetes' list-merge keys, server defaults and quantity canonicalisation."""

from __future__ import annotations

from typing import Any

from ferry.fieldpaths import MISSING, differences, dotted, leaf_paths, managed_paths, quantity, value_at


def diff(desired: Any, live: Any) -> list[str]:
    return [dotted(p) for p in differences(desired, live)]


def deployment(image: str = "nginx:1.25", **container: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image, **container}]}}}}


def test_the_same_object_has_no_differences() -> None:
    assert diff(deployment(), deployment()) == []


def test_fields_only_the_server_has_are_not_differences() -> None:
    live = deployment(imagePullPolicy="IfNotPresent")
    live["spec"]["replicas"] = 3  # e.g. owned by an HPA
    assert diff(deployment(), live) == []


def test_a_changed_field_is_reported_by_its_path_and_merge_key() -> None:
    assert diff(deployment("nginx:1.26"), deployment()) == [".spec.template.spec.containers[name=app].image"]


def test_a_missing_field_and_a_missing_list_item() -> None:
    desired = deployment()
    desired["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    desired["spec"]["paused"] = False
    assert diff(desired, deployment()) == [".spec.template.spec.containers[name=sidecar]", ".spec.paused"]


def test_merge_keyed_lists_compare_by_key_not_position() -> None:
    desired = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    live = {"spec": {"containers": [{"name": "b", "image": "y"}, {"name": "a", "image": "x"}]}}
    assert diff(desired, live) == []


def test_a_port_without_protocol_matches_the_servers_tcp_default() -> None:
    desired = {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    live = {"spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    assert diff(desired, live) == []
    udp = {"spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "UDP"}]}}
    assert diff(desired, udp) == [".spec.ports[port=80,protocol=TCP]"]


def test_atomic_lists_compare_whole_and_in_order() -> None:
    assert diff({"args": ["a", "b"]}, {"args": ["b", "a"]}) == [".args"]
    assert diff({"args": ["a"]}, {"args": ["a", "b"]}) == [".args"]
    assert diff({"args": ["a", "b"]}, {"args": ["a", "b"]}) == []


def test_finalizers_are_a_set_that_may_hold_more() -> None:
    assert diff({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b", "a"]}}) == []
    assert diff({"metadata": {"finalizers": ["c"]}}, {"metadata": {"finalizers": ["a"]}}) == [".metadata.finalizers"]


def test_scalars_compare_by_their_text_but_a_bool_is_not_a_string() -> None:
    assert diff({"port": "80"}, {"port": 80}) == []
    assert diff({"enabled": True}, {"enabled": "true"}) == [".enabled"]
    assert diff({"enabled": True}, {"enabled": True}) == []


def test_quantities_compare_by_amount_only_in_quantity_maps() -> None:
    desired = deployment(resources={"requests": {"cpu": "0.5", "memory": "1Gi"}})
    live = deployment(resources={"requests": {"cpu": "500m", "memory": "1024Mi"}})
    assert diff(desired, live) == []
    assert diff(deployment(resources={"limits": {"cpu": "1"}}), deployment(resources={"limits": {"cpu": "999m"}})) == [
        ".spec.template.spec.containers[name=app].resources.limits.cpu"
    ]
    assert diff({"labels": {"size": "0.5"}}, {"labels": {"size": "500m"}}) == [".labels.size"]


def test_quantity_parsing() -> None:
    assert quantity("1Ki") == 1024
    assert quantity("1e3") == 1000
    assert quantity("100m") == quantity(0.1)
    assert quantity("lots") is None
    assert quantity(True) is None


def test_managed_paths_and_value_at_follow_managed_fields() -> None:
    live = deployment(resources={"limits": {"cpu": "1"}})
    live["metadata"] = {
        "managedFields": [
            {
                "manager": "ferry",
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {
                        "f:template": {"f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}}}}}
                    }
                },
            },
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]
    }
    owned = managed_paths(live, "ferry")
    assert owned == {("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:image")}
    assert value_at(live, next(iter(owned))) == "nginx:1.25"
    assert value_at(live, ("f:spec", "f:replicas")) is MISSING
    assert managed_paths(live, "someone-else") is None


def test_leaf_paths_are_what_an_apply_claims() -> None:
    paths = set(leaf_paths(deployment()))
    assert paths == {
        ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:name"),
        ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:image"),
    }
