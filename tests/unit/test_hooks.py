"""ferry.hooks: Helm v4.3.2's hook parsing, order and deletion decisions, written fresh from its source (the
cases follow pkg/action/hooks_test.go and kind_sorter_test.go in spirit; each would fail on a wrong rule), and the
pure rules of running them (ferry.hooks' runs_for and hook_state; activities.cluster.hooks' prepare_hook,
confine_hooks and hook_conflict, kept there because they build on ferry.plan, a layer above ferry.hooks)."""

from __future__ import annotations

from typing import Any

import pytest

from activities.cluster.hooks import confine_hooks, hook_conflict, hook_id, prepare_hook
from ferry.errors import ErrorType
from ferry.hooks import (
    BEFORE_HOOK_CREATION,
    FAILED,
    HELM_INSTALL_ORDER,
    HOOK_EVENT_LABEL,
    HOOK_FAILED,
    HOOK_OF_LABEL,
    HOOK_SUCCEEDED,
    RUNNING,
    SUCCEEDED,
    TEST,
    Hook,
    HookRefused,
    deletes_before_creation,
    deletions,
    hook_state,
    hook_weight,
    kind_rank,
    ordered,
    parse_hook,
    runs_for,
)
from ferry.plan import ENVIRONMENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, Refused


def obj(
    name: str,
    kind: str = "Job",
    events: str = "pre-install",
    weight: str | None = None,
    delete: str | None = None,
    **annotations: Any,
) -> dict[str, Any]:
    notes: dict[str, Any] = {"helm.sh/hook": events, **annotations}
    if weight is not None:
        notes["helm.sh/hook-weight"] = weight
    if delete is not None:
        notes["helm.sh/hook-delete-policy"] = delete
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "annotations": notes}}


def hook(
    name: str,
    kind: str = "Job",
    events: str = "pre-install",
    weight: str | None = None,
    delete: str | None = None,
    path: str = "shop/templates/hooks.yaml",
) -> Hook:
    parsed = parse_hook(obj(name, kind, events, weight, delete), path)
    assert parsed is not None
    return parsed


def test_events_are_split_trimmed_and_lower_cased() -> None:
    h = hook("a", events=" Pre-Install ,POST-UPGRADE")
    assert h.events == ("pre-install", "post-upgrade")
    assert (h.name, h.kind, h.path) == ("a", "Job", "shop/templates/hooks.yaml")


@pytest.mark.parametrize("events", ["crd-install", "pre-install,crd-install", "", "pre-install,", "preinstall"])
def test_one_unknown_event_drops_the_object(events: str) -> None:
    assert parse_hook(obj("a", events=events), "p") is None


def test_test_success_is_an_alias_of_test_and_marks_a_test() -> None:
    assert hook("t", kind="Pod", events="test-success").events == ("test",)
    assert hook("t", kind="Pod", events="test").is_test
    assert not hook("j").is_test


@pytest.mark.parametrize(
    ("raw", "weight"),
    [
        ("5", 5),
        ("-5", -5),
        ("+7", 7),
        ("007", 7),
        (" 5", 0),
        ("5 ", 0),
        ("1.5", 0),
        ("1_0", 0),
        ("ten", 0),
        ("", 0),
        (None, 0),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), 0),
        (str(-(2**63)), -(2**63)),
    ],
)
def test_weight_is_strconv_atoi_or_zero(raw: str | None, weight: int) -> None:
    assert hook_weight(raw) == weight


def test_delete_policies_are_split_trimmed_lower_cased_and_default_to_before_hook_creation() -> None:
    assert hook("a", delete=" Hook-Succeeded, hook-failed").delete_policies == (HOOK_SUCCEEDED, HOOK_FAILED)
    assert hook("a").delete_policies == ()
    assert hook("a").effective_delete_policies == (BEFORE_HOOK_CREATION,)
    # NB: naming any policy replaces the default: this hook is not deleted before it is created again
    assert hook("a", delete=HOOK_SUCCEEDED).effective_delete_policies == (HOOK_SUCCEEDED,)
    assert not deletes_before_creation(hook("a", delete=HOOK_SUCCEEDED))
    assert deletes_before_creation(hook("a"))


def test_an_annotation_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(HookRefused, match="helm.sh/hook-weight is int"):
        parse_hook(obj("a", **{"helm.sh/hook-weight": 5}), "p")


def test_install_order_is_helms() -> None:
    assert len(HELM_INSTALL_ORDER) == 38
    assert HELM_INSTALL_ORDER[:3] == ("PriorityClass", "Namespace", "NetworkPolicy")
    assert (
        HELM_INSTALL_ORDER.index("ServiceAccount")
        < HELM_INSTALL_ORDER.index("Secret")
        < HELM_INSTALL_ORDER.index("ConfigMap")
        < HELM_INSTALL_ORDER.index("CustomResourceDefinition")
        < HELM_INSTALL_ORDER.index("Service")
        < HELM_INSTALL_ORDER.index("Pod")
        < HELM_INSTALL_ORDER.index("Job")
    )
    assert HELM_INSTALL_ORDER[-1] == "ValidatingWebhookConfiguration"
    assert kind_rank("Namespace") < kind_rank("Job") < kind_rank("AAA-unknown") < kind_rank("Widget")


def names(hooks: list[Hook]) -> list[str]:
    return [f"{h.kind}/{h.name}" for h in hooks]


def test_weight_comes_before_kind() -> None:
    # NB: the documented "weight, kind, name" would put the ServiceAccount first: Helm sorts by weight first
    hooks = [hook("sa", "ServiceAccount", weight="10"), hook("job", "Job", weight="-1")]
    assert names(ordered(hooks, "pre-install")) == ["Job/job", "ServiceAccount/sa"]


def test_name_comes_before_kind_at_equal_weight() -> None:
    # NB: a kind-then-name order would run the ServiceAccount first; Helm's stable sort by (weight, name) does not
    hooks = [hook("a-job", "Job"), hook("b-sa", "ServiceAccount")]
    assert names(ordered(hooks, "pre-install")) == ["Job/a-job", "ServiceAccount/b-sa"]


def test_kind_breaks_ties_of_equal_weight_and_name() -> None:
    hooks = [hook("same", "Job"), hook("same", "ConfigMap"), hook("same", "Widget"), hook("same", "ServiceAccount")]
    assert names(ordered(hooks, "pre-install")) == ["ServiceAccount/same", "ConfigMap/same", "Job/same", "Widget/same"]


def test_unknown_kinds_go_last_alphabetically() -> None:
    hooks = [hook("x", "Zebra"), hook("x", "Apple"), hook("x", "Pod")]
    assert names(ordered(hooks, "pre-install")) == ["Pod/x", "Apple/x", "Zebra/x"]


def test_full_ties_keep_template_path_order_then_file_order() -> None:
    # the same kind, weight and name in two template files: the file sorted first by path runs first
    late = hook("same", path="shop/templates/z.yaml")
    early = hook("same", path="shop/templates/a.yaml")
    assert [h.path for h in ordered([late, early], "pre-install")] == ["shop/templates/a.yaml", "shop/templates/z.yaml"]
    first, second = hook("same", delete="hook-failed"), hook("same", delete="hook-succeeded")
    assert ordered([first, second], "pre-install") == [first, second]


def test_only_the_events_hooks_run_and_negative_weights_first() -> None:
    hooks = [
        hook("post", events="post-install"),
        hook("both", events="pre-install,post-install", weight="2"),
        hook("early", weight="-10"),
        hook("upgrade", events="pre-upgrade"),
    ]
    assert names(ordered(hooks, "pre-install")) == ["Job/early", "Job/both"]
    assert names(ordered(hooks, "post-install")) == ["Job/post", "Job/both"]
    assert ordered(hooks, "pre-rollback") == []


def test_a_hook_naming_an_event_twice_runs_twice_as_in_helm() -> None:
    assert len(ordered([hook("dup", events="pre-install,pre-install")], "pre-install")) == 2


def test_all_succeeded_deletes_hook_succeeded_in_reverse_order() -> None:
    a, b, c = hook("a", delete="hook-succeeded"), hook("b"), hook("c", delete="hook-succeeded,hook-failed")
    assert deletions([a, b, c]) == [c, a]


def test_a_failure_deletes_the_failed_by_hook_failed_and_the_earlier_by_hook_succeeded_in_order() -> None:
    a, b = hook("a", delete="hook-succeeded"), hook("b", delete="hook-succeeded")
    failed = hook("f", delete="hook-failed")
    assert deletions([a, b], failed) == [failed, a, b]
    kept = hook("f", delete="hook-succeeded")
    assert deletions([a], kept) == [a]


def test_a_crd_hook_is_never_deleted() -> None:
    crd = hook("widgets.example.com", "CustomResourceDefinition", delete="hook-succeeded,hook-failed")
    assert deletions([crd]) == []
    assert deletions([], crd) == []
    assert not deletes_before_creation(hook("widgets.example.com", "CustomResourceDefinition"))


# ---------------------------------------------------------------------------------- running hooks
def test_a_release_never_runs_a_test_hook() -> None:
    hooks = [hook("t", "Pod", events="test"), hook("both", events="pre-install,test-success"), hook("pre")]
    assert names(runs_for(hooks, "pre-install")) == ["Job/pre"]
    assert runs_for(hooks, TEST) == []
    assert names(runs_for([hook("b", weight="1"), hook("a", weight="1")], "pre-install")) == ["Job/a", "Job/b"]


def job(*conditions: tuple[str, str], **cond: str) -> dict[str, Any]:
    return {"kind": "Job", "status": {"conditions": [{"type": t, "status": s, **cond} for t, s in conditions]}}


def test_a_job_is_judged_by_its_complete_or_failed_condition_as_helms_reader() -> None:
    assert hook_state(job(("SuccessCriteriaMet", "True"), ("Complete", "True"))) == (SUCCEEDED, "condition Complete")
    failed = job(("FailureTarget", "True"), ("Failed", "True"), reason="BackoffLimitExceeded", message="limit")
    assert hook_state(failed) == (FAILED, "BackoffLimitExceeded: limit")
    # a condition that is not True, or no status at all, is still running
    assert hook_state(job(("Complete", "False"), ("Failed", "Unknown")))[0] == RUNNING
    assert hook_state({"kind": "Job"}) == (RUNNING, "Job in progress")


def test_a_pod_is_judged_by_its_phase_and_any_other_kind_is_ready_at_once() -> None:
    assert hook_state({"kind": "Pod", "status": {"phase": "Succeeded"}}) == (SUCCEEDED, "phase Succeeded")
    assert hook_state({"kind": "Pod", "status": {"phase": "Failed", "reason": "Evicted"}}) == (
        FAILED,
        "phase Failed: Evicted",
    )
    assert hook_state({"kind": "Pod", "status": {"phase": "Running"}})[0] == RUNNING
    assert hook_state({"kind": "Pod"}) == (RUNNING, "Pod pending")
    assert hook_state({"kind": "ConfigMap"}) == (SUCCEEDED, "ready at once")
    assert hook_state({"kind": "Deployment", "status": {"conditions": []}})[0] == SUCCEEDED


def test_a_prepared_hook_has_the_hook_labels_and_never_the_environment_label() -> None:
    h = hook("m")
    h.object["metadata"]["labels"] = {ENVIRONMENT_LABEL: "someone-else", "app": "shop"}
    h.object["metadata"]["resourceVersion"] = "12"
    h.object["status"] = {"succeeded": 1}
    out = prepare_hook(h, "shop-prod", "pre-install", "prod", namespaced=True)
    assert out["metadata"]["labels"] == {
        "app": "shop",
        MANAGED_BY_LABEL: MANAGED_BY,
        HOOK_OF_LABEL: "shop-prod",
        HOOK_EVENT_LABEL: "pre-install",
    }
    assert out["metadata"]["namespace"] == "prod" and "status" not in out and "resourceVersion" not in out["metadata"]
    assert h.object["metadata"]["labels"][ENVIRONMENT_LABEL] == "someone-else"  # the render is not changed
    role = hook("r", "ClusterRole")
    role.object["metadata"]["namespace"] = "prod"
    assert "namespace" not in prepare_hook(role, "shop-prod", "pre-install", "prod", namespaced=False)["metadata"]
    assert hook_id(out, "pre-install") == "Job/prod/m pre-install"


def test_hooks_outside_the_bounds_are_refused_naming_each() -> None:
    inside = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "prod"}}
    away = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "kube-system"}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}
    confine_hooks("e", "pre-install", [inside], ["prod"], [])
    confine_hooks("e", "pre-install", [inside, role], ["prod"], ["ClusterRole"])
    with pytest.raises(Refused) as refused:
        confine_hooks("e", "pre-install", [inside, away, role], ["prod"], [])
    assert refused.value.type == ErrorType.OUT_OF_BOUNDS
    assert str(refused.value).startswith("2 pre-install hook(s) outside environment e's bounds; no pre-install hook")
    assert "ConfigMap/kube-system/b" in str(refused.value) and "ClusterRole/r" in str(refused.value)


def test_only_the_environments_own_hook_may_be_replaced() -> None:
    def labelled(**labels: str) -> dict[str, Any]:
        return {"metadata": {"labels": labels}}

    assert hook_conflict(None, "e") == ""
    # an unlabelled object (an operator's) is never taken over to be deleted and re-created
    assert (
        hook_conflict({"metadata": {}}, "e")
        == "it exists and is not a hook of this environment (delete it, or rename the hook)"
    )
    assert hook_conflict(labelled(**{HOOK_OF_LABEL: "e"}), "e") == ""
    assert hook_conflict(labelled(**{HOOK_OF_LABEL: "f"}), "e") == "it is a hook of environment f"
    assert hook_conflict(labelled(**{ENVIRONMENT_LABEL: "e"}), "e") == (
        "it is a release object of environment e, not a hook"
    )
