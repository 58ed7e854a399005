"""Protected spec changes: the field-level diff every SpecUpdated records, and which fields need an approval."""

from __future__ import annotations

from ferry.environment import EnvironmentSpec, protected_changes, spec_diff, spec_digest

BASE = {"name": "production", "repository": "127.0.0.1:5000/team/app", "version": "1.0.0",
        "approval": {"required": True, "approvers": ["alice", "bob"]}}


def spec(**changes: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({**BASE, **changes})


def test_switching_approval_off_is_a_protected_change() -> None:
    diff = spec_diff(spec(), spec(approval={"required": False, "approvers": ["alice", "bob"]}))
    assert diff == ["approval.required: true -> false"]
    assert protected_changes(diff) == diff


def test_interval_is_not_protected_but_recorded() -> None:
    diff = spec_diff(spec(), spec(interval="5m"))
    assert diff == ['interval: "1m" -> "5m"']
    assert protected_changes(diff) == []


def test_each_protected_field() -> None:
    for field, value in (("repository", "127.0.0.1:5000/team/other"), ("path", "deploy"), ("namespace", "prod"),
                         ("version", "2.0.0"), ("prune", False), ("allow-empty", True),
                         ("cluster", "prod-eu"), ("namespaces", ["default", "jobs"]),
                         ("cluster-kinds", ["CustomResourceDefinition"]), ("service-account", "deployer")):
        diff = spec_diff(spec(), spec(**{field: value}))
        assert diff and protected_changes(diff) == diff, field


def test_changing_approvers_is_protected_and_names_the_entry() -> None:
    diff = spec_diff(spec(), spec(approval={"required": True, "approvers": ["alice", "mallory"]}))
    assert diff == ['approval.approvers[1].name: "bob" -> "mallory"']
    assert protected_changes(diff) == diff


def test_diff_is_bounded() -> None:
    many = {"required": True, "approvers": [f"a{i}" for i in range(32)]}
    other = spec(approval=many, interval="5m", timeout="9m", path="deploy", namespace="prod", prune=False,
                 **{"health-timeout": "7m", "allow-empty": True, "auto-rollback": False, "version": "2.0.0"})
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
    for key in ("namespaces", "cluster-kinds", "service-account"):
        del old[key]
    del old["cluster"]["name"]
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert spec_digest(spec()) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    for field, value in (("namespaces", ["default", "jobs"]), ("cluster-kinds", ["Namespace"]),
                         ("service-account", "deployer"), ("cluster", "prod-eu")):
        assert spec_digest(spec(**{field: value})) != spec_digest(spec()), field
