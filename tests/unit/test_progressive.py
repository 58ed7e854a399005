"""The rollout's pure records and the spec's strategy rules (issue 29)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from ferry.analysis import Failure
from ferry.progressive import PROMOTE_GATE, RolloutOutcome, SteerRecord, decision_lines, gate_id
from ferry.rollout_spec import Strategy
from ferry.spec import EnvironmentSpec, protected_changes, spec_diff, spec_digest

CANARY = {
    "canary": {
        "workload": "web",
        "steps": [
            {"set-weight": 10},
            {"analysis": {"interval": "30s", "count": 4, "checks": [{"success-rate": {"min": 99}}]}},
            {"set-weight": 50},
            {"pause": "10m"},
            {"approval": {}},
        ],
    }
}


def _spec(**extra: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"name": "prod", "repository": "r.example/app", "version": "1.0.0", **extra})


def test_an_approval_step_needs_the_environments_approvers() -> None:
    with pytest.raises(ValidationError, match="approval step needs approval.approvers"):
        _spec(strategy=CANARY)
    spec = _spec(strategy=CANARY, approval={"approvers": ["sre-bob"]})
    assert spec.strategy is not None and spec.strategy.workload == "web"


def test_strategy_is_a_protected_field_and_leaves_older_spec_digests_alone() -> None:
    before = _spec(approval={"approvers": ["sre-bob"]})
    after = _spec(approval={"approvers": ["sre-bob"]}, strategy=CANARY)
    changes = protected_changes(spec_diff(before, after))
    assert changes and all(line.startswith("strategy") for line in changes)
    data = before.model_dump(mode="json", by_alias=True)
    assert "strategy" in data  # the field exists, and yet the digest of a spec without it is what it was:
    assert spec_digest(before) == spec_digest(EnvironmentSpec.model_validate({**data, "strategy": None}))
    assert spec_digest(before) != spec_digest(after)


def test_the_walk_in_words_and_its_longest_duration() -> None:
    strategy = Strategy.model_validate(CANARY)
    assert strategy.kind_words() == "canary 10% -> 50% -> 100%, 1 analysis, 1 approval, 1 pause"
    ready, approval = timedelta(minutes=5), timedelta(hours=24)
    # readiness: first + 2 weights + promotion; the analysis 4 x 30s; the pause; the gate
    assert strategy.longest(ready, approval) == ready * 4 + timedelta(minutes=2) + timedelta(minutes=10) + approval


def test_a_gate_names_the_rollout_and_its_step() -> None:
    assert gate_id("prod", 4) == "rollout/prod#4"
    assert gate_id("prod", PROMOTE_GATE) == "rollout/prod#promote"


def test_decisions_say_verified_or_claimed_and_refusals_stay_out_of_the_outcome() -> None:
    claimed = SteerRecord(action="pause", by="alice", at="t")
    signed = SteerRecord(action="approve", by="bob", at="t", verified="SHA256:abc")
    refused = SteerRecord(action="approve", by="carol", at="t", refused="carol published this release")
    assert claimed.words() == "pause by alice (claimed)"
    assert signed.words() == "approve by bob (verified SHA256:abc)"
    assert decision_lines([claimed, signed, refused]) == [claimed.words(), signed.words()]


def test_an_outcome_is_bounded() -> None:
    failure = Failure(interval=0, metric="success-rate", value=50.0, threshold=">= 99")
    with pytest.raises(ValidationError):
        RolloutOutcome(
            environment="prod",
            version="1",
            digest="sha256:" + "0" * 64,
            run_id="r",
            outcome="failed",
            failures=[failure] * 17,
        )
    with pytest.raises(ValidationError):
        RolloutOutcome.model_validate(
            {"environment": "prod", "version": "1", "digest": "d", "run_id": "r", "outcome": "promoted-by-me"}
        )


def test_blue_green_previews_on_mirrored_requests_then_switches_and_promotes() -> None:
    from ferry.rollout_objects import route
    from ferry.rollout_spec import GatewayRef, plan

    gateway = {"name": "public", "namespace": "edge"}
    analysed = {"interval": "10s", "count": 3, "checks": [{"success-rate": {"min": 99}}]}
    strategy = Strategy.model_validate(
        {"blue-green": {"workload": "web", "gateway": gateway, "preview-analysis": analysed, "approval": True}}
    )
    assert [(s.kind, s.weight) for s in plan(strategy)] == [
        ("preview", 0),
        ("analysis", 0),
        ("approval", 0),
        ("switch", 100),
        ("promote", 100),
    ]
    assert strategy.kind_words() == "blue-green: preview on mirrored requests, 1 analysis, 1 approval, switch"
    preview = route("web", "shop", GatewayRef(name="public", namespace="edge"), 0, [], 80, mirror=True)
    rule = preview["spec"]["rules"][0]
    assert [b["weight"] for b in rule["backendRefs"]] == [100, 0]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 80}},
        }
    ]
    assert (
        "filters"
        not in route("web", "shop", GatewayRef(name="public", namespace="edge"), 100, [], 80)["spec"]["rules"][0]
    )
