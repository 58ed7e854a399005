"""The simulated traffic generator's pure rules (ferry/traffic_split.py): splits, carried remainders, bounds."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from ferry import traffic_split as ts


def route(name: str, refs: list[dict[str, Any]], rps: Any = None, ns: str = "shop") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name}
    if rps is not None:
        meta["annotations"] = {ts.RPS_ANNOTATION: rps}
    return {"metadata": meta, "spec": {"rules": [{"backendRefs": refs}]}}


def service(name: str, selector: Any, ns: str = "shop", annotations: Any = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "annotations": annotations or {}},
        "spec": {"selector": selector},
    }


def deployment(name: str, labels: dict[str, str], ready: Any, image: str = "app:1.0", **ann: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name, "annotations": {}},
        "spec": {
            "template": {"metadata": {"labels": labels, "annotations": ann}, "spec": {"containers": [{"image": image}]}}
        },
        "status": {"readyReplicas": ready},
    }


PAIR = [
    service("web-primary", {"app": "web", "role": "primary"}),
    service("web-canary", {"app": "web", "role": "canary"}),
]
DEPLOYS = [
    deployment("web-primary", {"app": "web", "role": "primary"}, 3),
    deployment("web", {"app": "web", "role": "canary"}, 1),
]


def run(
    routes: list[Any], services: list[Any], deploys: list[Any], seconds: int = 1
) -> tuple[dict[Any, int], list[str]]:
    carry: ts.Carry = {}
    warnings: list[str] = []
    totals: dict[Any, int] = {}
    for _ in range(seconds):
        for f in ts.plan(
            routes, services, deploys, carry, lambda reason, detail: warnings.append(f"{reason}: {detail}")
        ):
            for code, n in ((ts.OK_CODE, f.requests - f.errors), (f.error_code, f.errors)):
                if n:
                    key = (f.route, f.service, f.deployment, code)
                    totals[key] = totals.get(key, 0) + n
    return totals, warnings


def test_a_90_10_route_splits_exactly_every_second() -> None:
    r = route("web", [{"name": "web-primary", "weight": 90}, {"name": "web-canary", "weight": 10}])
    totals, warnings = run([r], PAIR, DEPLOYS, seconds=5)
    assert totals == {("web", "web-primary", "web-primary", "200"): 90, ("web", "web-canary", "web", "200"): 10}
    assert not warnings


def test_remainders_are_carried_so_a_third_each_never_drifts() -> None:
    counts, carry = ts.apportion(20, [1, 1, 1], [Fraction(0)] * 3)
    assert counts == [7, 7, 6] and sum(carry) == 0
    carry_map: ts.Carry = {}
    sums = [0, 0, 0]
    for _ in range(30):
        for i, n in enumerate(ts.carried(20, [1, 1, 1], ["a", "b", "c"], carry_map)):
            sums[i] += n
    assert sums == [200, 200, 200]


def test_weight_zero_gets_nothing_and_all_zero_sends_nothing() -> None:
    assert ts.apportion(20, [0, 5], [Fraction(0), Fraction(0)])[0] == [0, 20]
    assert ts.apportion(20, [0, 0], [Fraction(0), Fraction(0)])[0] == [0, 0]


def test_weight_defaults_to_one_and_a_bad_weight_gets_nothing_with_a_warning() -> None:
    r = route(
        "web", [{"name": "web-primary"}, {"name": "web-canary", "weight": 2_000_000}, {"name": "x", "weight": "9"}]
    )
    totals, warnings = run([r], PAIR, DEPLOYS)
    assert totals == {("web", "web-primary", "web-primary", "200"): 20}
    assert len(warnings) == 2 and all(w.startswith("weight:") for w in warnings)


def test_a_service_splits_by_ready_replicas_and_none_ready_is_503() -> None:
    svc = [service("web", {"app": "web"})]
    totals, _ = run([route("web", [{"name": "web"}], rps="40")], svc, DEPLOYS)
    assert totals == {("web", "web", "web-primary", "200"): 30, ("web", "web", "web", "200"): 10}
    none_ready = [deployment("web", {"app": "web"}, 0)]
    assert run([route("web", [{"name": "web"}])], svc, none_ready)[0] == {("web", "web", "", "503"): 20}
    assert run([route("web", [{"name": "gone"}])], svc, DEPLOYS)[0] == {("web", "gone", "", "500"): 20}


def test_replica_ratio_mode_for_an_annotated_service_no_route_references() -> None:
    svc = [service("web", {"app": "web"}, annotations={ts.RPS_ANNOTATION: "8"})]
    totals, _ = run([], svc, DEPLOYS)
    assert totals == {("", "web", "web-primary", "200"): 6, ("", "web", "web", "200"): 2}
    # referenced by a route: the route's traffic only
    assert run([route("r", [{"name": "web"}], rps="4")], svc, DEPLOYS)[0] == {
        ("r", "web", "web-primary", "200"): 3,
        ("r", "web", "web", "200"): 1,
    }


def test_broken_tag_answers_half_errors_and_the_annotation_overrides() -> None:
    svc = [service("web", {"app": "web"})]
    broken = [deployment("web", {"app": "web"}, 1, image="ghcr.io/acme/app:1.2.0-broken")]
    assert run([route("r", [{"name": "web"}])], svc, broken, seconds=3)[0] == {
        ("r", "web", "web", "200"): 30,
        ("r", "web", "web", "500"): 30,
    }
    five = [deployment("web", {"app": "web"}, 1, image="app:1-broken", **{ts.ERROR_RATE_ANNOTATION: "5"})]
    assert run([route("r", [{"name": "web"}])], svc, five, seconds=10)[0] == {
        ("r", "web", "web", "200"): 190,
        ("r", "web", "web", "500"): 10,
    }


def test_error_fractions_are_carried() -> None:
    carry: ts.Carry = {}
    assert [ts.errors_of(3, Fraction(50), "k", carry) for _ in range(4)] == [1, 2, 1, 2]


def test_bounds_and_bad_values_are_refused_with_a_reason() -> None:
    assert ts.bounded("12.5", 0, 100, "x") == Fraction(25, 2)
    for bad in ("nan", "Infinity", "-1", "1001", True, None, [1], "1e400", "x" * 40):
        with pytest.raises(ts.Bad):
            ts.bounded(bad, 0, 1000, "rps", integer=True)
    with pytest.raises(ts.Bad, match="whole number"):
        ts.bounded("2.5", 0, 1000, "rps", integer=True)


def test_bad_annotations_and_hostile_objects_are_ignored_and_warned() -> None:
    svc = [service("web", {"app": "web"}), "not a dict", {"metadata": {"name": 3}}]
    deploys = [
        deployment("web", {"app": "web"}, "three", **{ts.ERROR_RATE_ANNOTATION: "lots", ts.LATENCY_ANNOTATION: "-5"}),
        deployment("web-2", {"app": "web"}, 1, **{ts.ERROR_RATE_ANNOTATION: "150"}),
        {"spec": None},
    ]
    totals, warnings = run([route("r", [{"name": "web"}], rps="a lot"), 7], svc, deploys)
    assert totals == {("r", "web", "web-2", "200"): 20}  # default rps; "three" ready counts as none
    reasons = sorted(w.split(":")[0] for w in warnings)
    assert reasons == ["annotation"] * 4 + ["object"] * 5


def test_latency_spread_median_and_p99() -> None:
    counts, total = ts.bucket_counts(100, 200.0, 0.5)
    assert total == pytest.approx(100 * 0.2)
    by_le = dict(zip(ts.BUCKETS, counts, strict=True))
    assert by_le[0.1] == 0 and by_le[0.25] == 100  # all within 160..240 ms
    assert ts.bucket_counts(10, 50.0, 0.5)[0][ts.BUCKETS.index(0.05)] == 5  # half at or below the median
    assert ts.bucket_counts(0, 50.0, 0.3) == ([0] * len(ts.BUCKETS), 0.0)
    assert ts.bucket_counts(4, 0.0, 0.3)[0] == [4] * len(ts.BUCKETS)


def test_a_request_mirror_copies_every_request_of_its_rule_to_the_preview() -> None:
    mirrored = route("web", [{"name": "web-primary", "weight": 100}, {"name": "web-canary", "weight": 0}], rps=10)
    mirrored["spec"]["rules"][0]["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}}},
        {"type": "RequestHeaderModifier"},  # other filters send nothing
    ]
    totals, warnings = run([mirrored], PAIR, DEPLOYS, seconds=3)
    assert totals == {("web", "web-primary", "web-primary", "200"): 30, ("web", "web-canary", "web", "200"): 30}
    assert warnings == [], "each backendRef is read once: no doubled warnings"
    plain = route("web", [{"name": "web-primary", "weight": 100}, {"name": "web-canary", "weight": 0}], rps=10)
    assert run([plain], PAIR, DEPLOYS)[0] == {("web", "web-primary", "web-primary", "200"): 10}
