"""`judge`: the approval rules as pure code — segregation of duties, signatures and what a statement binds."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ferry.approvals import DecisionContext, Statement, judge, sign_statement
from ferry.spec import ApprovalPolicy

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CTX = DecisionContext(
    environment="production",
    version="1.1.0",
    digest=D1,
    publisher="ci-main",
    promotion="promote/production/1.1.0",
    run="run-1",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    out = {}
    tmp = tmp_path_factory.mktemp("keys")
    for name in ("alice", "bob", "ci-main"):
        path = tmp / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
        out[name] = (path.read_bytes(), Path(f"{path}.pub").read_text().strip())
    return out


def signed_policy(keys: dict[str, tuple[bytes, str]], *names: str) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate(
        {"required": True, "approvers": [{"name": n, "key": keys[n][1]} for n in names]}
    )


def payload(
    keys: dict[str, tuple[bytes, str]], approver: str, signer: str | None = None, **fields: str
) -> dict[str, str]:
    statement = Statement.model_validate(
        {
            "environment": CTX.environment,
            "version": CTX.version,
            "digest": CTX.digest,
            "promotion": CTX.promotion,
            "run": CTX.run,
            "decision": "approve",
            "approver": approver,
            "comment": "",
            "expires": (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **fields,
        }
    )
    proof = sign_statement(statement, keys[signer or approver][0])
    return {"statement": proof.statement, "signature": proof.signature}


def test_unsigned_policy_trusts_listed_names_but_never_the_publisher() -> None:
    policy = ApprovalPolicy.model_validate({"required": True, "approvers": ["alice", "ci-main"]})
    assert not policy.is_signed
    ok = judge(policy, CTX, {"approver": "alice"}, "approve", NOW)
    assert ok.refusal == "" and ok.approver == "alice" and not ok.verified
    assert "not an approver" in judge(policy, CTX, {"approver": "mallory"}, "approve", NOW).refusal
    assert "published this release" in judge(policy, CTX, {"approver": "ci-main"}, "approve", NOW).refusal
    assert judge(policy, CTX, {"approver": "ci-main"}, "reject", NOW).refusal == ""  # the publisher may reject
    assert "malformed approve" in judge(policy, CTX, "just a string", "approve", NOW).refusal
    assert "names digest" in judge(policy, CTX, {"approver": "alice", "digest": D2}, "approve", NOW).refusal


def test_oversized_fields_are_refused_not_stored() -> None:
    policy = ApprovalPolicy.model_validate({"required": True, "approvers": ["alice"]})
    verdict = judge(policy, CTX, {"approver": "alice", "comment": "x" * 1_500_000}, "approve", NOW)
    assert "malformed approve: comment" in verdict.refusal and len(verdict.refusal) < 300


def test_signed_policy_verifies_and_binds(keys: dict[str, tuple[bytes, str]]) -> None:
    policy = signed_policy(keys, "alice", "bob")
    assert policy.is_signed
    ok = judge(policy, CTX, payload(keys, "alice"), "approve", NOW)
    assert ok.refusal == "" and ok.approver == "alice" and ok.verified and ok.fingerprint.startswith("SHA256:")
    refusals = {
        "typed name": judge(policy, CTX, {"approver": "alice"}, "approve", NOW).refusal,
        "other digest": judge(policy, CTX, payload(keys, "alice", digest=D2), "approve", NOW).refusal,
        "other promotion": judge(policy, CTX, payload(keys, "alice", promotion="promote/x/1"), "approve", NOW).refusal,
        "other run": judge(policy, CTX, payload(keys, "alice", run="run-2"), "approve", NOW).refusal,
        "other environment": judge(policy, CTX, payload(keys, "alice", environment="staging"), "approve", NOW).refusal,
        "other decision": judge(policy, CTX, payload(keys, "alice", decision="reject"), "approve", NOW).refusal,
        "expired": judge(policy, CTX, payload(keys, "alice"), "approve", NOW + timedelta(hours=2)).refusal,
        "someone else's key": judge(policy, CTX, payload(keys, "alice", signer="bob"), "approve", NOW).refusal,
        "unlisted key": judge(policy, CTX, payload(keys, "ci-main"), "approve", NOW).refusal,
        "payload name differs": judge(
            policy, CTX, {**payload(keys, "alice"), "approver": "bob"}, "approve", NOW
        ).refusal,
    }
    assert "requires signed approvals" in refusals["typed name"]
    assert f"statement is for digest {D2}" in refusals["other digest"]
    assert "statement is for promotion" in refusals["other promotion"]
    assert "statement is for run run-2" in refusals["other run"]
    assert "statement is for environment staging" in refusals["other environment"]
    assert "statement is for decision reject" in refusals["other decision"]
    assert "expired" in refusals["expired"]
    assert "payload names bob" in refusals["payload name differs"]
    assert "is listed for bob, but the statement names alice" in refusals["someone else's key"]
    assert "is not listed" in refusals["unlisted key"]
    for case, refusal in refusals.items():
        assert refusal, case


def test_the_publishers_own_key_is_refused(keys: dict[str, tuple[bytes, str]]) -> None:
    policy = signed_policy(keys, "alice", "ci-main")
    verdict = judge(policy, CTX, payload(keys, "ci-main"), "approve", NOW)
    assert "ci-main" in verdict.refusal and not verdict.verified


def test_segregation_of_duties_ignores_how_a_name_is_capitalised(keys: dict[str, tuple[bytes, str]]) -> None:
    """Step 15: `Sre-Bob` published, `sre-bob` approved — the same person. Runs from before (hardened=False)
    decide as they did."""
    policy = ApprovalPolicy.model_validate({"required": True, "approvers": ["alice", "ci-main"]})
    ctx = CTX.model_copy(update={"publisher": "CI-Main"})
    assert "published this release" in judge(policy, ctx, {"approver": "ci-main"}, "approve", NOW).refusal
    assert judge(policy, ctx, {"approver": "ci-main"}, "approve", NOW, hardened=False).refusal == ""
    listed = judge(policy, CTX, {"approver": "ALICE"}, "approve", NOW)
    assert listed.refusal == "" and listed.approver == "alice"  # recorded under the listed name
    signed = signed_policy(keys, "alice", "ci-main")
    assert "published this release" in judge(signed, ctx, payload(keys, "ci-main"), "approve", NOW).refusal


def test_a_statement_that_expires_past_the_lifetime_is_refused(keys: dict[str, tuple[bytes, str]]) -> None:
    policy = signed_policy(keys, "alice", "bob")
    far = payload(keys, "alice", expires="2099-01-01T00:00:00Z")
    refusal = judge(policy, CTX, far, "approve", NOW).refusal
    assert "2099-01-01T00:00:00Z" in refusal and "168h" in refusal and "max-approval-lifetime" in refusal
    assert judge(policy, CTX, far, "approve", NOW, hardened=False).refusal == ""  # as runs from before judged it
    week = payload(keys, "alice", expires=(NOW + timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert judge(policy, CTX, week, "approve", NOW).refusal == ""
    short = ApprovalPolicy.model_validate({**policy.model_dump(by_alias=True), "max-approval-lifetime": "2h"})
    assert "2h" in judge(short, CTX, week, "approve", NOW).refusal
