import copy
from typing import Any

import pytest

from ferry.plan import ENVIRONMENT_LABEL
from ferry.rollout_objects import (
    CANARY,
    MAX_RATIO,
    PRIMARY,
    REPLICAS_ANNOTATION,
    ROLE_LABEL,
    canary_managed,
    canary_replicas,
    declared_replicas,
    owned_by_rollout,
    primary_deployment,
    ratio_weight,
    release_service,
    route,
    route_weight,
    services,
    templates_match,
)
from ferry.rollout_spec import GatewayRef


def deployment(replicas: int | None = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "shop"}},
        "template": {
            "metadata": {"labels": {"app": "shop"}, "creationTimestamp": None},
            "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"}, "spec": spec}


def live(replicas: int = 3) -> dict[str, Any]:
    obj = canary_managed(deployment(replicas), "shop")
    obj["metadata"].update(
        namespace="prod-ns", uid="u-1", resourceVersion="7", managedFields=[{"manager": "ferry"}], generation=2
    )
    obj["metadata"]["labels"] = {ENVIRONMENT_LABEL: "prod"}
    obj["status"] = {"readyReplicas": 0}
    return obj


def test_canary_managed_drops_replicas_records_them_and_labels_the_pods() -> None:
    original = deployment(4)
    out = canary_managed(original, "shop")
    assert "replicas" not in out["spec"] and out["metadata"]["annotations"][REPLICAS_ANNOTATION] == "4"
    assert out["spec"]["template"]["metadata"]["labels"] == {"app": "shop", ROLE_LABEL: CANARY}
    assert original["spec"]["replicas"] == 4 and ROLE_LABEL not in original["spec"]["template"]["metadata"]["labels"]
    assert canary_managed(deployment(None), "shop")["metadata"]["annotations"][REPLICAS_ANNOTATION] == "1"


def test_canary_managed_leaves_other_objects_alone() -> None:
    other = deployment()
    assert canary_managed(other, "cart") is other
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"}}
    assert canary_managed(svc, "shop") is svc


def test_primary_is_the_canarys_spec_with_the_primary_role_and_no_server_noise() -> None:
    primary = primary_deployment(live(), 3)
    meta = primary["metadata"]
    assert meta["name"] == "shop-primary" and meta["namespace"] == "prod-ns"
    assert meta["labels"][ENVIRONMENT_LABEL] == "prod" and meta["labels"][ROLE_LABEL] == PRIMARY
    assert owned_by_rollout(primary, "shop") and not owned_by_rollout(primary, "cart")
    assert set(meta) == {"name", "namespace", "labels", "annotations"} and "status" not in primary
    assert primary["spec"]["replicas"] == 3
    assert primary["spec"]["selector"]["matchLabels"] == {"app": "shop", ROLE_LABEL: PRIMARY}
    assert primary["spec"]["template"]["metadata"] == {"labels": {"app": "shop", ROLE_LABEL: PRIMARY}}
    assert templates_match(live(), primary) and not templates_match(live(), None)
    changed = live()
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "shop:2"
    assert not templates_match(changed, primary)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["spec"].pop("template"), "no pod template"),
        (lambda d: d["spec"]["selector"].pop("matchLabels"), "no selector matchLabels"),
        (
            lambda d: d["spec"]["selector"].update(matchExpressions=[{"key": ROLE_LABEL, "operator": "Exists"}]),
            "cannot extend",
        ),
        (lambda d: d["spec"]["selector"]["matchLabels"].update({ROLE_LABEL: "x"}), "cannot extend"),
        (lambda d: d["metadata"]["labels"].clear(), "not an environment's workload"),
        (lambda d: d["metadata"].pop("namespace"), "namespaced apps/v1 Deployment"),
        (lambda d: d.update(kind="StatefulSet"), "namespaced apps/v1 Deployment"),
    ],
)
def test_primary_refuses_what_it_cannot_copy(edit: Any, message: str) -> None:
    obj = live()
    edit(obj)
    with pytest.raises(ValueError, match=message):
        primary_deployment(obj, 1)


def test_primary_keeps_other_match_expressions_and_bounds_replicas() -> None:
    obj = live()
    obj["spec"]["selector"]["matchExpressions"] = [{"key": "tier", "operator": "In", "values": ["web"]}]
    assert primary_deployment(obj, 1)["spec"]["selector"]["matchExpressions"] == [
        {"key": "tier", "operator": "In", "values": ["web"]}
    ]
    with pytest.raises(ValueError, match="outside"):
        primary_deployment(obj, -1)


def test_declared_replicas_is_a_bounded_count() -> None:
    assert declared_replicas(live(5)) == 5
    bad = live()
    bad["metadata"]["annotations"][REPLICAS_ANNOTATION] = "1e9"
    with pytest.raises(ValueError, match="not a count"):
        declared_replicas(bad)


def release_svc(selector: dict[str, str]) -> dict[str, Any]:
    ports = [{"name": "web", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30001}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop"},
        "spec": {"selector": selector, "ports": ports},
    }


def test_services_select_each_role_with_the_release_services_ports() -> None:
    found = release_service([release_svc({"app": "other"}), release_svc({"app": "shop"})], live())
    assert found is not None and found["spec"]["selector"] == {"app": "shop"}
    primary, canary = services(live(), found, None)
    assert primary["metadata"]["name"] == "shop-primary" and canary["metadata"]["name"] == "shop-canary"
    assert primary["spec"]["selector"] == {"app": "shop", ROLE_LABEL: PRIMARY}
    assert canary["spec"]["selector"] == {"app": "shop", ROLE_LABEL: CANARY}
    assert canary["spec"]["ports"] == [{"name": "web", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert services(live(), None, 9000)[0]["spec"]["ports"][0]["port"] == 9000
    with pytest.raises(ValueError, match="names no port"):
        services(live(), None, None)
    assert release_service([release_svc({"app": "other"})], live()) is None
    assert release_service([primary], live()) is None  # the rollout's own Services are not the release's


def test_route_splits_between_primary_and_canary() -> None:
    gateway = GatewayRef(name="public", namespace="infra", section_name="https")
    obj = route("shop", "prod-ns", gateway, 10, ["shop.example.com"], 80)
    assert obj["apiVersion"] == "gateway.networking.k8s.io/v1" and obj["kind"] == "HTTPRoute"
    assert obj["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "infra",
            "sectionName": "https",
        }
    ]
    assert obj["spec"]["hostnames"] == ["shop.example.com"]
    refs = obj["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["port"], r["weight"]) for r in refs] == [("shop-primary", 80, 90), ("shop-canary", 80, 10)]
    assert route_weight(obj, "shop") == 10 and route_weight(None, "shop") is None
    assert "hostnames" not in route("shop", "prod-ns", gateway, 0, [], 80)["spec"]


@pytest.mark.parametrize("weight", [-1, 101, True])
def test_a_weight_outside_0_to_100_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match="outside 0..100"):
        route("shop", "ns", GatewayRef(name="g", namespace="n"), weight, [], 80)
    with pytest.raises(ValueError, match="outside 0..100"):
        canary_replicas(3, weight)


@pytest.mark.parametrize(
    ("primary", "weight", "expected"),
    [
        (3, 0, 0),
        (3, 10, 1),
        (3, 50, 3),
        (4, 20, 1),
        (4, 25, 2),
        (9, 10, 1),
        (10, 10, 2),
        (3, 90, 27),
        (3, 99, 3 * MAX_RATIO),
        (3, 100, 3 * MAX_RATIO),
        (0, 50, 1),
        (0, 100, 1),
    ],
)
def test_ratio_mode_runs_the_fewest_canaries_whose_share_reaches_the_weight(
    primary: int, weight: int, expected: int
) -> None:
    got = canary_replicas(primary, weight)
    assert got == expected
    if 0 < weight < 100 and got < MAX_RATIO * primary:
        assert ratio_weight(primary, got) >= weight or 100 * got / (primary + got) >= weight
        assert got == 1 or 100 * (got - 1) / (primary + got - 1) < weight  # one fewer would not reach it


def test_a_copy_is_not_shared_with_the_live_object() -> None:
    obj = live()
    snapshot = copy.deepcopy(obj)
    primary_deployment(obj, 2)["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    services(obj, None, 80)
    assert obj == snapshot


def test_the_strategys_traffic_options_are_validated() -> None:
    from pydantic import ValidationError

    from ferry.model import PEOPLE
    from ferry.rollout_spec import Strategy

    def parse(**traffic: object) -> Strategy:
        data = {"canary": {"workload": "shop", "steps": [{"set-weight": 10}], **traffic}}
        return Strategy.model_validate(data, context={PEOPLE: True})

    ok = parse(gateway={"name": "public", "namespace": "infra", "section-name": "https"}, hostnames=["*.shop.io"])
    assert ok.canary is not None and ok.canary.gateway is not None and ok.canary.gateway.section_name == "https"
    assert parse(port=8080).canary.port == 8080  # type: ignore[union-attr]
    gateway = {"name": "public", "namespace": "edge"}
    bg = Strategy.model_validate(
        {"blue-green": {"workload": "shop", "port": 80, "gateway": gateway}}, context={PEOPLE: True}
    )
    assert bg.blue_green is not None and bg.blue_green.port == 80
    for bad, message in [
        ({"port": 0}, "greater than or equal"),
        ({"hostnames": ["shop.io"]}, "need a gateway"),
        ({"gateway": {"name": "g", "namespace": "n"}, "hostnames": ["Bad_Host"]}, "not a DNS name"),
        ({"gateway": {"name": "g", "namespace": "n"}, "hostnames": [f"h{i}.io" for i in range(17)]}, "at most 16"),
        ({"gateway": {"name": "g", "namespace": "n", "sectionName": "x"}}, "unknown field"),
    ]:
        with pytest.raises(ValidationError, match=message):
            parse(**bad)


def test_a_canary_target_is_validated_like_the_strategy() -> None:
    from pydantic import ValidationError

    from ferry.rollout_cluster import CanaryTarget

    gateway = GatewayRef(name="public", namespace="infra")
    ok = CanaryTarget(environment="prod", namespace="shop", workload="shop", gateway=gateway, hostnames=["s.io"])
    assert ok.gateway == gateway and ok.port is None
    for bad in (
        {"workload": "Shop_1"},
        {"hostnames": ["s.io"]},  # without a gateway
        {"gateway": gateway, "hostnames": ["a b"]},
        {"port": 70000},
        {"namespace": "x" * 64},
    ):
        with pytest.raises(ValidationError):
            CanaryTarget.model_validate({"environment": "prod", "namespace": "shop", "workload": "shop", **bad})
