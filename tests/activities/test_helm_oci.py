"""OCI Helm charts both ways, against the real registry and the real helm v4.3.2 (no mocks): a chart the real
`helm push` pushed is listed, resolved, pulled through the worker's cache and rendered; a chart Ferry pushed is
pulled and templated by the real `helm`; `1.0.0+b1` is tag `1.0.0_b1` both ways; hostile charts are refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from temporalio.exceptions import ApplicationError

from activities.bundle import BundleCache
from activities.helm.charts import check_chart, package_chart
from activities.helm.render import render_chart
from activities.registry import ChartRegistry, Registries, RegistryActivities, SignatureActivities
from devstack.registry import Registry
from ferry.artifacts import FetchManifestInput, ListTagsInput, PushArtifactInput
from ferry.cosign import PublisherKey, VerifyArtifactInput
from ferry.helm_oci import (
    HELM_CHART_MEDIA_TYPE,
    HELM_CONFIG_MEDIA_TYPE,
    PullChartInput,
    PushChartInput,
    parse_chart_yaml,
)
from ferry.helm_render import HelmRenderInput, Rendered
from ferry.oci import ANNOTATION_PUBLISHED_BY, FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE
from ferry.reconcile import ResolveInput
from ferry.settings import Settings
from tests.kit.charts import CRD, helm, helm_push, write_chart
from tests.kit.signing import key_pair, sign_release
from tests.kit.stack import settings_for

KUBE = "v1.35.4"
INPUT = HelmRenderInput(release_name="shop", namespace="prod", kube_version=KUBE)
CREATED = "2026-12-07T10:00:00Z"


@pytest.fixture
def settings(registry: Registry, tmp_path: Path) -> Settings:
    return settings_for(registry, tmp_path)


@pytest.fixture
def acts(settings: Settings) -> RegistryActivities:
    return RegistryActivities(Registries(settings.registry))


@pytest.fixture
def charts(settings: Settings) -> ChartRegistry:
    return ChartRegistry(Registries(settings.registry), check_chart)


def _base(registry: Registry) -> str:
    return f"{registry.host}/charts-{uuid.uuid4().hex[:8]}"


def ferry_push(charts: ChartRegistry, tmp: Path, repository: str, source: Path) -> Any:
    packaged = package_chart(source, tmp / f"ferry-{uuid.uuid4().hex[:6]}")
    return charts.push_chart(PushChartInput(repository=repository, archive_path=str(packaged.path), created=CREATED))


def objects(rendered: Rendered) -> list[dict[str, Any]]:
    found = [o.object for o in (*rendered.crds, *rendered.manifests)] + [h.object for h in rendered.hooks]
    return sorted(found, key=lambda o: (o["kind"], o["metadata"]["name"]))


def helm_template(tmp: Path, chart: Path) -> list[dict[str, Any]]:
    """`helm template` with the flags Ferry's render uses; the objects, sorted."""
    out = helm(
        tmp / "home",
        "template",
        "shop",
        str(chart),
        "--namespace=prod",
        f"--kube-version={KUBE}",
        "--include-crds",
        "--skip-tests",
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return sorted(docs, key=lambda o: (o["kind"], o["metadata"]["name"]))


# ------------------------------------------------------------------------------------ helm -> Ferry


def test_a_chart_pushed_by_helm_is_listed_resolved_pulled_and_rendered(
    registry: Registry, acts: RegistryActivities, charts: ChartRegistry, tmp_path: Path
) -> None:
    base = _base(registry)
    for version in ("1.4.2", "1.5.0", "2.0.0", "1.6.0-rc.1"):
        source = helm_push(tmp_path, base, version, values={"replicaCount": 2, "greeting": version, "image": "x"})
        if version == "1.5.0":
            expected = source
    repository = f"{base}/shop"
    listed = charts.chart_versions(repository)
    assert sorted(listed.versions) == ["1.4.2", "1.5.0", "1.6.0-rc.1", "2.0.0"] and listed.tags == 4
    found = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.4.0 <2"))
    assert found.ref is not None and found.ref.version == "1.5.0"
    pre = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.4.0 <2", prereleases=True))
    assert pre.ref is not None and pre.ref.version == "1.6.0-rc.1"
    held = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.4.0 <2", held=["1.5.0"]))
    assert held.ref is not None and held.ref.version == "1.4.2"
    pinned = acts.resolve_desired(ResolveInput(repository=repository, version="1.5.0"))
    assert pinned.ref == found.ref

    cache = BundleCache(tmp_path / "cache", acts.pull_artifact)
    root, _ = cache.ensure(repository, found.ref.digest, HELM_CHART_MEDIA_TYPE)
    assert [p.name for p in root.iterdir()] == ["shop"] and (root / "shop" / "Chart.yaml").is_file()
    again, _ = cache.ensure(repository, found.ref.digest, HELM_CHART_MEDIA_TYPE)  # a hit: no registry request
    assert again == root
    rendered = render_chart(root / "shop", INPUT, root)
    assert objects(rendered) == objects(render_chart(expected, INPUT))
    config = next(o for o in objects(rendered) if o["kind"] == "ConfigMap")
    assert config["data"]["greeting"] == "1.5.0" and config["metadata"]["namespace"] == "prod"


# ------------------------------------------------------------------------------------ Ferry -> helm


def test_a_chart_pushed_by_ferry_is_pulled_and_templated_by_helm(
    registry: Registry, charts: ChartRegistry, tmp_path: Path
) -> None:
    base = _base(registry)
    source = write_chart(tmp_path / "src", crds={"widgets.yaml": CRD}, values={"replicaCount": 3, "image": "y"})
    pushed = ferry_push(charts, tmp_path, f"{base}/shop", source)
    assert pushed.tag == "1.4.2" and not pushed.already_released
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm(tmp_path / "home", "pull", f"oci://{base}/shop", "--version", "1.4.2", "--plain-http", "-d", str(pulled))
    archive = pulled / "shop-1.4.2.tgz"
    assert archive.is_file()
    assert helm_template(tmp_path, archive) == objects(render_chart(source, INPUT))
    assert any(o["kind"] == "CustomResourceDefinition" for o in helm_template(tmp_path, archive))
    # helm's own view of the manifest: Helm's media types, Helm's annotations
    shown = helm(tmp_path / "home", "show", "chart", f"oci://{base}/shop", "--version", "1.4.2", "--plain-http")
    assert yaml.safe_load(shown.stdout)["name"] == "shop"


def test_a_ferry_push_is_idempotent_and_a_version_is_immutable(
    registry: Registry, charts: ChartRegistry, tmp_path: Path
) -> None:
    repository = f"{_base(registry)}/shop"
    source = write_chart(tmp_path / "a")
    first = ferry_push(charts, tmp_path, repository, source)
    again = ferry_push(charts, tmp_path, repository, source)
    assert again.already_released and again.digest == first.digest and again.layer_digest == first.layer_digest
    other = write_chart(tmp_path / "b", values={"replicaCount": 9, "greeting": "other", "image": "z"})
    with pytest.raises(ApplicationError) as err:
        ferry_push(charts, tmp_path, repository, other)
    assert err.value.type == "VersionAlreadyReleased" and "bump the version in Chart.yaml" in err.value.message


def test_build_metadata_is_an_underscore_in_the_tag_both_ways(
    registry: Registry, acts: RegistryActivities, charts: ChartRegistry, tmp_path: Path
) -> None:
    base = _base(registry)
    helm_push(tmp_path, base, "1.0.0+b1")
    repository = f"{base}/shop"
    assert acts.list_tags(ListTagsInput(repository=repository)).tags == ["1.0.0_b1"]
    assert charts.chart_versions(repository).versions == ["1.0.0+b1"]
    found = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.0.0"))
    assert found.ref is not None and found.ref.version == "1.0.0+b1"
    assert acts.resolve_desired(ResolveInput(repository=repository, version="1.0.0+b1")).ref == found.ref
    held = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.0.0", held=["1.0.0+b1"]))
    assert held.ref is None
    # Ferry pushes 1.0.0+b2 under 1.0.0_b2, and the real helm pulls it by its version
    pushed = ferry_push(charts, tmp_path, repository, write_chart(tmp_path / "b2", version="1.0.0+b2"))
    assert pushed.tag == "1.0.0_b2" and pushed.version == "1.0.0+b2"
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm(tmp_path / "home", "pull", f"oci://{repository}", "--version", "1.0.0+b2", "--plain-http", "-d", str(pulled))
    assert (pulled / "shop-1.0.0+b2.tgz").is_file()


def test_a_ferry_artifact_repository_resolves_as_before(
    registry: Registry, acts: RegistryActivities, tmp_path: Path
) -> None:
    """A tag that reads as a chart version with build metadata stands for it only in a Helm chart repository."""
    repository = f"{registry.host}/bundles/{uuid.uuid4().hex[:8]}"
    blob = tmp_path / "bundle.tar.gz"
    blob.write_bytes(gzip.compress(b""))
    for tag in ("1.0.0", "1.1.0", "1.2.0_b1"):
        acts.push_artifact(
            PushArtifactInput(
                repository=repository,
                tag=tag,
                file_path=str(blob),
                layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
                config_media_type=FLUX_CONFIG_MEDIA_TYPE,
            )
        )
    found = acts.resolve_desired(ResolveInput(repository=repository, semver=">=1.0.0"))
    assert found.ref is not None and found.ref.version == "1.1.0" and found.candidates == 3


def test_a_chart_signed_by_the_release_signer_verifies(
    registry: Registry, settings: Settings, charts: ChartRegistry, tmp_path: Path
) -> None:
    repository = f"{_base(registry)}/shop"
    pushed = ferry_push(charts, tmp_path, repository, write_chart(tmp_path / "src"))
    signer, public = key_pair()
    sign_release(settings, signer, repository, pushed.digest, publisher="ci-charts")
    verified = SignatureActivities(Registries(settings.registry)).verify_artifact(
        VerifyArtifactInput(
            repository=repository, digest=pushed.digest, publishers=[PublisherKey(name="ci-main", key=public)]
        )
    )
    assert verified.publisher == "ci-charts" and verified.key_name == "ci-main"
    _, stranger = key_pair()
    with pytest.raises(ApplicationError) as err:
        SignatureActivities(Registries(settings.registry)).verify_artifact(
            VerifyArtifactInput(
                repository=repository, digest=pushed.digest, publishers=[PublisherKey(name="other", key=stranger)]
            )
        )
    assert err.value.type == "VerificationFailed"


# ------------------------------------------------------------------------------------ hostile charts


def _tgz(entries: list[tuple[str, bytes | str]], link: tuple[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in entries:
            body = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return gzip.compress(raw.getvalue())


CHART_YAML = "apiVersion: v2\nname: shop\nversion: 1.0.0\n"


def _push_raw(
    registry: Registry, layer: bytes, config_media_type: str = HELM_CONFIG_MEDIA_TYPE, declared: int | None = None
) -> tuple[str, str]:
    """A manifest pushed byte by byte (what a hostile registry user can push): (repository, manifest digest)."""
    name = f"hostile-{uuid.uuid4().hex[:8]}/shop"
    config = json.dumps({"name": "shop", "version": "1.0.0", "apiVersion": "v2"}).encode()
    descs = []
    for blob, media_type in ((layer, HELM_CHART_MEDIA_TYPE), (config, config_media_type)):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = requests.post(f"http://{registry.host}/v2/{name}/blobs/uploads/", timeout=10)
        location = start.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry.host}{location}"
        sep = "&" if "?" in location else "?"
        put = requests.put(f"{location}{sep}digest={digest}", data=blob, timeout=10)
        assert put.status_code == 201, put.text
        descs.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    if declared is not None:
        descs[0]["size"] = declared
    body = json.dumps({"schemaVersion": 2, "config": descs[1], "layers": [descs[0]]}).encode()
    put = requests.put(
        f"http://{registry.host}/v2/{name}/manifests/1.0.0",
        data=body,
        headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE},
        timeout=10,
    )
    assert put.status_code == 201, put.text
    return f"{registry.host}/{name}", "sha256:" + hashlib.sha256(body).hexdigest()


def _refused(acts: RegistryActivities, tmp_path: Path, repository: str, digest: str) -> ApplicationError:
    cache = BundleCache(tmp_path / "cache", acts.pull_artifact)
    with pytest.raises(ApplicationError) as err:
        cache.ensure(repository, digest, HELM_CHART_MEDIA_TYPE)
    entries = list((tmp_path / "cache").glob("*/bundle")) if (tmp_path / "cache").exists() else []
    assert entries == [], "a refused chart left a cache entry"
    return err.value


def test_a_manifest_whose_config_is_not_helms_is_refused_before_its_layer_is_read(
    registry: Registry, acts: RegistryActivities, tmp_path: Path
) -> None:
    repository, digest = _push_raw(registry, _tgz([("shop/Chart.yaml", CHART_YAML)]), FLUX_CONFIG_MEDIA_TYPE)
    err = _refused(acts, tmp_path, repository, digest)
    assert err.type == "BadInput" and HELM_CONFIG_MEDIA_TYPE in err.message
    assert not list((tmp_path / "cache").rglob("*.tar.gz")), "the layer was downloaded"


@pytest.mark.parametrize(
    ("entries", "link", "kind", "why"),
    [
        ([("shop/Chart.yaml", CHART_YAML)], ("shop/templates/x.yaml", "/etc/passwd"), "UnsafeArchive", "link"),
        ([("shop/Chart.yaml", CHART_YAML), ("../evil.yaml", "a: 1")], None, "UnsafeArchive", "escapes"),
        ([("shop/Chart.yaml", CHART_YAML), ("other/Chart.yaml", CHART_YAML)], None, "BadInput", "2 top-level"),
        ([("Chart.yaml", CHART_YAML)], None, "BadInput", "outside the chart's directory"),
        ([("shop/values.yaml", "a: 1")], None, "BadInput", "no Chart.yaml"),
    ],
    ids=["symlink", "traversal", "two-top-directories", "top-level-chart-yaml", "not-a-chart"],
)
def test_a_hostile_chart_layer_is_refused(
    registry: Registry,
    acts: RegistryActivities,
    tmp_path: Path,
    entries: list[tuple[str, str]],
    link: tuple[str, str] | None,
    kind: str,
    why: str,
) -> None:
    repository, digest = _push_raw(registry, _tgz(entries, link))
    err = _refused(acts, tmp_path, repository, digest)
    assert err.type == kind and why in err.message, err.message


def test_a_layer_larger_than_declared_is_refused(registry: Registry, acts: RegistryActivities, tmp_path: Path) -> None:
    layer = _tgz([("shop/Chart.yaml", CHART_YAML), ("shop/values.yaml", "x: " + "a" * 4096)])
    repository, digest = _push_raw(registry, layer, declared=len(layer) - 100)
    err = _refused(acts, tmp_path, repository, digest)
    assert err.type == "DigestMismatch" and "manifest says" in err.message


def test_a_layer_over_the_download_bound_is_refused_unread(registry: Registry, tmp_path: Path) -> None:
    layer = _tgz([("shop/Chart.yaml", CHART_YAML), ("shop/big.txt", os.urandom(8192))])
    repository, digest = _push_raw(registry, layer)
    small = RegistryActivities(Registries(settings_for(registry, tmp_path, max_download_bytes=1024).registry))
    err = _refused(small, tmp_path, repository, digest)
    assert err.type == "UnsafeArchive" and "download limit" in err.message


def test_the_two_kinds_never_share_a_cache_entry(
    registry: Registry, acts: RegistryActivities, charts: ChartRegistry, tmp_path: Path
) -> None:
    repository = f"{_base(registry)}/shop"
    pushed = ferry_push(charts, tmp_path, repository, write_chart(tmp_path / "src"))
    cache = BundleCache(tmp_path / "cache", acts.pull_artifact)
    root, _ = cache.ensure(repository, pushed.digest, HELM_CHART_MEDIA_TYPE)
    with pytest.raises(ApplicationError) as err:  # the chart is no Flux bundle, cached or not
        cache.ensure(repository, pushed.digest)
    assert err.value.type == "BadInput" and FLUX_CONTENT_MEDIA_TYPE in err.value.message
    assert root.parent.name.startswith("chart-") and (root / "shop" / "Chart.yaml").is_file()
    assert parse_chart_yaml(yaml.safe_load((root / "shop" / "Chart.yaml").read_text())).version == "1.4.2"


def _gzip_with_comment(payload: bytes, comment: bytes) -> bytes:
    """A gzip member with an FCOMMENT header field (as Go's gzip.Header.Comment writes it)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    header = b"\x1f\x8b\x08\x10" + b"\x00" * 4 + b"\x00\xff" + comment + b"\x00"
    return header + body + struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)


def test_a_gzip_header_field_is_bounded(registry: Registry, acts: RegistryActivities, tmp_path: Path) -> None:
    tar = gzip.decompress(_tgz([("shop/Chart.yaml", CHART_YAML)]))
    repository, digest = _push_raw(registry, _gzip_with_comment(tar, b"c" * (70 * 1024)))
    err = _refused(acts, tmp_path, repository, digest)
    assert err.type == "UnsafeArchive" and "gzip header field over" in err.message
    # a short comment (what helm writes) is read past, and the chart is served
    repository, digest = _push_raw(registry, _gzip_with_comment(tar, b"Helm"))
    root, _ = BundleCache(tmp_path / "ok", acts.pull_artifact).ensure(repository, digest, HELM_CHART_MEDIA_TYPE)
    assert (root / "shop" / "Chart.yaml").read_text() == CHART_YAML


def test_ferrys_annotations_win_over_the_charts_and_pull_chart_reads_the_version(
    registry: Registry, acts: RegistryActivities, charts: ChartRegistry, tmp_path: Path
) -> None:
    """A Chart.yaml annotation cannot claim the publisher: the release's own annotations are added last."""
    repository = f"{_base(registry)}/shop"
    source = write_chart(tmp_path / "src", chart={"annotations": {ANNOTATION_PUBLISHED_BY: "mallory", "team": "a"}})
    packaged = package_chart(source, tmp_path / "pkg")
    pushed = charts.push_chart(
        PushChartInput(
            repository=repository,
            archive_path=str(packaged.path),
            created=CREATED,
            version="1.4.2",
            annotations={ANNOTATION_PUBLISHED_BY: "ci-charts"},
        )
    )
    manifest = acts.fetch_manifest(FetchManifestInput(repository=repository, reference=pushed.digest))
    assert manifest.annotations[ANNOTATION_PUBLISHED_BY] == "ci-charts" and manifest.annotations["team"] == "a"
    assert manifest.config_media_type == HELM_CONFIG_MEDIA_TYPE and manifest.media_type == OCI_MANIFEST_MEDIA_TYPE
    where = str(tmp_path / "p")
    pulled = charts.pull_chart(PullChartInput(repository=repository, digest=pushed.digest, dest_dir=where))
    assert pulled.version == "1.4.2" and Path(pulled.path).read_bytes() == packaged.path.read_bytes()
    with pytest.raises(ApplicationError) as err:  # the archive is not the version the release says
        charts.push_chart(
            PushChartInput(repository=repository, archive_path=str(packaged.path), created=CREATED, version="9.9.9")
        )
    assert err.value.type == "BadInput" and "the release says '9.9.9'" in err.value.message
