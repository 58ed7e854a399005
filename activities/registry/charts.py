"""Helm charts in an OCI registry, in Helm's own layout (ferry.helm_oci; helm v4.3.2 pkg/registry), so the real
`helm pull oci://…`/`helm template` read what Ferry pushes and Ferry reads what `helm push` pushes.

Contract:
- ``push_chart`` (activity, on `ferry release --chart`'s CI queue): the chart layer and the config blob through
  oras's ``upload_blob`` (skipped when the registry has them), then the manifest PUT as the exact bytes Ferry hashed
  (compact JSON, no mediaType in the body, as Helm writes it), tagged ``tag_for(version)``. A tag that exists with the
  same chart layer is an idempotent success (``already_released``); with another layer it is VersionAlreadyReleased
  (non-retryable): versions are immutable. An archive whose version is not the expected one is BadInput. Heartbeats
  on every registry request.
- ``pull_chart``: by manifest digest only, through RegistryActivities.pull_artifact (a config that is not Helm's is
  BadInput before any layer is read; the layer digest-verified, its declared size capped by the worker's download
  bound and enforced while streaming).
- ``chart_versions``: the repository's tags read as `helm` lists them (``version_for``).
The registry client's host rules apply (activities/registry/client.py): credentials per host, never sent to
another host a Location or Link header names; no oras retry loop; failures classified into ferry.errors.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from temporalio import activity

from activities.errors import classified
from activities.registry.artifacts import RegistryActivities, _file_digest
from activities.registry.client import _classified, _RegistryHTTPError
from activities.registry.credentials import Registries
from ferry.artifacts import FetchManifestInput, ListTagsInput, PullArtifactInput, ResolveTagInput
from ferry.errors import ErrorType
from ferry.helm_oci import (
    ANNOTATION_VERSION,
    HELM_CHART_MEDIA_TYPE,
    HELM_CONFIG_MEDIA_TYPE,
    ChartMetadata,
    ChartVersionsResult,
    PullChartInput,
    PullChartResult,
    PushChartInput,
    PushChartResult,
    chart_config,
    chart_manifest,
    chart_versions,
    descriptor,
    manifest_bytes,
    oci_annotations,
    tag_for,
)
from ferry.oci import OCI_MANIFEST_MEDIA_TYPE, split_repository


class ChartRegistry:
    """Chart push, pull and listing over one worker's registry clients. ``read_metadata`` reads (and checks) a
    chart archive's Chart.yaml on this host when a push is not given it (activities.helm.charts.check_chart)."""

    def __init__(self, registries: Registries, read_metadata: Callable[[Path], ChartMetadata] | None = None) -> None:
        self._registries = registries
        self._artifacts = RegistryActivities(registries)
        self._read_metadata = read_metadata

    @activity.defn(name="push_chart")
    def push_chart(self, input: PushChartInput) -> PushChartResult:
        """Push ``input.archive_path`` in Helm's layout (see the module's contract). Idempotent."""
        host, path = split_repository(input.repository)
        reg = self._registries.client(host)
        archive = Path(input.archive_path)
        if not archive.is_file():
            raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{archive} does not exist on this host")
        meta = self._metadata(input, archive)
        tag = tag_for(meta.version)
        layer = descriptor(HELM_CHART_MEDIA_TYPE, _file_digest(archive), archive.stat().st_size)
        result = PushChartResult(
            repository=input.repository,
            tag=tag,
            version=meta.version,
            digest="",
            layer_digest=str(layer["digest"]),
            size=int(layer["size"]),
        )
        existing = self._artifacts.resolve_tag(ResolveTagInput(repository=input.repository, tag=tag, missing_ok=True))
        if existing.digest is not None:
            return self._same_release(input.repository, tag, existing.digest, result)
        config = chart_config(meta)
        annotations = oci_annotations(meta, input.created) | dict(input.annotations)
        body = manifest_bytes(chart_manifest(_config_desc(config), [layer], annotations))
        target = f"{host}/{path}:{tag}"
        with tempfile.TemporaryDirectory(prefix="ferry-chart-push-") as tmp, _classified(reg, f"push {target}"):
            config_file = Path(tmp) / "config.json"
            config_file.write_bytes(config)
            container = reg.get_container(target)
            for blob, desc in ((archive, layer), (config_file, _config_desc(config))):
                response = reg.upload_blob(str(blob), container, desc)
                _ok(response.status_code, f"upload {desc['digest']} to {target}", response.text)
            url = f"{reg.prefix}://{host}/v2/{path}/manifests/{tag}"
            response = reg.do_request(url, "PUT", data=body, headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE})
            _ok(response.status_code, f"PUT {url}", response.text)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise classified(
                ErrorType.DIGEST_MISMATCH,
                f"{target}: the registry stored the manifest as {served}, Ferry sent {digest}",
            )
        return result.model_copy(update={"digest": digest})

    def _metadata(self, input: PushChartInput, archive: Path) -> ChartMetadata:
        meta = input.metadata
        if meta is None:
            if self._read_metadata is None:
                raise classified(ErrorType.BAD_INPUT, f"{archive.name}: no Chart.yaml given and no reader to read it")
            try:
                meta = self._read_metadata(archive)
            except ValueError as err:  # BundleError, ChartError
                raise classified(ErrorType.BAD_INPUT, f"{archive.name}: {err}") from None
        if input.version and meta.version != input.version:
            raise classified(
                ErrorType.BAD_INPUT,
                f"{archive.name}: Chart.yaml says version {meta.version!r}, the release says {input.version!r}",
            )
        return meta

    def _same_release(self, repository: str, tag: str, digest: str, result: PushChartResult) -> PushChartResult:
        manifest = self._artifacts.fetch_manifest(FetchManifestInput(repository=repository, reference=digest))
        layer = manifest.layer(HELM_CHART_MEDIA_TYPE)
        if layer is None or layer.digest != result.layer_digest:
            raise classified(
                ErrorType.VERSION_ALREADY_RELEASED,
                f"{repository}:{tag} exists with another chart layer ({layer.digest if layer else 'none'}; this "
                f"chart is {result.layer_digest}): chart versions are immutable, bump the version in Chart.yaml",
            )
        return result.model_copy(update={"digest": digest, "already_released": True})

    def pull_chart(self, input: PullChartInput) -> PullChartResult:
        """The chart layer of the manifest at ``input.digest`` into ``input.dest_dir``, verified (see the module's
        contract). Idempotent."""
        pulled = self._artifacts.pull_artifact(
            PullArtifactInput(
                repository=input.repository,
                digest=input.digest,
                dest_dir=input.dest_dir,
                layer_media_type=HELM_CHART_MEDIA_TYPE,
                config_media_type=HELM_CONFIG_MEDIA_TYPE,
            )
        )
        return PullChartResult(
            path=pulled.path,
            layer_digest=pulled.layer_digest,
            size=pulled.size,
            version=pulled.manifest.annotations.get(ANNOTATION_VERSION, ""),
        )

    def chart_versions(self, repository: str) -> ChartVersionsResult:
        """The chart versions among the repository's tags (read-only; an absent repository has none)."""
        tags = self._artifacts.list_tags(ListTagsInput(repository=repository)).tags
        return ChartVersionsResult(versions=chart_versions(tags), tags=len(tags))


def _config_desc(config: bytes) -> dict[str, object]:
    return descriptor(HELM_CONFIG_MEDIA_TYPE, "sha256:" + hashlib.sha256(config).hexdigest(), len(config))


def _ok(status: int, what: str, text: str) -> None:
    if status not in (200, 201, 202):
        raise _RegistryHTTPError(status, what, text)
