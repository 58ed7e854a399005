"""activities.helm.render_chart against the real helm v4.3.2 (`make helm`): values, .Release and .Capabilities,
Helm's own failure messages, the bounds (memory, time, output), remote dependencies and schema refs refused, a
planted post-renderer never run, `lookup` empty, and hooks and CRDs split from real output.

No skip: a missing helm fails every test here with the `make helm` hint."""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from activities.helm import render
from activities.helm.binary import HelmMissing, helm_path
from activities.manifests import BundleError
from ferry.helm_render import HelmRenderInput
from ferry.hooks import ordered
from tests.kit.charts import CRD, HELM_VERSION, HOOK_JOB, TEST_POD, helm_binary_path, write_chart

INPUT = HelmRenderInput(release_name="shop", namespace="prod", kube_version="v1.35.4")


@pytest.fixture(scope="module", autouse=True)
def helm() -> Path:
    path = helm_binary_path()
    assert path.is_file() and os.access(path, os.X_OK), (
        f"helm {HELM_VERSION} is not built at {path}: run `make helm` (make setup builds it with Go)"
    )
    return path


def by_name(rendered: render.Rendered) -> dict[str, dict[str, object]]:
    return {f"{m.object['kind']}/{m.object['metadata']['name']}": m.object for m in rendered.manifests}


def test_values_files_and_inline_values_merge_in_order(tmp_path: Path) -> None:
    chart = write_chart(tmp_path / "release" / "charts")
    (tmp_path / "release" / "values").mkdir()
    (tmp_path / "release" / "values" / "prod.yaml").write_text("replicaCount: 3\ngreeting: from-file\n")
    started = time.monotonic()
    out = render.render_chart(
        chart,
        INPUT.model_copy(update={"values_files": ["values/prod.yaml"], "values": {"greeting": "inline"}}),
        root=tmp_path / "release",
    )
    print(f"render: {time.monotonic() - started:.3f} s")
    objects = by_name(out)
    assert objects["Deployment/shop"]["spec"]["replicas"] == 3  # type: ignore[index]
    assert objects["ConfigMap/shop-config"]["data"]["greeting"] == "inline"  # type: ignore[index]


def test_release_and_capabilities_come_from_the_input(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        templates={
            "gated.yaml": (
                '{{- if .Capabilities.APIVersions.Has "example.com/v1/Widget" }}\n'
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: widgets-served}\n{{- end }}\n"
            )
        },
    )
    out = render.render_chart(
        chart,
        INPUT.model_copy(
            update={
                "namespace": "team-a",
                "kube_version": "v1.33.2",
                "api_versions": ["example.com/v1/Widget"],
                "is_upgrade": True,
            }
        ),
    )
    objects = by_name(out)
    data = objects["ConfigMap/shop-config"]["data"]
    assert data == {"greeting": "hello", "kubeVersion": "v1.33.2", "isUpgrade": "true"}
    assert objects["ConfigMap/shop-config"]["metadata"]["namespace"] == "team-a"  # type: ignore[index]
    assert "ConfigMap/widgets-served" in objects
    assert "ConfigMap/widgets-served" not in by_name(render.render_chart(chart, INPUT))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            '{{ fail "no database configured" }}',
            "execution error at (shop/templates/bad.yaml:1:3): no database configured",
        ),
        (
            'x: {{ required "db.password is required" .Values.db }}',
            "execution error at (shop/templates/bad.yaml:1:6): db.password is required",
        ),
    ],
)
def test_fail_and_required_are_refused_with_helms_message(tmp_path: Path, template: str, message: str) -> None:
    chart = write_chart(tmp_path, templates={"bad.yaml": template})
    with pytest.raises(BundleError) as refused:
        render.render_chart(chart, INPUT)
    assert str(refused.value) == f"shop: helm template failed: {message}"


def test_a_template_that_eats_memory_is_killed_by_the_address_space_bound(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path, templates={"bad.yaml": ('{{ $s := repeat 100000000 "x" }}{{ range until 40 }}{{ $s }}{{ end }}')}
    )
    started = time.monotonic()
    with pytest.raises(BundleError, match="ran out of memory under the 2 GiB address-space bound"):
        render.render_chart(chart, INPUT)
    assert time.monotonic() - started < 30


def test_a_looping_template_is_killed_by_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "HELM_TIMEOUT", 2)
    chart = write_chart(
        tmp_path, templates={"loop.yaml": ("{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}")}
    )
    started = time.monotonic()
    with pytest.raises(BundleError, match="shop: helm template ran longer than 2 s: killed"):
        render.render_chart(chart, INPUT)
    assert time.monotonic() - started < 15


def test_output_past_the_bound_is_killed_while_it_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "MAX_RENDER_BYTES", 64 * 1024)
    many = "{{ range $i := until 2000 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c{{ $i }}}\n{{ end }}"
    chart = write_chart(tmp_path, templates={"many.yaml": many})
    with pytest.raises(BundleError, match=r"shop: helm template is over 65536 bytes: refused"):
        render.render_chart(chart, INPUT)


def test_a_remote_dependency_is_refused_with_the_fix(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        chart={
            "dependencies": [
                {"name": "redis", "version": "19.0.0", "repository": "oci://registry-1.docker.io/bitnamicharts"}
            ]
        },
    )
    with pytest.raises(
        BundleError,
        match=r"shop/Chart.yaml: dependency 'redis' \(repository oci://registry-1"
        r".docker.io/bitnamicharts\) is not vendored under charts/: .*"
        r"run `helm dependency build` in CI",
    ):
        render.render_chart(chart, INPUT)


def test_a_vendored_dependency_renders(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        chart={"dependencies": [{"name": "db", "version": "0.1.0", "repository": "https://charts.example.com"}]},
    )
    write_chart(
        chart / "charts",
        "db",
        "0.1.0",
        templates={
            "configmap.yaml": None,
            "deployment.yaml": None,
            "svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: db}\n",
        },
        crds={"db.yaml": CRD.replace("widgets", "dbs").replace("Widget", "Db").replace("widget", "db")},
    )
    out = render.render_chart(chart, INPUT)
    assert "Service/db" in by_name(out)
    assert [c.source for c in out.crds] == ["shop/charts/db/crds/db.yaml"]


@pytest.mark.parametrize(
    ("ref", "where"), [("http://127.0.0.1:9/s.json", "properties.db.$ref"), ("../../etc/passwd", "properties.db.$ref")]
)
def test_a_schema_ref_that_would_load_is_refused(tmp_path: Path, ref: str, where: str) -> None:
    chart = write_chart(tmp_path, schema={"type": "object", "properties": {"db": {"$ref": ref}}})
    with pytest.raises(BundleError, match=rf"shop/values.schema.json: {where.replace('$', '[$]')} is "):
        render.render_chart(chart, INPUT)


def test_a_schema_ref_in_a_vendored_chart_archive_is_refused(tmp_path: Path) -> None:
    chart = write_chart(tmp_path, chart={"dependencies": [{"name": "db", "version": "0.1.0"}]})
    sub = write_chart(tmp_path / "src", "db", "0.1.0", schema={"$ref": "https://evil.test/db.json"})
    (chart / "charts").mkdir()
    with tarfile.open(chart / "charts" / "db-0.1.0.tgz", "w:gz") as tar:
        tar.add(sub, arcname="db")
    with pytest.raises(
        BundleError,
        match=r"shop/charts/db-0.1.0.tgz:db/values.schema.json: \$ref is "
        r"'https://evil.test/db.json'",
    ):
        render.render_chart(chart, INPUT)
    (sub / "values.schema.json").unlink()
    (chart / "charts" / "db-0.1.0.tgz").unlink()
    with tarfile.open(chart / "charts" / "db-0.1.0.tgz", "w:gz") as tar:
        tar.add(sub, arcname="db")
    assert "Deployment/shop" in by_name(render.render_chart(chart, INPUT))  # the archive is vendored: it renders


def test_a_link_out_of_the_chart_is_refused(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        templates={
            "leak.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\n"
                'data: {x: {{ .Files.Get "files/hosts" | quote }}}\n'
            )
        },
    )
    (chart / "files").mkdir()
    os.symlink("/etc/hosts", chart / "files" / "hosts")
    with pytest.raises(BundleError, match="files/hosts: symlink points outside the bundle directory"):
        render.render_chart(chart, INPUT)


def test_a_local_schema_is_enforced_by_helm(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        schema={
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"replicaCount": {"$ref": "#/definitions/count"}},
            "definitions": {"count": {"type": "integer", "minimum": 1}},
        },
    )
    render.render_chart(chart, INPUT)
    with pytest.raises(BundleError, match="shop: helm template failed: values don't meet the specifications"):
        render.render_chart(chart, INPUT.model_copy(update={"values": {"replicaCount": 0}}))


def plant_post_renderer(plugins: Path, marker: Path) -> None:
    (plugins / "marker").mkdir(parents=True)
    (plugins / "marker" / "plugin.yaml").write_text(
        'name: "marker"\nversion: "1.0.0"\ntype: postrenderer/v1\napiVersion: v1\nruntime: subprocess\n'
        'runtimeConfig:\n  platformCommand:\n    - command: "${HELM_PLUGIN_DIR}/run.sh"\n'
    )
    (plugins / "marker" / "run.sh").write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    (plugins / "marker" / "run.sh").chmod(0o755)


def test_a_post_renderer_planted_in_the_workers_home_is_never_run(
    tmp_path: Path, helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = write_chart(tmp_path)
    home, marker = tmp_path / "home", tmp_path / "MARKER"
    for plugins in (tmp_path / "plugins", home / ".local" / "share" / "helm" / "plugins"):
        plant_post_renderer(plugins, marker)
    # the plant is a working plugin: helm with the worker's environment and --post-renderer runs it
    # and the worker's HELM_* variables reach a helm started plainly (here: a CPU profile file is written)
    profile = tmp_path / "cpu.prof"
    subprocess.run(
        [str(helm), "template", "shop", str(chart), "--post-renderer", "marker"],
        check=True,
        env=os.environ | {"HELM_PLUGINS": str(tmp_path / "plugins"), "HELM_PPROF_CPU_PROFILE": str(profile)},
        capture_output=True,
        timeout=60,
    )
    assert marker.exists() and profile.exists()
    marker.unlink()
    profile.unlink()
    monkeypatch.setenv("FERRY_HELM", str(helm))  # HOME moves: the binary is found where it is
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HELM_PLUGINS", str(tmp_path / "plugins"))
    monkeypatch.setenv("HELM_PPROF_CPU_PROFILE", str(profile))
    render.render_chart(chart, INPUT)
    assert not marker.exists()
    assert not profile.exists()


def test_lookup_and_dns_return_nothing(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        templates={
            "lookup.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata:\n"
                '  found: {{ empty (lookup "v1" "Namespace" "" "kube-system") | quote }}\n'
                '  host: {{ getHostByName "localhost" | quote }}\n'
            )
        },
    )
    assert by_name(render.render_chart(chart, INPUT))["ConfigMap/probe"]["data"] == {"found": "true", "host": ""}


def test_hooks_and_crds_are_split_from_real_output(tmp_path: Path) -> None:
    second = (
        HOOK_JOB.replace("-migrate", "-seed").replace('"-5"', '"-10"').replace("pre-install,pre-upgrade", "Pre-Install")
    )
    chart = write_chart(
        tmp_path,
        templates={
            "job.yaml": HOOK_JOB,
            "seed.yaml": second,
            "test.yaml": TEST_POD,
            "old.yaml": HOOK_JOB.replace("pre-install,pre-upgrade", "crd-install").replace("-migrate", "-old"),
        },
        crds={"widgets.yaml": CRD + "---\n" + CRD.replace("widgets", "gadgets").replace("Widget", "Gadget")},
    )
    out = render.render_chart(chart, INPUT)
    assert [c.object["metadata"]["name"] for c in out.crds] == ["widgets.example.com", "gadgets.example.com"]
    assert all(c.source == "shop/crds/widgets.yaml" for c in out.crds)
    assert sorted(by_name(out)) == ["ConfigMap/shop-config", "Deployment/shop"]
    # --skip-tests drops the test Pod; an unknown event (crd-install) is printed nowhere by Helm
    assert sorted(h.name for h in out.hooks) == ["shop-migrate", "shop-seed"]
    assert [h.name for h in ordered(out.hooks, "pre-install")] == ["shop-seed", "shop-migrate"]
    assert [h.name for h in ordered(out.hooks, "pre-upgrade")] == ["shop-migrate"]


def test_a_values_file_that_is_not_a_mapping_or_outside_is_refused(tmp_path: Path) -> None:
    chart = write_chart(tmp_path, files={"list.yaml": "- a\n- b\n"})
    with pytest.raises(BundleError, match="values file list.yaml: is a list, not a mapping"):
        render.render_chart(chart, INPUT.model_copy(update={"values_files": ["list.yaml"]}))
    (tmp_path / "outside.yaml").write_text("a: 1\n")
    os.symlink(tmp_path / "outside.yaml", tmp_path / "shop-link.yaml")
    with pytest.raises(BundleError, match="points outside the release"):
        render.render_chart(chart, INPUT.model_copy(update={"values_files": ["../shop-link.yaml"]}), root=chart)


def test_a_missing_helm_names_make_helm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FERRY_HELM", str(tmp_path / "nope"))
    with pytest.raises(HelmMissing, match=r"helm v4.3.2 is missing .*run `make helm`"):
        helm_path()
    monkeypatch.delenv("FERRY_HELM")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(HelmMissing, match=r"run `make helm` \(make setup builds it\)"):
        helm_path()


def test_an_oversized_schema_in_a_vendored_chart_archive_is_refused_not_skipped(tmp_path: Path) -> None:
    """Helm v4 bounds no single file of an archive: a schema over the per-file bound, padded past it to slip by
    a check that skipped big members, would be read by helm with its file:// $ref. It is refused."""
    chart = write_chart(tmp_path, chart={"dependencies": [{"name": "db", "version": "0.1.0"}]})
    sub = write_chart(tmp_path / "src", "db", "0.1.0")
    padded = '{"$ref": "file:///etc/hostname", "description": "' + "x" * (6 * 1024 * 1024) + '"}'
    (sub / "values.schema.json").write_text(padded)
    (chart / "charts").mkdir()
    with tarfile.open(chart / "charts" / "db-0.1.0.tgz", "w:gz") as tar:
        tar.add(sub, arcname="db")
    with pytest.raises(BundleError, match=r"db-0.1.0.tgz:db/values.schema.json: over the \d+-byte limit per file"):
        render.render_chart(chart, INPUT)
