"""Holds as pure rules (ferry/holds.py): what is held, who may add or lift a hold, and when a range resumes."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.environment import Pin, PinRequest
from ferry.holds import lifts_hold, newer_than_holds, pin_on_range, takes_hold, tracks, with_hold, without_hold
from ferry.reconcile import VersionRef
from ferry.spec import EnvironmentSpec

DIGEST = "sha256:" + "1" * 64
RANGE = EnvironmentSpec.model_validate({"name": "staging", "repository": "registry.local/shop", "semver": ">=1.0.0"})
PINNED = EnvironmentSpec.model_validate({"name": "staging", "repository": "registry.local/shop", "version": "1.0.0"})


def _request(**kw: Any) -> PinRequest:
    return PinRequest.model_validate({"version": "1.0.0", "digest": DIGEST, "by": "alice", "kind": "rollback", **kw})


def _never() -> bool:
    raise AssertionError("asked where the rule does not reach it")


def test_a_hold_is_added_once_and_bounded() -> None:
    holds = ["1.1.0"]
    assert with_hold(holds, "1.1.0", limit=5) is holds
    assert with_hold(holds, "1.2.0", limit=5) == ["1.1.0", "1.2.0"]
    assert with_hold(holds, "1.2.0", limit=1) == ["1.2.0"]
    assert without_hold(["1.1.0", "1.2.0"], "1.1.0") == ["1.2.0"] and without_hold([], "1.1.0") == []
    assert holds == ["1.1.0"]


def test_a_pin_holds_only_the_version_it_rolls_back_from() -> None:
    applied = VersionRef(version="1.2.0", digest=DIGEST)
    assert takes_hold([], _request(hold="1.2.0"), applied, of_applied=lambda: True)
    assert not takes_hold([], _request(hold="9.9.9"), applied, of_applied=lambda: True)
    assert not takes_hold([], _request(hold="1.2.0"), None, of_applied=lambda: True)
    assert takes_hold([], _request(hold="9.9.9"), applied, of_applied=lambda: False)  # runs from before the rule


def test_no_hold_asked_for_or_held_already_asks_nothing() -> None:
    applied = VersionRef(version="1.2.0", digest=DIGEST)
    assert not takes_hold([], _request(), applied, of_applied=_never)
    assert not takes_hold(["1.2.0"], _request(hold="1.2.0"), applied, of_applied=_never)


def test_only_a_promotion_of_a_held_version_lifts_its_hold() -> None:
    assert lifts_hold(_request(kind="promotion"), ["1.0.0"])
    assert not lifts_hold(_request(kind="promotion"), ["1.1.0"])
    assert not lifts_hold(_request(kind="rollback"), ["1.0.0"])
    assert not lifts_hold(_request(kind="manual"), ["1.0.0"])


@pytest.mark.parametrize(
    ("spec", "kind", "on_range"),
    [
        (RANGE, "rollback", True),
        (RANGE, "auto-rollback", True),
        (RANGE, "promotion", False),
        (RANGE, "manual", False),
        (PINNED, "rollback", False),
        (PINNED, "auto-rollback", False),
    ],
)
def test_a_rollback_pin_on_a_range_keeps_the_range_resolving(spec: EnvironmentSpec, kind: str, on_range: bool) -> None:
    pin = Pin(version="1.0.0", digest=DIGEST, by="bob", kind=kind)
    assert pin_on_range(spec, pin) is on_range
    assert tracks(spec, pin) is on_range
    assert tracks(spec, None)


def test_a_range_resumes_only_past_every_held_release() -> None:
    assert newer_than_holds("1.3.0", ["1.1.0", "1.2.0"])
    assert not newer_than_holds("1.2.0", ["1.1.0", "1.2.0"])
    assert not newer_than_holds("1.1.5", ["1.1.0", "1.2.0"])
    # an OCI chart's version with build metadata (tag 1.3.0_b1) is a version too
    assert newer_than_holds("1.3.0+b1", ["1.2.0+b7"]) and not newer_than_holds("1.2.0+b1", ["1.2.0"])
    assert newer_than_holds("1.0.0", [])
    assert newer_than_holds("1.0.0", ["not-a-release"])  # a held tag that is not a release holds nothing back
    assert not newer_than_holds("latest", [])  # nor is a candidate that is not a release newer than anything
