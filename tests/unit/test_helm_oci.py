"""ferry.helm_oci: Helm's OCI chart format (helm v4.3.2 pkg/registry), pure."""

from __future__ import annotations

import json

import pytest

from ferry.helm_oci import (
    ChartError,
    chart_config,
    chart_manifest,
    chart_versions,
    descriptor,
    manifest_bytes,
    oci_annotations,
    parse_chart_yaml,
    tag_for,
    version_for,
)

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
