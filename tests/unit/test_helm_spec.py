"""The `helm:` part of an environment's spec (ferry/helm_spec.py): what people may write, what an OCI chart derives,
what a reconcile is told, and that every chart setting is protected in an approval-required environment."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ferry.helm_spec import MAX_INLINE_VALUES, HelmSource
from ferry.model import PEOPLE
from ferry.spec import EnvironmentSpec, protected_changes, spec_diff

RELEASE = {"name": "production", "repository": "127.0.0.1:5000/team/shop", "version": "1.0.0"}


def typed(**fields: Any) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(fields, context={PEOPLE: True})


def refused(**fields: Any) -> str:
    with pytest.raises(ValidationError) as err:
        typed(**fields)
    return str(err.value)


def test_an_in_release_chart_follows_the_environments_release() -> None:
    spec = typed(**RELEASE, helm={"chart": "charts/shop", "values-files": ["values/prod.yaml"], "values": {"a": 1}})
    assert spec.helm is not None and not spec.helm.is_oci
    source = HelmSource.of(spec.helm, spec.name, spec.path)
    assert source == HelmSource(
        chart="charts/shop", release_name="production", values={"a": 1}, values_files=["values/prod.yaml"]
    )
    # without `chart` the environment's path is the chart; with both, the path's manifests go beside it
    alone = typed(**RELEASE, path="charts/shop", helm={})
    assert alone.helm is not None and HelmSource.of(alone.helm, "p", alone.path).chart == "charts/shop"
    beside = typed(**RELEASE, path="deploy", helm={"chart": "charts/shop", "release-name": "shop"})
    assert beside.helm is not None
    source = HelmSource.of(beside.helm, "p", beside.path)
    assert (source.chart, source.manifests, source.release_name) == ("charts/shop", "deploy", "shop")


def test_lookup_reads_as_the_environments_service_account() -> None:
    spec = typed(**RELEASE, namespace="shop", **{"service-account": "deployer"}, helm={"lookup": True})
    assert spec.helm is not None
    source = HelmSource.of(spec.helm, spec.name, spec.path, spec.namespace, spec.service_account)
    assert source.lookup_as == "system:serviceaccount:shop:deployer"
    off = typed(**RELEASE, namespace="shop", **{"service-account": "deployer"}, helm={})
    assert off.helm is not None and HelmSource.of(off.helm, "p", ".", "shop", "deployer").lookup_as == ""


def test_an_oci_chart_is_the_environments_source() -> None:
    spec = typed(name="prod", helm={"chart": "oci://127.0.0.1:5000/charts/shop", "semver": ">=1.4.0 <2"})
    assert (spec.repository, spec.semver, spec.version) == ("127.0.0.1:5000/charts/shop", ">=1.4.0 <2", None)
    assert spec.helm is not None and HelmSource.of(spec.helm, spec.name, spec.path).chart == ""
    # a persisted state (everything filled in) decodes to the same spec
    assert EnvironmentSpec.model_validate(spec.model_dump(mode="json", by_alias=True)) == spec
    pinned = typed(name="prod", helm={"chart": "oci://127.0.0.1:5000/charts/shop", "version": "1.4.2"})
    assert pinned.version == "1.4.2" and pinned.tracking == "version 1.4.2"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**RELEASE, "helm": {"chart": "../etc"}}, "relative path inside the release"),
        ({**RELEASE, "helm": {"chart": "/abs/chart"}}, "relative path inside the release"),
        ({**RELEASE, "helm": {"chart": "https://charts.example.com/shop"}}, "only oci:// charts"),
        ({**RELEASE, "helm": {"values-files": ["../../secrets.yaml"]}}, "values file"),
        ({**RELEASE, "helm": {"release-name": "Shop_1"}}, "release-name"),
        ({**RELEASE, "helm": {"release-name": "x" * 54}}, "at most 53"),
        ({**RELEASE, "helm": {"values": {"blob": "x" * MAX_INLINE_VALUES}}}, "use a values file"),
        ({**RELEASE, "helm": {"values": ["not", "a", "mapping"]}}, "valid dictionary"),
        ({**RELEASE, "helm": {"version": "1.0.0"}}, "are for oci:// charts"),
        ({**RELEASE, "helm": {"lookup": True}}, "set service-account"),
        ({**RELEASE, "helm": {"chart": "charts/shop", "post-renderer": "x"}}, "post-renderer: unknown field"),
        ({"name": "p", "helm": {"chart": "oci://127.0.0.1:5000/charts/shop"}}, "exactly one of `version`"),
        ({"name": "p", "helm": {"chart": "oci://NOT A HOST/x", "version": "1.0.0"}}, "not HOST[:PORT]/PATH"),
        (
            {
                "name": "p",
                "repository": "127.0.0.1:5000/other",
                "helm": {"chart": "oci://127.0.0.1:5000/c/shop", "version": "1.0.0"},
            },
            "differs from the oci:// chart's",
        ),
        (
            {"name": "p", "path": "deploy", "helm": {"chart": "oci://127.0.0.1:5000/c/shop", "version": "1.0.0"}},
            "leave path out",
        ),
    ],
)
def test_what_is_refused_names_the_problem(fields: dict[str, Any], message: str) -> None:
    assert message in refused(**fields)


def test_every_chart_setting_waits_for_an_approval_in_production() -> None:
    base = typed(**RELEASE, approval={"required": True, "approvers": ["alice"]}, helm={"chart": "charts/shop"})
    for change in (
        {"chart": "charts/other"},
        {"chart": "charts/shop", "values": {"replicaCount": 5}},
        {"chart": "charts/shop", "values-files": ["values/prod.yaml"]},
        {"chart": "charts/shop", "release-name": "other"},
        {"chart": "charts/shop", "prune-crds": True},
    ):
        after = typed(**RELEASE, approval={"required": True, "approvers": ["alice"]}, helm=change)
        diff = spec_diff(base, after)
        assert diff and protected_changes(diff) == diff, change
    values = spec_diff(
        base,
        typed(
            **RELEASE,
            approval={"required": True, "approvers": ["alice"]},
            helm={"chart": "charts/shop", "values": {"replicaCount": 5}},
        ),
    )
    assert values == ["helm.values.replicaCount: null -> 5"]


def test_a_pending_plan_acts_only_on_the_chart_settings() -> None:
    from ferry.spec import pending_plan_spec

    current = typed(**RELEASE, namespace="shop", helm={"chart": "charts/shop"})
    wider = typed(
        **{**RELEASE, "repository": "127.0.0.1:5000/evil/app"},
        namespace="kube-system",
        **{"service-account": "admin"},
        helm={"chart": "charts/shop", "values": {"replicaCount": 5}, "lookup": True},
    )
    planned = pending_plan_spec(current, wider)
    assert not isinstance(planned, str)
    assert (planned.repository, planned.namespace, planned.service_account) == (current.repository, "shop", None)
    assert planned.helm is not None and planned.helm.values == {"replicaCount": 5} and not planned.helm.lookup
    oci = typed(name="p", helm={"chart": "oci://127.0.0.1:5000/charts/shop", "version": "1.0.0"})
    moved = typed(name="p", helm={"chart": "oci://127.0.0.1:5000/charts/other", "version": "1.0.0"})
    assert "another OCI chart" in str(pending_plan_spec(oci, moved))
    assert "does not change a chart" in str(pending_plan_spec(typed(**RELEASE), typed(**RELEASE, prune=False)))
