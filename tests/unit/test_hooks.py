"""ferry.hooks: Helm v4.3.2's hook parsing, order and deletion decisions, written fresh from its source (the
cases follow pkg/action/hooks_test.go and kind_sorter_test.go in spirit; each would fail on a wrong rule)."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.hooks import (
    BEFORE_HOOK_CREATION,
    HELM_INSTALL_ORDER,
    HOOK_FAILED,
    HOOK_SUCCEEDED,
    Hook,
    HookRefused,
    deletes_before_creation,
    deletions,
    hook_weight,
    kind_rank,
    ordered,
    parse_hook,
)


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
