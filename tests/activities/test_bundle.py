"""Bundles against the real registry and real kustomize: the worker's artifact cache and kustomize offline."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.archive import write_tarball
from activities.bundle import BundleCache, render
from activities.manifests import BundleError, scan
from activities.registry import Registries, RegistryActivities
from activities.validate import validate
from devstack.registry import Registry
from ferry.artifacts import PushArtifactInput
from ferry.oci import FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE
from tests.kit.stack import settings_for

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {a: '1'}\n"


def _push(acts: RegistryActivities, registry: Registry, archive: Path) -> tuple[str, str]:
    repo = f"{registry.host}/bundles/{uuid.uuid4().hex[:10]}"
    pushed = acts.push_artifact(
        PushArtifactInput(
            repository=repo,
            tag="1.0.0",
            file_path=str(archive),
            layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
            config_media_type=FLUX_CONFIG_MEDIA_TYPE,
        )
    )
    return repo, pushed.digest


def _hostile_archive(path: Path) -> Path:
    """Good files first (so extraction is well under way), then a link out of the tree."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for i in range(20):
            data = (CM % f"cm{i}").encode()
            info = tarfile.TarInfo(f"app/cm{i}.yaml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("app/passwd.yaml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    path.write_bytes(raw.getvalue())
    return path


def test_failed_extraction_leaves_no_staging_dir(registry: Registry, tmp_path: Path) -> None:
    """Issue 11: a failed extraction left its `.extract-*` staging dir behind, every interval."""
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    repo, digest = _push(acts, registry, _hostile_archive(tmp_path / "bad.tar.gz"))
    cache = BundleCache(tmp_path / "cache", acts.pull_artifact)
    for _ in range(3):  # three reconcile intervals
        with pytest.raises(ApplicationError) as err:
            cache.ensure(repo, digest)
        assert err.value.type == "UnsafeArchive" and err.value.non_retryable
        assert "is a link" in str(err.value)
    assert list((tmp_path / "cache").rglob(".extract-*")) == []
    assert not list((tmp_path / "cache").rglob("bundle")), "nothing half-extracted is ever served"


def test_a_stale_staging_dir_from_a_killed_worker_is_cleared(registry: Registry, tmp_path: Path) -> None:
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    src = tmp_path / "src"
    src.mkdir()
    (src / "cm.yaml").write_text(CM % "ok")
    write_tarball(src, scan(src), tmp_path / "ok.tar.gz")
    repo, digest = _push(acts, registry, tmp_path / "ok.tar.gz")
    entry = tmp_path / "cache" / digest.replace(":", "-")
    (entry / ".extract-killed" / "app").mkdir(parents=True)
    root, _ = BundleCache(tmp_path / "cache", acts.pull_artifact).ensure(repo, digest)
    assert [o["metadata"]["name"] for o in render(root)] == ["ok"]
    assert list(entry.glob(".extract-*")) == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = (CM % "remote").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a manifest and records every request it gets."""
    handler = type("Recorder", (_Recorder,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()


def _kustomization(root: Path, body: str) -> Path:
    (root / "overlay").mkdir(parents=True)
    (root / "base").mkdir()
    (root / "base" / "cm.yaml").write_text(CM % "base")
    (root / "base" / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (root / "overlay" / "kustomization.yaml").write_text(body)
    return root / "overlay"


def test_remote_resource_is_refused_at_release_and_render_and_never_fetched(
    tmp_path: Path, http_server: tuple[str, list[str]]
) -> None:
    """Issue 11 (SSRF): kustomize fetched remote resources named in an artifact's kustomization on the worker.
    Here the remote is a server on the worker's loopback (which Go never proxies): it must get no request."""
    host, requests = http_server
    overlay = _kustomization(tmp_path, f"resources:\n- ../base\n- http://{host}/cm.yaml\n")
    with pytest.raises(
        BundleError,
        match=r"overlay/kustomization.yaml: resources entry 'http://.*' is a URL; "
        r"remote resources are refused \(kustomize runs offline\)",
    ):
        validate(tmp_path)
    with pytest.raises(BundleError, match="remote resources are refused"):
        render(overlay, tmp_path)
    assert requests == []


@pytest.mark.parametrize(
    "body, what",
    [
        (
            "resources:\n- github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0\n",
            "a remote repository path",
        ),
        ("bases:\n- https://github.com/org/repo.git\n", "is a URL"),
        ("components:\n- git@github.com:org/repo.git\n", "is a URL"),
        ("resources:\n- github.com/org/repo?ref=main\n", "a git ref"),
        ("resources:\n- github.com/org/repo\n", "is not a file or directory in the bundle"),
        ("resources:\n- ../../../etc\n", "points outside the bundle"),
        ("resources: [../base]\npatches:\n- path: https://example.com/p.yaml\n", "patches entry 'https://example.com"),
        (
            "resources: [../base]\nconfigMapGenerator:\n- name: x\n  files: [k=https://example.com/f]\n",
            "configMapGenerator.files entry",
        ),
    ],
)
def test_remote_bases_components_and_files_are_refused(tmp_path: Path, body: str, what: str) -> None:
    overlay = _kustomization(tmp_path / "bundle", body)
    with pytest.raises(BundleError, match="refused|outside the bundle") as err:
        render(overlay, tmp_path / "bundle")
    assert what in str(err.value)


def test_a_base_reached_through_a_local_base_is_checked_too(tmp_path: Path) -> None:
    overlay = _kustomization(tmp_path, "resources: [../base]\n")
    (tmp_path / "base" / "kustomization.yaml").write_text("resources: [cm.yaml, 'https://example.com/x.yaml']\n")
    with pytest.raises(BundleError, match="base/kustomization.yaml: resources entry 'https://example.com/x.yaml'"):
        render(overlay, tmp_path)


def test_local_kustomizations_still_render(tmp_path: Path) -> None:
    overlay = _kustomization(tmp_path, "resources: [../base]\nnamePrefix: prod-\n")
    assert [o["metadata"]["name"] for o in render(overlay, tmp_path)] == ["prod-base"]
    assert validate(tmp_path) == 2  # base and overlay each build one ConfigMap


def test_render_in_the_cache_is_confined_to_its_bundle(registry: Registry, tmp_path: Path) -> None:
    """A cached artifact's kustomization may not reach the cache's other entries or the worker's files."""
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    src = tmp_path / "src"
    (src / "overlay").mkdir(parents=True)
    (src / "overlay" / "kustomization.yaml").write_text("resources: [../../../other-entry]\n")
    write_tarball(src, scan(src), tmp_path / "escape.tar.gz")
    repo, digest = _push(acts, registry, tmp_path / "escape.tar.gz")
    cache = tmp_path / "cache"
    (cache / "other-entry").mkdir(parents=True)
    (cache / "other-entry" / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (cache / "other-entry" / "cm.yaml").write_text(CM % "someone-elses")
    root, _ = BundleCache(cache, acts.pull_artifact).ensure(repo, digest)
    with pytest.raises(BundleError, match="points outside the bundle"):
        render(root / "overlay")


def test_the_example_overlays_render_from_the_cache(registry: Registry, tmp_path: Path) -> None:
    """Overlays reach their base through ../../base: inside the cached bundle, so allowed."""
    example = Path(__file__).resolve().parents[2] / "examples" / "app"
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    write_tarball(example, scan(example), tmp_path / "app.tar.gz")
    repo, digest = _push(acts, registry, tmp_path / "app.tar.gz")
    root, _ = BundleCache(tmp_path / "cache", acts.pull_artifact).ensure(repo, digest)
    for overlay in ("staging", "production"):
        objects = render(root / "overlays" / overlay)
        assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap"}


def test_a_release_with_a_chart_is_validated_as_a_chart_beside_its_manifests_and_values(tmp_path: Path) -> None:
    from tests.kit.charts import write_chart

    (tmp_path / "charts").mkdir()
    write_chart(tmp_path / "charts")  # templates are Go templates, not YAML: checked as a chart, not parsed
    (tmp_path / "values").mkdir()
    (tmp_path / "values" / "production.yaml").write_text("replicaCount: 3\n---\ngreeting: hi\n")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    assert validate(tmp_path) == 1  # the Namespace; the chart renders per environment on the worker
    (tmp_path / "values" / "broken.yaml").write_text("kind: Deployment\nreplicaCount: 3\n")  # half a manifest
    with pytest.raises(BundleError, match="broken.yaml"):
        validate(tmp_path)
    (tmp_path / "values" / "broken.yaml").unlink()
    remote = {"dependencies": [{"name": "redis", "version": "1.0.0", "repository": "https://charts.example.com"}]}
    write_chart(tmp_path / "charts", name="cache", chart=remote)
    with pytest.raises(BundleError, match="helm dependency build"):
        validate(tmp_path)


def test_a_release_of_only_a_chart_is_a_release(tmp_path: Path) -> None:
    from tests.kit.charts import write_chart

    write_chart(tmp_path)
    assert validate(tmp_path) == 0
