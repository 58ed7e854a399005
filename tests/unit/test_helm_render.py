"""ferry.helm_render: splitting `helm template` output (golden-shaped, as Helm v4.3.2 prints it), the bounds (the
bundles' own), Helm's error line, values-schema references and the render cache key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from activities import manifests
from ferry import release
from ferry.helm_render import (
    MAX_DOCUMENT_BYTES,
    MAX_RENDER_BYTES,
    MAX_RENDER_OBJECTS,
    HelmRenderInput,
    RenderRefused,
    helm_error,
    is_crd_source,
    render_key,
    schema_refs_refused,
    split_documents,
    split_rendered,
    values_digest,
)

# The shape of pkg/cmd/testdata/output/template-with-crds.txt: a crds/ file with two documents and one Source line,
# manifests, then a hook.
OUTPUT = """\
---
# Source: shop/crds/widgets.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}

---
# Source: shop/charts/db/crds/db.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: dbs.example.com}
---
# Source: shop/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config}
data:
  script: |
    echo ---not a separator
    ----
---
# Source: shop/templates/crd-in-templates.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: templated.example.com}
---
# Source: shop/charts/db/templates/svc.yaml
apiVersion: v1
kind: Service
metadata: {name: db}
---
# Source: shop/templates/job.yaml
apiVersion: batch/v1
kind: Job
metadata:
  name: shop-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
---
# Source: shop/templates/old.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: old-style
  annotations: {helm.sh/hook: crd-install}
"""


def parsed(text: str) -> list[tuple[str, dict[str, Any]]]:
    """What the adapter does between the two pure steps (there with the bundles' alias bounds)."""
    return [(d.source, o) for d in split_documents(text) for o in yaml.safe_load_all(d.text) if o]


def test_the_bounds_are_the_bundles() -> None:
    assert MAX_RENDER_BYTES == manifests.MAX_KUSTOMIZE_OUTPUT
    assert MAX_RENDER_OBJECTS == manifests.MAX_MEMBERS
    assert MAX_DOCUMENT_BYTES == release.MAX_BUNDLE_FILE_BYTES


def test_sources_are_carried_forward_and_crds_are_by_path() -> None:
    docs = split_documents(OUTPUT)
    assert [d.source for d in docs] == [
        "shop/crds/widgets.yaml",
        "shop/crds/widgets.yaml",
        "shop/charts/db/crds/db.yaml",
        "shop/templates/configmap.yaml",
        "shop/templates/crd-in-templates.yaml",
        "shop/charts/db/templates/svc.yaml",
        "shop/templates/job.yaml",
        "shop/templates/old.yaml",
    ]
    assert "----" in docs[3].text  # a line of four dashes, inside a block scalar, is content


def test_split_rendered_sorts_crds_manifests_and_hooks() -> None:
    out = split_rendered(parsed(OUTPUT))
    assert [c.object["metadata"]["name"] for c in out.crds] == [
        "widgets.example.com",
        "gadgets.example.com",
        "dbs.example.com",
    ]
    # a CustomResourceDefinition from templates/ is a manifest: only crds/ files are Helm's CRDs
    assert [m.object["metadata"]["name"] for m in out.manifests] == ["shop-config", "templated.example.com", "db"]
    assert [(h.name, h.events, h.weight, h.path) for h in out.hooks] == [
        ("shop-migrate", ("pre-install", "pre-upgrade"), -5, "shop/templates/job.yaml")
    ]
    assert len(out.dropped) == 1 and "old-style" in out.dropped[0] and "crd-install" in out.dropped[0]
    assert out.count == 7


@pytest.mark.parametrize(
    ("source", "crd"),
    [
        ("shop/crds/a.yaml", True),
        ("shop/crds/sub/a.yaml", True),
        ("shop/charts/db/crds/a.yaml", True),
        ("shop/charts/db/charts/cache/crds/a.yaml", True),
        ("shop/templates/crds/a.yaml", False),
        ("shop/templates/a.yaml", False),
        ("crds/a.yaml", False),
        ("shop/charts/crds/a.yaml", False),
        ("", False),
    ],
)
def test_crd_source_rule(source: str, crd: bool) -> None:
    assert is_crd_source(source) is crd


def test_a_hook_annotation_in_crds_is_still_a_crd() -> None:
    text = (
        "---\n# Source: shop/crds/x.yaml\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata:\n  name: x.example.com\n  annotations: {helm.sh/hook: pre-install}\n"
    )
    out = split_rendered(parsed(text))
    assert len(out.crds) == 1 and out.hooks == ()


def test_empty_and_comment_only_documents_are_skipped_but_set_the_source() -> None:
    text = "---\n# Source: shop/templates/a.yaml\n\n---\n# just a comment\n---\nkind: ConfigMap\n"
    docs = split_documents(text)
    assert [(d.source, d.text.strip()) for d in docs] == [("shop/templates/a.yaml", "kind: ConfigMap")]


def test_the_output_bound() -> None:
    with pytest.raises(RenderRefused, match="over 100 bytes"):
        split_documents("---\nkind: A\n" * 20, max_bytes=100)


def test_the_document_bound_names_the_source() -> None:
    with pytest.raises(RenderRefused, match=r"shop/templates/big.yaml: a rendered document is over 50 bytes"):
        split_documents("---\n# Source: shop/templates/big.yaml\ndata: " + "x" * 60 + "\n", max_document_bytes=50)


def test_the_document_count_bound() -> None:
    split_documents("---\nkind: A\n" * 3, max_documents=3)
    with pytest.raises(RenderRefused, match="more than 3 documents"):
        split_documents("---\nkind: A\n" * 4, max_documents=3)


def test_the_object_count_bound() -> None:
    objects = [("shop/templates/a.yaml", {"kind": "ConfigMap", "metadata": {"name": f"c{i}"}}) for i in range(4)]
    assert split_rendered(objects[:3], max_objects=3).count == 3
    with pytest.raises(RenderRefused, match="more than 3 objects"):
        split_rendered(objects, max_objects=3)


def test_a_hook_annotation_that_is_not_a_string_is_refused() -> None:
    bad = {"kind": "Job", "metadata": {"name": "j", "annotations": {"helm.sh/hook": ["pre-install"]}}}
    with pytest.raises(RenderRefused, match="helm.sh/hook is list"):
        split_rendered([("shop/templates/j.yaml", bad)])


def test_helm_error_is_the_first_error_line_bounded() -> None:
    stderr = (
        "walk.go:75: found symbolic link in path\nError: execution error at (shop/templates/cm.yaml:3:4): "
        "db.password is required\n\nUse --debug flag to render out invalid YAML\n"
    )
    assert helm_error(stderr) == "execution error at (shop/templates/cm.yaml:3:4): db.password is required"
    assert helm_error("panic: boom\n") == "panic: boom"
    assert helm_error("") == "helm failed without a message"
    long = helm_error("Error: " + "x" * 2000)
    assert len(long) == 800 and long.endswith("...")
    # helm v4 prints a template's execution error over indented lines (as the real helm does for a nil value)
    nested = (
        'Error: c/templates/cm.yaml:5:59\n  executing "c/templates/cm.yaml" at <"seed">:\n'
        "    nil pointer evaluating interface {}.database\n\nUse --debug flag to render out invalid YAML\n"
    )
    assert helm_error(nested) == (
        'c/templates/cm.yaml:5:59 executing "c/templates/cm.yaml" at <"seed">: nil pointer evaluating interface '
        "{}.database"
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"properties": {"x": {"$ref": "urn:example:thing"}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "$id": "#root"},
        {"$schema": "https://json-schema.org/draft/2020-12/schema"},
        {"properties": {"$ref": {"type": "string"}}},  # a property named $ref is a schema, not a reference
    ],
)
def test_local_schemas_pass(schema: dict[str, Any]) -> None:
    assert schema_refs_refused(schema) is None


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"$ref": "https://example.com/s.json"}, "$ref"),
        ({"properties": {"db": {"$ref": "http://evil.test/db.json"}}}, "properties.db.$ref"),
        ({"allOf": [{"type": "object"}, {"$ref": "other.json"}]}, "allOf[1].$ref"),
        ({"$id": "file:///etc/passwd"}, "$id"),
        ({"properties": {"a": {"$dynamicRef": "https://x.test/a"}}}, "properties.a.$dynamicRef"),
        ({"$schema": "https://evil.test/meta"}, "$schema"),
        ({"$ref": "/etc/hosts"}, "$ref"),
    ],
)
def test_schema_refs_that_load_are_refused_with_their_path(schema: dict[str, Any], path: str) -> None:
    reason = schema_refs_refused(schema, "shop/values.schema.json")
    assert reason is not None
    assert reason.startswith(f"shop/values.schema.json: {path} is ")
    assert "vendor it into the schema" in reason


def test_render_key_covers_every_input() -> None:
    base: dict[str, Any] = dict(
        chart_digest="sha256:aa",
        values_digest="sha256:bb",
        release_name="shop",
        namespace="prod",
        kube_version="v1.35.4",
        api_versions=["a/v1", "b/v1"],
        is_upgrade=False,
        helm_version="v4.3.2",
    )
    key = render_key(**base)
    assert len(key) == 64 and int(key, 16) >= 0
    assert render_key(**base | {"api_versions": ["b/v1", "a/v1", "a/v1"]}) == key  # a set
    for field, other in [
        ("chart_digest", "sha256:ab"),
        ("values_digest", "sha256:bc"),
        ("release_name", "shop2"),
        ("namespace", "staging"),
        ("kube_version", "v1.35.5"),
        ("api_versions", ["a/v1"]),
        ("is_upgrade", True),
        ("helm_version", "v4.3.3"),
    ]:
        assert render_key(**base | {field: other}) != key, field


def test_values_digest_keeps_merge_order_and_ignores_key_order() -> None:
    a = values_digest({"x": 1, "y": {"b": 2, "a": 1}}, [("values/prod.yaml", "sha256:1")])
    assert a == values_digest({"y": {"a": 1, "b": 2}, "x": 1}, [("values/prod.yaml", "sha256:1")])
    files = [("values/a.yaml", "sha256:1"), ("values/b.yaml", "sha256:2")]
    assert values_digest({}, files) != values_digest({}, list(reversed(files)))
    assert values_digest({"x": 1}) != values_digest({"x": "1"})


GOOD = {"release_name": "shop", "namespace": "prod", "kube_version": "v1.35.4"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("release_name", "--post-renderer", "the release name"),
        ("release_name", "x" * 54, "at most 53"),
        ("namespace", "Prod", "the namespace"),
        ("kube_version", "--kube-version", "not a Kubernetes version"),
        ("api_versions", ["apps/v1,evil/v1"], "not an API version"),
        ("api_versions", ["-a"], "not an API version"),
        ("values_files", ["../secrets.yaml"], "a values file"),
        ("values_files", ["/etc/passwd"], "a values file"),
        ("values_files", ["values/../../x"], "a values file"),
        ("values", {"x": "y" * 300_000}, "use a values file"),
    ],
)
def test_render_input_refuses_what_could_reach_argv_as_something_else(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HelmRenderInput(**GOOD | {field: value})


def test_render_input_accepts_discovery_shapes() -> None:
    done = HelmRenderInput(
        **GOOD
        | {
            "api_versions": ["v1", "v1/Pod", "apps/v1", "example.com/v1/Widget"],
            "values_files": ["values/prod.yaml"],
            "kube_version": "1.35",
        }
    )
    assert done.api_versions[-1] == "example.com/v1/Widget"


def test_a_template_message_is_withheld_when_lookup_is_on() -> None:
    from ferry.helm_render import redacted_error

    secret = "execution error at (shop/templates/cm.yaml:3:4): password is hunter2"
    withheld = redacted_error(secret)
    assert "hunter2" not in withheld and withheld.startswith("execution error at (shop/templates/cm.yaml:3:4)")
    assert "sha256" in withheld and redacted_error(secret) == withheld  # the same failure, the same digest
    parse = "YAML parse error on shop/templates/cm.yaml: error converting YAML to JSON: yaml: line 2: hunter2"
    assert "hunter2" not in redacted_error(parse)
    forbidden = 'error calling lookup: configmaps "seed" is forbidden: User "system:serviceaccount:a:b" cannot get'
    assert redacted_error(forbidden) == forbidden
