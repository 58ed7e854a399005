"""The pin gate and tag binding as pure rules (ferry/pins.py): each reason a pin is refused, the pins taken, how a
tag is bound, and what an environment's status says of a pin to the run waiting for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.approvals import Judgement
from ferry.environment import Applied, EnvironmentState, HealthState, Pin, PinRequest
from ferry.events import Event, EventType
from ferry.pins import (
    approved_by_publisher,
    approvers,
    bind_tag,
    bound_elsewhere,
    consumed,
    gate_reason,
    judge_pin,
    pin_refusal,
    status_verdict,
    tag_moved,
)
from ferry.reconcile import VersionRef
from ferry.spec import EnvironmentSpec

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
NOW = datetime(2026, 12, 7, tzinfo=UTC)
AT = "2026-12-07T00:00:00Z"
RUN = "promote/production/1.1.0@0c7b0a4e-8a0b-4c55-9d0e-2f6b3c1d5e7f"
GATED = {"approval": {"required": True, "approvers": ["alice", "bob"], "signed": False}}


def _spec(**kw: Any) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "production", "repository": "registry.local/team/shop", "version": "1.0.0", **kw}
    )


def _state(**kw: Any) -> EnvironmentState:
    spec = kw.pop("spec", None) or _spec()
    return EnvironmentState(spec=spec, **kw)


def _pin(**kw: Any) -> PinRequest:
    return PinRequest.model_validate(
        {"version": "1.1.0", "digest": D2, "by": "alice", "kind": "promotion", "request_id": RUN, **kw}
    )


def _never() -> bool:
    raise AssertionError("the patch was asked where the rule does not reach it")


def _yes() -> bool:
    return True


# ------------------------------------------------------------------ tags


def test_a_tag_is_bound_once_and_bounded() -> None:
    tags = {"1.0.0": D1}
    assert bind_tag(tags, "1.0.0", D1, limit=10) is tags  # already bound: nothing changes
    assert bind_tag(tags, "1.1.0", D2, limit=10) == {"1.0.0": D1, "1.1.0": D2}
    assert bind_tag(tags, "1.1.0", D2, limit=1) == {"1.1.0": D2}  # the oldest binding goes first
    assert tags == {"1.0.0": D1}  # never changed in place


def test_a_moved_tag_is_refused_with_the_digest_it_was_bound_to() -> None:
    tags = {"1.0.0": D1}
    assert bound_elsewhere(tags, "1.0.0", D1) is None
    assert bound_elsewhere(tags, "2.0.0", D2) is None
    assert bound_elsewhere(tags, "1.0.0", D2) == D1
    assert tag_moved(tags, "1.0.0", D1) == "" and tag_moved(tags, "9.9.9", D3) == ""
    assert tag_moved(tags, "1.0.0", D2) == (
        f"TagMoved: tag 1.0.0 now points to {D2}, but this environment bound it to {D1}; keeping what is applied"
    )


def test_used_approvals_are_bounded() -> None:
    assert consumed(["a", "b"], "c", limit=2) == ["b", "c"]
    assert consumed([], "c", limit=2) == ["c"]


# ------------------------------------------------------------------ the gate, any environment


def test_a_pin_that_names_no_digest_is_refused() -> None:
    assert pin_refusal(_state(), _pin(digest="latest"), [], hardened=_never) == "'latest' is not a digest"


def test_a_pin_resolved_in_another_repository_is_refused() -> None:
    refusal = pin_refusal(_state(), _pin(repository="registry.local/other"), [], hardened=_never)
    assert refusal == ("resolved in registry.local/other, but production deploys from registry.local/team/shop")
    assert pin_refusal(_state(), _pin(repository="registry.local/team/shop"), [], hardened=_never) == ""
    assert pin_refusal(_state(), _pin(repository=""), [], hardened=_never) == ""  # older senders name none


def test_a_pin_of_a_tag_bound_to_another_digest_is_refused() -> None:
    refusal = pin_refusal(_state(tags={"1.1.0": D1}), _pin(), [], hardened=_never)
    assert refusal == f"tag 1.1.0 is bound to {D1} here; {D2} is another artifact (the tag was moved)"


def test_a_relabelled_digest_is_refused_only_under_the_hardened_gate() -> None:
    state = _state(tags={"2.0.0": D2})
    relabelled = _pin(version="0.0.1", kind="rollback")
    assert pin_refusal(state, relabelled, [], hardened=_yes) == (
        f"{D2} is release 2.0.0 here, not 0.0.1: a pin names the release of its digest"
    )
    assert pin_refusal(state, relabelled, [], hardened=lambda: False) == ""
    assert pin_refusal(state, _pin(version="2.0.0"), [], hardened=_never) == ""  # its own release: not asked


def test_an_environment_without_required_approval_takes_a_bare_pin() -> None:
    assert pin_refusal(_state(), _pin(kind="manual", request_id=""), [], hardened=_never) == ""


# ------------------------------------------------------------------ the gate, approval required


def test_a_bare_rollback_pin_goes_only_to_a_known_good_version_never_forward() -> None:
    state = _state(
        spec=_spec(**GATED),
        good_history=[VersionRef(version="1.0.0", digest=D1)],
        last_applied=Applied(version="1.2.0", digest=D3, at=AT),
    )
    back = _pin(version="1.0.0", digest=D1, kind="rollback")
    assert pin_refusal(state, back, [], hardened=_never) == ""
    unknown = pin_refusal(state, _pin(kind="rollback"), [], hardened=_never)
    assert unknown == (
        f"1.1.0 ({D2}) was never applied and healthy in production; without an approval a rollback "
        "may only go to a known-good version"
    )
    ahead = state.model_copy(update={"last_applied": Applied(version="0.9.0", digest=D3, at=AT)})
    assert pin_refusal(ahead, back, [], hardened=_never) == (
        "1.0.0 is newer than the applied 0.9.0: a rollback never goes forward"
    )


def test_a_gated_pin_must_rest_on_an_accepted_approval_used_once() -> None:
    state = _state(spec=_spec(**GATED))
    pin = _pin(approved_by=["alice"])
    verdicts = judge_pin(state, pin, NOW, strict=True)
    assert approvers(verdicts) == ["alice (claimed)"]
    assert pin_refusal(state, pin, verdicts, hardened=_never) == ""
    used = state.model_copy(update={"consumed_approvals": [RUN]})
    assert pin_refusal(used, pin, verdicts, hardened=_never) == f"the approvals of {RUN} were already used"
    assert pin_refusal(state, _pin(), [], hardened=_never) == (
        f"production requires approval and the pin carries no approval of {D2}"
    )


def test_a_rollback_that_carries_approvals_is_judged_like_a_promotion() -> None:
    state = _state(spec=_spec(**GATED))
    pin = _pin(kind="rollback", approved_by=["alice"])
    assert pin_refusal(state, pin, judge_pin(state, pin, NOW, strict=True), hardened=_never) == ""


def test_refused_approvals_say_why() -> None:
    state = _state(spec=_spec(**GATED))
    pin = _pin(approved_by=["mallory", "ci-main"], publisher="ci-main")
    verdicts = judge_pin(state, pin, NOW, strict=True)
    assert approvers(verdicts) == [] and all(v.refusal for v in verdicts)
    refusal = pin_refusal(state, pin, verdicts, hardened=_never)
    assert refusal == gate_reason(state.spec, pin, verdicts) and "mallory" in refusal and "; " in refusal


def test_the_publisher_is_the_verified_one_when_the_environment_verified_it() -> None:
    state = _state(spec=_spec(**GATED), verified={D2: "alice"})
    pin = _pin(approved_by=["alice"], publisher="someone-else")
    verdicts = judge_pin(state, pin, NOW, strict=True)
    assert approvers(verdicts) == [] and "published" in verdicts[0].refusal


def test_verified_approvers_carry_their_fingerprint() -> None:
    verdicts = [
        Judgement(approver="alice", fingerprint="SHA256:abc"),
        Judgement(approver="bob"),
        Judgement(approver="eve", refusal="not an approver"),
    ]
    assert approvers(verdicts) == ["alice (SHA256:abc)", "bob (claimed)"]


def test_a_signed_policy_judges_the_signed_approvals_only() -> None:
    spec = _spec(approval={"required": True, "approvers": [{"name": "alice", "key": _KEY}]})
    state = _state(spec=spec)
    assert spec.approval.is_signed
    assert judge_pin(state, _pin(approved_by=["alice"]), NOW, strict=True) == []  # typed names do not count


_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEJRmRIm8nrFwxmtyIvpuh5mbFk9gUSE1TdSVDMFJhEX alice"


def test_a_pin_approved_by_the_verified_publisher_of_its_digest_is_caught() -> None:
    pin = Pin(version="1.1.0", digest=D2, by="alice", approved_by=["alice (SHA256:abc)", "bob (claimed)"])
    assert approved_by_publisher(pin, D2, "alice") and approved_by_publisher(pin, D2, "bob")
    assert not approved_by_publisher(pin, D2, "ci-main")
    assert not approved_by_publisher(pin, D1, "alice")  # another digest's pin says nothing of this one
    assert not approved_by_publisher(None, D2, "alice")
    assert not approved_by_publisher(pin.model_copy(update={"approved_by": []}), D2, "alice")


# ------------------------------------------------------------------ what the status says of a pin


def _event(type_: EventType, **kw: Any) -> Event:
    return Event(at=AT, type=type_, message=kw.pop("message", str(type_)), **kw)


def test_the_status_says_nothing_until_the_pin_is_acknowledged() -> None:
    other = Pin(version="1.0.0", digest=D1, by="bob", request_id="rollback/x@y")
    assert status_verdict(_state(pin=other), D2, RUN, acknowledged=False) == (None, False)
    verdict, acknowledged = status_verdict(_state(pin=other), D2, RUN, acknowledged=True)
    assert verdict == ("superseded", "a newer pin took over (manual by bob)", False) and acknowledged
    assert status_verdict(_state(), D2, RUN, acknowledged=True)[0] == ("superseded", "the pin was released", False)


def test_a_refusal_in_the_events_answers_at_once() -> None:
    refused = _event(EventType.PIN_REFUSED, request_id=RUN, message="pin of 1.1.0 refused: no")
    assert status_verdict(_state(events=[refused]), D2, RUN, False) == (
        ("refused", "pin of 1.1.0 refused: no", False),
        False,
    )
    failed = _event(EventType.VERIFICATION_FAILED, request_id=RUN, message="unsigned")
    assert status_verdict(_state(events=[failed]), D2, RUN, False)[0] == ("refused", "unsigned", False)


def test_my_pin_applied_is_judged_by_its_health() -> None:
    mine = Pin(version="1.1.0", digest=D2, by="alice", request_id=RUN)
    applied = Applied(version="1.1.0", digest=D2, at=AT)
    waiting = _state(pin=mine, last_applied=applied, health=HealthState(status="Progressing", digest=D2))
    assert status_verdict(waiting, D2, RUN, False) == (None, True)
    healthy = waiting.model_copy(update={"health": HealthState(status="Healthy", digest=D2)})
    assert status_verdict(healthy, D2, RUN, False)[0] == ("succeeded", "applied and healthy", False)
    failed = waiting.model_copy(update={"health": HealthState(status="Failed", reason="crash", digest=D2)})
    assert status_verdict(failed, D2, RUN, False)[0] == ("failed", "crash", False)
    stale = waiting.model_copy(update={"health": HealthState(status="Healthy", digest=D1)})
    assert status_verdict(stale, D2, RUN, False)[0] is None  # the health of another digest says nothing


def test_an_auto_rollback_from_my_digest_is_a_failure_rolled_back() -> None:
    back = Pin(version="1.0.0", digest=D1, by="ferry (auto-rollback)", kind="auto-rollback", reason="1.1.0 failed")
    events = [
        _event(EventType.PINNED, request_id=RUN),
        _event(EventType.AUTO_ROLLBACK, objects={"failed": ["1.1.0", D2]}),
    ]
    assert status_verdict(_state(pin=back, events=events), D2, RUN, False) == (("failed", "1.1.0 failed", True), True)
    assert status_verdict(_state(pin=back, events=events[:1]), D2, RUN, False)[0] == (
        "superseded",
        "a newer pin took over (auto-rollback by ferry (auto-rollback))",
        False,
    )


@pytest.mark.parametrize("kind", ["promotion", "rollback", "manual"])
def test_every_sender_kind_is_gated_alike_without_approval(kind: str) -> None:
    assert pin_refusal(_state(tags={"1.1.0": D1}), _pin(kind=kind), [], hardened=_never).startswith("tag 1.1.0")
