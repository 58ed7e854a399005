"""Known-good history and the rollbacks it allows, as pure rules (ferry/known_good.py)."""

from __future__ import annotations

from typing import Any

from ferry.environment import Applied, EnvironmentState
from ferry.known_good import (
    AUTO_ROLLBACK_BY,
    auto_rollback_pin,
    earlier_known_good,
    is_known_good,
    newer_than_applied,
    requester_refusal,
    rollback_pin_refusal,
    with_known_good,
)
from ferry.reconcile import HealthState, VersionRef
from ferry.spec import EnvironmentSpec

V1, V2, V3 = (VersionRef(version=f"1.{i}.0", digest="sha256:" + str(i) * 64) for i in (1, 2, 3))
AT = "2026-12-07T00:00:00Z"


def _spec(**kw: Any) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "production", "repository": "registry.local/shop", "version": "1.0.0", **kw}
    )


def test_known_good_history_keeps_each_digest_once_newest_last_and_bounded() -> None:
    assert with_known_good([], V1, limit=3) == [V1]
    assert with_known_good([V1, V2], V1, limit=3) == [V2, V1]
    assert with_known_good([V1, V2, V3], VersionRef(version="1.4.0", digest="sha256:" + "4" * 64), limit=3)[0] == V2
    assert is_known_good([V1, V2], V2.digest) and not is_known_good([V1], V2.digest)


def test_a_rollback_without_a_target_goes_to_the_newest_other_known_good() -> None:
    assert earlier_known_good([V1, V2, V3], V3) == V2
    assert earlier_known_good([V1, V2], V3) == V2
    assert earlier_known_good([V1, V2], None) == V2
    assert earlier_known_good([V3], V3) is None and earlier_known_good([], None) is None


def test_a_rollback_never_goes_forward() -> None:
    assert str(newer_than_applied("1.3.0", V2)) == "1.2.0"
    assert newer_than_applied("1.1.0", V2) is None and newer_than_applied("1.2.0", V2) is None
    assert str(newer_than_applied("1.3.0+b1", V2)) == "1.2.0"  # an OCI chart's version with build metadata
    assert newer_than_applied("1.3.0", None) is None
    assert newer_than_applied("latest", V2) is None  # not a release: the known-good rule decides


def test_a_bare_rollback_pin_goes_only_to_a_known_good_version() -> None:
    state = EnvironmentState(
        spec=_spec(), good_history=[V1, V2], last_applied=Applied(version=V2.version, digest=V2.digest, at=AT)
    )
    assert rollback_pin_refusal(state, V1.version, V1.digest) == ""
    assert "was never applied and healthy in production" in rollback_pin_refusal(state, V3.version, V3.digest)
    forward = state.model_copy(update={"good_history": [V3]})
    assert rollback_pin_refusal(forward, V3.version, V3.digest) == (
        "1.3.0 is newer than the applied 1.2.0: a rollback never goes forward"
    )


def test_only_an_approver_may_roll_back_when_the_environment_lists_any() -> None:
    gated = _spec(approval={"required": False, "approvers": ["alice"]})
    assert requester_refusal(gated, "production", "alice") == ""
    assert requester_refusal(gated, "production", "mallory") == "mallory is not an approver of production (alice)"
    assert requester_refusal(_spec(), "production", "anyone") == ""


def test_a_failed_release_rolls_back_to_the_last_known_good_when_the_spec_says_so() -> None:
    health = HealthState(status="Failed", reason="crash loop")
    pin = auto_rollback_pin(_spec(**{"auto-rollback": True}), V1, V2, health, AT)
    assert pin is not None and (pin.version, pin.digest, pin.kind, pin.by) == (
        V1.version,
        V1.digest,
        "auto-rollback",
        AUTO_ROLLBACK_BY,
    )
    assert pin.reason == "1.2.0 failed health: crash loop" and pin.at == AT
    assert auto_rollback_pin(_spec(**{"auto-rollback": False}), V1, V2, health, AT) is None
    assert auto_rollback_pin(_spec(**{"auto-rollback": True}), None, V2, health, AT) is None
    assert auto_rollback_pin(_spec(**{"auto-rollback": True}), V2, V2, health, AT) is None
