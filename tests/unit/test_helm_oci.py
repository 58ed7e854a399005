"""ferry.helm_oci: Helm's OCI chart format (helm v4.3.2 pkg/registry), pure."""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio import activity

from activities.bundle import ChartActivities
from activities.registry import ChartRegistry
from ferry.helm_oci import (
    ChartError,
    chart_config,
    chart_manifest,
    chart_versions,
    descriptor,
    manifest_bytes,
    oci_annotations,
    oci_tag,
    parse_chart_yaml,
    tag_for,
    tag_versions,
    version_for,
)
from ferry.release import ReleaseInput, chart_version_problem
from ferry.versions import SemverRange, select, try_parse_tag, try_parse_version
from workflows import release as release_workflow

FULL = {
    "apiVersion": "v2",
    "name": "shop",
    "version": "1.4.2+b1",
    "type": "application",
    "appVersion": "2.0",
    "description": "a <shop> & more",
    "home": "https://example.com",
    "sources": ["https://src/a", "https://src/b"],
    "keywords": ["web"],
    "maintainers": [{"name": "Ann", "email": "ann@example.com"}, {"name": "Bob"}],
    "annotations": {"z": "1", "a": "2", "org.opencontainers.image.title": "nope"},
    "kubeVersion": ">=1.30",
    "dependencies": [{"name": "db", "version": "1.0.0", "repository": "file://../db"}],
    "icon": "i.png",
}


def test_config_is_go_field_order_compact_and_omitempty() -> None:
    raw = chart_config(parse_chart_yaml(FULL))
    assert list(json.loads(raw)) == [
        "name",
        "home",
        "sources",
        "version",
        "description",
        "keywords",
        "maintainers",
        "icon",
        "apiVersion",
        "appVersion",
        "annotations",
        "kubeVersion",
        "dependencies",
        "type",
    ]
    assert b" " not in raw.replace(b"a \\u003cshop\\u003e \\u0026 more", b"")
    assert b'"maintainers":[{"name":"Ann","email":"ann@example.com"},{"name":"Bob"}]' in raw
    assert b'"annotations":{"a":"2","org.opencontainers.image.title":"nope","z":"1"}' in raw
    assert b'"dependencies":[{"name":"db","version":"1.0.0","repository":"file://../db"}]' in raw


def test_minimal_config_exactly() -> None:
    meta = parse_chart_yaml({"apiVersion": "v2", "name": "a", "version": "0.1.0", "deprecated": False})
    assert chart_config(meta) == b'{"name":"a","version":"0.1.0","apiVersion":"v2"}'


def test_tags_keep_the_plus_and_listing_is_strict() -> None:
    assert tag_for("1.0.0+b1") == "1.0.0_b1"
    assert version_for("1.0.0_b1") == "1.0.0+b1"
    assert version_for(tag_for("2.1.0-rc.1+git.abc")) == "2.1.0-rc.1+git.abc"
    assert chart_versions(["1.0.0", "1.0.0_b1", "v1.2.3", "1.2", "latest", "sha256-ab.sig", "01.0.0"]) == [
        "1.0.0",
        "1.0.0+b1",
    ]
    with pytest.raises(ChartError):
        tag_for("v1.2.3")


def test_annotations_as_helm_writes_them() -> None:
    notes = oci_annotations(parse_chart_yaml(FULL), "2026-12-07T10:00:00Z")
    assert notes["org.opencontainers.image.title"] == "shop"  # a chart annotation cannot override it
    assert notes["org.opencontainers.image.version"] == "1.4.2+b1"
    assert notes["org.opencontainers.image.source"] == "https://src/a"
    assert notes["org.opencontainers.image.authors"] == "Ann (ann@example.com), Bob"
    assert notes["org.opencontainers.image.created"] == "2026-12-07T10:00:00Z"
    assert notes["z"] == "1" and list(notes) == sorted(notes)


def test_manifest_has_no_media_type_and_sorted_layers() -> None:
    cfg = descriptor("application/vnd.cncf.helm.config.v1+json", "sha256:" + "c" * 64, 10)
    layers = [descriptor("x", "sha256:" + "b" * 64, 1), descriptor("y", "sha256:" + "a" * 64, 2)]
    body = chart_manifest(cfg, layers, {"k": "v"})
    assert "mediaType" not in body and list(body) == ["schemaVersion", "config", "layers", "annotations"]
    assert [d["digest"][7] for d in body["layers"]] == ["a", "b"]
    assert manifest_bytes(body).startswith(b'{"schemaVersion":2,"config":{"mediaType":')


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"apiVersion": "v1"}, "Helm 2"),
        ({"apiVersion": "v3"}, "not supported"),
        ({"version": "1.2"}, "strict semver"),
        ({"version": "v1.2.3"}, "strict semver"),
        ({"type": "plugin"}, "application or library"),
        ({"name": "../x"}, "invalid"),
        ({"dependencies": [{"name": "a"}, {"name": "a"}]}, "more than one"),
    ],
)
def test_chart_yaml_refusals(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ChartError, match=needle):
        parse_chart_yaml({"apiVersion": "v2", "name": "a", "version": "1.0.0"} | change)


# ------------------------------------------------------------------ resolving over chart tags (step 17, oci)


def test_a_tracked_version_is_looked_up_under_helms_tag() -> None:
    assert oci_tag("1.0.0+b1") == "1.0.0_b1"
    assert oci_tag("1.0.0") == "1.0.0" and oci_tag("v1.2.3") == "v1.2.3"  # a Ferry release's tag is its version


def test_tag_versions_add_chart_versions_beside_the_tags() -> None:
    tags = ["1.0.0", "1.0.0_b1", "latest", "v2.0.0", "1.1.0-rc.1_x", "x_y"]
    assert tag_versions(tags) == {
        "1.0.0": "1.0.0",
        "1.0.0_b1": "1.0.0_b1",
        "latest": "latest",
        "v2.0.0": "v2.0.0",
        "1.1.0-rc.1_x": "1.1.0-rc.1_x",
        "x_y": "x_y",
        "1.0.0+b1": "1.0.0_b1",
        "1.1.0-rc.1+x": "1.1.0-rc.1_x",
    }


def test_tracked_versions_parse_build_metadata_but_tags_do_not() -> None:
    assert try_parse_version("1.0.0+b1") is not None and try_parse_tag("1.0.0+b1") is None
    assert try_parse_version("1.0.0_b1") is None and try_parse_version("v1.0.0+b1") is None
    assert try_parse_version("v1.2.3") == try_parse_tag("v1.2.3")


def test_select_over_chart_versions_honours_ranges_prereleases_and_holds() -> None:
    versions = list(tag_versions(["1.0.0_b1", "1.1.0_b2", "1.2.0-rc.1_b3", "2.0.0"]))
    assert select(versions, SemverRange(">=1.0.0 <2")) == "1.1.0+b2"
    assert select(versions, SemverRange(">=1.0.0 <2"), prereleases=True) == "1.2.0-rc.1+b3"
    assert select(versions, SemverRange(">=1.0.0 <2"), held=frozenset({"1.1.0+b2"})) == "1.0.0+b1"
    assert select(versions, SemverRange("^2")) == "2.0.0"


def _release(**kw: object) -> ReleaseInput:
    base: dict[str, object] = {
        "repository": "127.0.0.1:5000/charts/shop",
        "version": "1.0.0",
        "ci_task_queue": "ferry-ci-" + "0" * 32,
        "bundle_dir": "/src/shop",
        "publisher": "ci",
    }
    return ReleaseInput.model_validate(base | kw)


def test_a_chart_release_takes_strict_semver_with_build_metadata() -> None:
    assert _release(version="1.0.0+b1", chart=True).tag == "1.0.0_b1"
    assert _release(version="v1.0.0").tag == "v1.0.0"
    with pytest.raises(ValidationError, match="build metadata"):
        _release(version="1.0.0+b1")  # a directory release: OCI tags cannot carry '+'
    with pytest.raises(ValidationError, match="not strict semver"):
        _release(version="v1.0.0", chart=True)  # helm lists strict semver only


def test_a_chart_is_released_under_its_chart_yaml_version() -> None:
    assert chart_version_problem("", "1.4.2", "shop") is None
    assert chart_version_problem("1.4.2", "1.4.2", "shop") is None
    problem = chart_version_problem("1.5.0", "1.4.2", "charts/shop")
    assert problem and "Chart.yaml says version '1.4.2', the release says '1.5.0'" in problem


@pytest.mark.parametrize(
    ("stub", "implementation"),
    [
        (release_workflow.package_chart, ChartActivities.package_chart),
        (release_workflow.push_chart, ChartRegistry.push_chart),
    ],
    ids=["package_chart", "push_chart"],
)
def test_the_chart_release_references_match_the_ci_activities(stub: Any, implementation: Any) -> None:
    def name(fn: Any) -> str | None:
        return activity._Definition.must_from_callable(fn).name

    def signature(fn: Any) -> tuple[list[object], object]:
        func = inspect.unwrap(getattr(fn, "__func__", fn))
        hints = typing.get_type_hints(func)
        return [hints[p] for p in inspect.signature(func).parameters if p != "self"], hints["return"]

    assert name(stub) == name(implementation) and signature(stub) == signature(implementation)
