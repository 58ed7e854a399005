"""Protected spec changes: the field-level diff every SpecUpdated records, and which fields need an approval."""

from __future__ import annotations

from ferry.spec import EnvironmentSpec, protected_changes, spec_diff, spec_digest

BASE = {
    "name": "production",
    "repository": "127.0.0.1:5000/team/app",
    "version": "1.0.0",
    "approval": {"required": True, "approvers": ["alice", "bob"]},
}


def spec(**changes: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({**BASE, **changes})


def test_switching_approval_off_is_a_protected_change() -> None:
    diff = spec_diff(spec(), spec(approval={"required": False, "approvers": ["alice", "bob"]}))
    assert diff == ["approval.required: true -> false"]
    assert protected_changes(diff) == diff


def test_the_reconcile_timeout_is_not_protected_but_recorded() -> None:
    diff = spec_diff(spec(), spec(timeout="20m"))
    assert diff == ['timeout: "5m" -> "20m"']
    assert protected_changes(diff) == []


def test_what_weakens_the_safety_net_is_protected() -> None:
    """Step 15: turning the automatic rollback off, a longer health timeout or a slower drift revert in production
    needed no approval before (and runs from before still decide so: safety_net=False)."""
    for field, value in (("auto-rollback", False), ("health-timeout", "6h"), ("interval", "24h")):
        diff = spec_diff(spec(), spec(**{field: value}))
        assert diff and protected_changes(diff) == diff, field
        assert protected_changes(diff, safety_net=False) == [], field


def test_each_protected_field() -> None:
    for field, value in (
        ("repository", "127.0.0.1:5000/team/other"),
        ("path", "deploy"),
        ("namespace", "prod"),
        ("version", "2.0.0"),
        ("prune", False),
        ("allow-empty", True),
        ("cluster", "prod-eu"),
        ("namespaces", ["default", "jobs"]),
        ("cluster-kinds", ["CustomResourceDefinition"]),
        ("service-account", "deployer"),
    ):
        diff = spec_diff(spec(), spec(**{field: value}))
        assert diff and protected_changes(diff) == diff, field


def test_changing_approvers_is_protected_and_names_the_entry() -> None:
    diff = spec_diff(spec(), spec(approval={"required": True, "approvers": ["alice", "mallory"]}))
    assert diff == ['approval.approvers[1].name: "bob" -> "mallory"']
    assert protected_changes(diff) == diff


def test_diff_is_bounded() -> None:
    many = {"required": True, "approvers": [f"a{i}" for i in range(32)]}
    other = spec(
        approval=many,
        interval="5m",
        timeout="9m",
        path="deploy",
        namespace="prod",
        prune=False,
        **{"health-timeout": "7m", "allow-empty": True, "auto-rollback": False, "version": "2.0.0"},
    )
    diff = spec_diff(spec(), other)
    # 32 approver names + 9 other fields = 41 differences: 40 shown, then a count
    assert len(diff) == 41 and diff[-1] == "... and 1 more"


def test_spec_digest_is_stable_and_content_bound() -> None:
    assert spec_digest(spec()) == spec_digest(spec())
    assert spec_digest(spec()) != spec_digest(spec(interval="5m"))
    assert spec_digest(spec()).startswith("sha256:") and len(spec_digest(spec())) == 71


def test_spec_digest_of_a_spec_without_the_tenancy_fields_is_what_it_was() -> None:
    # the canonical JSON as builds before clusters-by-name computed it: approvals signed then still verify (and
    # tests/replay's spec-approval history replays)
    import hashlib
    import json

    old = spec().model_dump(mode="json", by_alias=True)
    # helm: step 17's, decryption: step 18's, strategy: step 19's, left out while unset
    for key in ("namespaces", "cluster-kinds", "service-account", "helm", "decryption", "strategy"):
        del old[key]
    del old["cluster"]["name"]
    del old["approval"]["max-approval-lifetime"]  # step 15's field, left out while unset
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert spec_digest(spec()) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    for field, value in (
        ("namespaces", ["default", "jobs"]),
        ("cluster-kinds", ["Namespace"]),
        ("service-account", "deployer"),
        ("cluster", "prod-eu"),
        ("approval", {"required": True, "approvers": ["alice"], "max-approval-lifetime": "24h"}),
        ("helm", {"values": {"replicaCount": 3}}),
        ("decryption", {"provider": "sops"}),
        ("strategy", {"canary": {"workload": "web", "steps": [{"set-weight": 10}]}}),
    ):
        assert spec_digest(spec(**{field: value})) != spec_digest(spec()), field
