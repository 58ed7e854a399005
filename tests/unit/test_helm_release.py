"""ferry.helm_release: Helm's release Secrets decoded (and hostile ones refused), the deployed revision picked,
the adopting environment written, and the managedFields patch that drops Helm's field manager."""

from __future__ import annotations

import base64
import gzip
import json
import time
from typing import Any

import pytest
import yaml

from ferry.declared import EnvironmentsFile
from ferry.helm_release import (
    MAX_RELEASE_BYTES,
    MAX_REVISIONS,
    RELEASE_TYPE,
    ChartSource,
    ReleaseRefused,
    adopted,
    decode_secret,
    decode_stored,
    import_environment,
    manifest_ids,
    newest_deployed,
    parse_release,
    remove_manager_patch,
)
from ferry.helm_render import RenderRefused, split_documents, split_rendered
from ferry.model import PEOPLE
from ferry.plan import ENVIRONMENT_LABEL, ObjectId

MANIFEST = """---
# Source: shop/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop-config
data: {greeting: hi}
---
# Source: shop/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: prod
spec: {replicas: 2}
"""


def release_json(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "shop",
        "info": {"status": "deployed", "description": "Install complete"},
        "chart": {
            "metadata": {"name": "shop", "version": "1.4.2", "appVersion": "1.0.0"},
            "templates": [{"name": "templates/deployment.yaml", "data": base64.b64encode(b"kind: x").decode()}],
        },
        "config": {"replicaCount": 2, "greeting": "imported"},
        "manifest": MANIFEST,
        "version": 3,
        "namespace": "prod",
        "apply_method": "ssa",
    }
    body.update(over)
    return body


def stored(raw: bytes, gzipped: bool = True) -> str:
    """data.release as the API returns it: base64 (the API's) of base64 (Helm's) of gzip (Helm's)."""
    helm = base64.b64encode(gzip.compress(raw) if gzipped else raw)
    return base64.b64encode(helm).decode()


def secret(revision: int = 3, status: str = "deployed", name: str = "shop", data: str | None = None) -> dict[str, Any]:
    body = json.dumps(release_json(version=revision, name=name)).encode()
    return {
        "metadata": {
            "name": f"sh.helm.release.v1.{name}.v{revision}",
            "labels": {"owner": "helm", "name": name, "status": status, "version": str(revision)},
        },
        "type": RELEASE_TYPE,
        "data": {"release": stored(body) if data is None else data},
    }


def test_a_release_secret_decodes_to_its_chart_values_and_manifest() -> None:
    release = decode_secret(secret(), "shop")
    assert (release.chart, release.chart_version, release.app_version) == ("shop", "1.4.2", "1.0.0")
    assert release.values == {"replicaCount": 2, "greeting": "imported"}
    assert (release.revision, release.status, release.namespace) == (3, "deployed", "prod")
    assert release.manifest == MANIFEST


def test_a_release_stored_before_compression_decodes_too() -> None:
    # driver/util.go: no gzip magic, no gunzip
    raw = json.dumps(release_json()).encode()
    assert json.loads(decode_stored(stored(raw, gzipped=False)))["name"] == "shop"


def test_a_gzip_bomb_is_refused_while_it_inflates() -> None:
    bomb = gzip.compress(b"{" + b" " * (MAX_RELEASE_BYTES * 4))  # 128 MiB of JSON whitespace, ~130 KB compressed
    started = time.monotonic()
    with pytest.raises(ReleaseRefused, match="inflates to more than .* gzip bomb"):
        decode_stored(base64.b64encode(base64.b64encode(bomb)).decode())
    elapsed = time.monotonic() - started
    print(f"bomb of {len(bomb)} bytes refused in {elapsed:.3f} s")
    assert elapsed < 5


def test_concatenated_gzip_members_are_read_and_garbage_after_them_refused() -> None:
    raw = json.dumps(release_json()).encode()
    two = gzip.compress(raw[:50]) + gzip.compress(raw[50:])  # Go's reader is multistream
    assert json.loads(decode_stored(base64.b64encode(base64.b64encode(two)).decode()))["version"] == 3
    with pytest.raises(ReleaseRefused, match="not another gzip member"):
        decode_stored(base64.b64encode(base64.b64encode(gzip.compress(raw) + b"junk")).decode())
    with pytest.raises(ReleaseRefused, match="truncated"):
        decode_stored(base64.b64encode(base64.b64encode(gzip.compress(raw)[:-30])).decode())


def test_text_that_is_not_base64_or_not_json_is_refused() -> None:
    with pytest.raises(ReleaseRefused, match="not base64"):
        decode_stored("not base64 at all!")
    with pytest.raises(ReleaseRefused, match="not JSON"):
        parse_release(b"\x00garbage{")
    with pytest.raises(ReleaseRefused, match="the JSON is a list, not an object"):
        parse_release(b"[1, 2]")
    with pytest.raises(ReleaseRefused, match="not JSON"):
        parse_release(b"[" * 100_000 + b"]" * 100_000)  # nesting past the parser's recursion


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"config": ["a"]}, "field config is an array, not an object"),
        ({"version": True}, "field version is a boolean, not a number"),
        ({"version": "3"}, "field version is a string, not a number"),
        ({"version": 0}, "field version is 0, not a revision"),
        ({"name": None}, "field name is missing, not a string"),
        ({"manifest": {"a": 1}}, "field manifest is an object, not a string"),
        ({"info": {"status": "exploded"}}, "info.status is 'exploded', not a Helm status"),
        ({"info": "deployed"}, "field info.status is missing"),
        ({"chart": {"metadata": {"name": "shop"}}}, "field chart.metadata.version is missing"),
        ({"hooks": "pre-install"}, "field hooks is a string, not an array"),
    ],
)
def test_json_that_is_not_a_helm_release_is_refused_naming_the_field(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ReleaseRefused, match=message):
        parse_release(json.dumps(release_json(**over)).encode())


def test_the_secret_must_be_what_its_name_and_labels_say() -> None:
    wrong_type = {**secret(), "type": "Opaque"}
    with pytest.raises(ReleaseRefused, match="type 'Opaque', not helm.sh/release.v1"):
        decode_secret(wrong_type, "shop")
    with pytest.raises(ReleaseRefused, match="not a revision of Helm release other"):
        decode_secret(secret(), "other")
    lying = secret(revision=3)
    lying["data"]["release"] = stored(json.dumps(release_json(version=9)).encode())
    with pytest.raises(ReleaseRefused, match="holds 'shop' revision 9, not shop revision 3"):
        decode_secret(lying, "shop")
    with pytest.raises(ReleaseRefused, match="no data.release"):
        decode_secret({**secret(), "data": {}}, "shop")


def test_the_newest_deployed_of_1000_revisions_is_picked_from_labels_alone() -> None:
    # NB: only metadata: the picker never decodes (data "x" would not decode)
    many = [secret(n, "superseded", data="x") for n in range(1, 1001)]
    many[499] = secret(500, "deployed", data="x")  # concurrent upgrades leave several deployed: Helm takes the newest
    many[799] = secret(800, "deployed", data="x")
    many.append(secret(1001, "failed", data="x"))
    many.append(secret(7, "deployed", name="shop-other", data="x"))  # another release
    lookalike = secret(2000, "deployed", data="x")
    lookalike["metadata"]["name"] = "sh.helm.release.v1.shop.v2000x"
    many.append(lookalike)
    started = time.monotonic()
    chosen = newest_deployed(reversed(many), "shop")
    print(f"picked from {len(many)} Secrets in {time.monotonic() - started:.3f} s")
    assert chosen["metadata"]["name"] == "sh.helm.release.v1.shop.v800"


def test_no_deployed_revision_is_refused_naming_the_newest() -> None:
    with pytest.raises(ReleaseRefused, match=r"no deployed revision \(the newest, v2, is 'pending-upgrade'\)"):
        newest_deployed([secret(1, "superseded"), secret(2, "pending-upgrade")], "shop")
    with pytest.raises(ReleaseRefused, match="no Helm release Secret"):
        newest_deployed([secret(1, name="db")], "shop")


def test_more_revisions_than_the_bound_are_refused() -> None:
    with pytest.raises(ReleaseRefused, match=f"more than {MAX_REVISIONS} revisions"):
        newest_deployed((secret(n, data="x") for n in range(1, MAX_REVISIONS + 2)), "shop")


def _rendered(manifest: str) -> Any:
    docs = split_documents(manifest)
    return split_rendered((d.source, o) for d in docs for o in yaml.safe_load_all(d.text) if o)


def test_the_manifest_names_its_objects_and_10001_are_refused() -> None:
    assert manifest_ids(_rendered(MANIFEST)) == [
        ObjectId(api_version="v1", kind="ConfigMap", name="shop-config"),
        ObjectId(api_version="apps/v1", kind="Deployment", namespace="prod", name="shop"),
    ]
    one = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{n}}}\n"
    assert len(manifest_ids(_rendered("".join(one.format(n=n) for n in range(10_000))))) == 10_000
    with pytest.raises(RenderRefused, match="more than 10000 documents"):
        split_documents("".join(one.format(n=n) for n in range(10_001)))
    with pytest.raises(ReleaseRefused, match="without apiVersion, kind or metadata.name"):
        manifest_ids(_rendered("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n"))


OBJECTS = [
    (ObjectId(api_version="v1", kind="ConfigMap", namespace="prod", name="shop-config"), True),
    (ObjectId(api_version="v1", kind="ConfigMap", namespace="edge", name="shop-edge"), True),
    (ObjectId(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole", name="shop"), False),
]


def validated(env: dict[str, Any]) -> Any:
    return EnvironmentsFile.model_validate({"environments": [env]}, context={PEOPLE: True}).environments[0]


def test_an_oci_chart_import_pins_the_installed_chart_version_with_the_users_values() -> None:
    release = decode_secret(secret(), "shop")
    imported = import_environment(release, ChartSource(chart="oci://127.0.0.1:5000/charts/shop"), OBJECTS)
    spec = validated(imported.environment)
    assert spec.helm.chart == "oci://127.0.0.1:5000/charts/shop" and spec.helm.version == "1.4.2"
    assert spec.helm.values == {"replicaCount": 2, "greeting": "imported"} and spec.helm.release_name == "shop"
    assert spec.repository == "127.0.0.1:5000/charts/shop" and spec.version == "1.4.2"
    assert (spec.namespace, spec.namespaces, spec.cluster_kinds) == ("prod", ["prod", "edge"], ["ClusterRole"])
    assert "chart shop 1.4.2" in imported.notes[0] and len(imported.notes) == 1
    other = import_environment(release, ChartSource(chart="oci://127.0.0.1:5000/charts/store"), OBJECTS).notes
    assert "does not end in the release's chart name 'shop'" in other[-1]


def test_a_chart_in_a_ferry_release_import_names_repository_path_and_version() -> None:
    release = decode_secret(secret(), "shop")
    source = ChartSource(repository="127.0.0.1:5000/config", path="charts/shop", semver=">=1.0.0")
    imported = import_environment(release, source, OBJECTS[:1], environment="shop-prod", cluster="eu")
    spec = validated(imported.environment)
    assert (spec.name, spec.repository, spec.path, spec.semver) == (
        "shop-prod",
        "127.0.0.1:5000/config",
        "charts/shop",
        ">=1.0.0",
    )
    assert spec.helm.chart is None and spec.helm.release_name == "shop" and spec.helm.values["greeting"] == "imported"
    assert spec.cluster.name == "eu" and spec.namespaces == []


def test_an_import_without_a_chart_source_is_refused_with_the_fix() -> None:
    release = decode_secret(secret(), "shop")
    with pytest.raises(ReleaseRefused, match="does not say where chart shop 1.4.2 came from: give --chart oci://"):
        import_environment(release, ChartSource(), OBJECTS)
    with pytest.raises(ReleaseRefused, match="not both"):
        import_environment(release, ChartSource(chart="oci://h/c/shop", repository="h/r"), OBJECTS)
    with pytest.raises(ReleaseRefused, match="exactly one of --version or --semver"):
        import_environment(release, ChartSource(repository="h/r", path="."), OBJECTS)
    with pytest.raises(ReleaseRefused, match="an OCI chart reference"):
        import_environment(release, ChartSource(chart="https://charts.example.com/shop"), OBJECTS)


def test_templates_that_render_differently_under_ferry_are_noted() -> None:
    template = b"metadata:\n  annotations:\n    rev: {{ .Release.Revision }}\n    id: {{ uuidv4 }}\n"
    chart = {
        "metadata": {"name": "shop", "version": "1.4.2"},
        "templates": [{"name": "templates/deployment.yaml", "data": base64.b64encode(template).decode()}],
    }
    release = parse_release(json.dumps(release_json(chart=chart, hooks=[{"name": "migrate"}])).encode())
    notes = import_environment(release, ChartSource(chart="oci://h/c/shop"), OBJECTS).notes
    assert any("templates/deployment.yaml: .Release.Revision, uuidv4" in n for n in notes)
    assert any("1 hook(s)" in n for n in notes)


def test_the_patch_drops_helms_entries_and_keeps_every_other() -> None:
    ferry = {"manager": "ferry", "operation": "Apply", "fieldsV1": {"f:data": {}}}
    status = {"manager": "helm", "operation": "Update", "subresource": "status", "fieldsV1": {}}
    obj = {
        "metadata": {
            "resourceVersion": "42",
            "managedFields": [
                {"manager": "helm", "operation": "Apply", "fieldsV1": {"f:data": {}}},
                ferry,
                {"manager": "helm", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
                status,
                {"manager": "helm-controller", "operation": "Apply", "fieldsV1": {}},
            ],
        }
    }
    patch = remove_manager_patch(obj)
    assert patch == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {
            "op": "replace",
            "path": "/metadata/managedFields",
            "value": [ferry, status, {"manager": "helm-controller", "operation": "Apply", "fieldsV1": {}}],
        },
    ]
    assert remove_manager_patch({"metadata": {"managedFields": [ferry]}}) is None
    only_helm = {"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "helm", "operation": "Apply"}]}}
    assert remove_manager_patch(only_helm)[1]["value"] == [{}]  # type: ignore[index]


def test_adopted_means_the_environment_label() -> None:
    assert adopted({"metadata": {"labels": {ENVIRONMENT_LABEL: "shop"}}}, "shop")
    assert not adopted({"metadata": {"labels": {ENVIRONMENT_LABEL: "other"}}}, "shop")
    assert not adopted({"metadata": {}}, "shop")


def test_values_that_look_like_credentials_are_named_never_shown() -> None:
    from ferry.helm_release import secret_like_paths

    values = {"db": {"password": "hunter2", "host": "db"}, "apiKey": "k", "replicas": 3, "tokenTTL": 5}
    assert sorted(secret_like_paths(values)) == ["apiKey", "db.password"]
