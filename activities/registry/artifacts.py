"""Registry activities for artifacts: push, resolve, list tags, fetch manifests, pull."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import requests
from temporalio import activity

from activities.errors import classified
from activities.registry.client import (
    MANIFEST_ACCEPT,
    _classified,
    _OneShotRegistry,
    _Oversized,
    _read_bounded,
    _RegistryHTTPError,
    _stream,
)
from activities.registry.credentials import Registries
from ferry.artifacts import (
    FetchManifestInput,
    Layer,
    ListTagsInput,
    ListTagsResult,
    Manifest,
    PullArtifactInput,
    PullArtifactResult,
    PushArtifactInput,
    PushArtifactResult,
    ResolveTagInput,
    ResolveTagResult,
)
from ferry.errors import ErrorType
from ferry.helm_oci import HELM_CONFIG_MEDIA_TYPE, oci_tag, tag_versions
from ferry.oci import OCI_MANIFEST_MEDIA_TYPE, is_digest, split_repository
from ferry.reconcile import ResolveInput, ResolveResult, VersionRef
from ferry.versions import SemverRange, select

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what the OCI distribution spec asks registries to accept at least


class RegistryActivities:
    """Registry activities, registered as bound methods on the worker."""

    def __init__(self, registries: Registries) -> None:
        self._registries = registries

    def _client(self, repository: str) -> tuple[_OneShotRegistry, str, str]:
        host, path = split_repository(repository)
        return self._registries.client(host), host, path

    @staticmethod
    def _check(reg: _OneShotRegistry, response: requests.Response, what: str) -> None:
        if response.status_code >= 400:
            raise _RegistryHTTPError(response.status_code, what, response.text)

    def _get_manifest(self, reg: _OneShotRegistry, host: str, path: str, reference: str) -> Manifest:
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{reference}"
        try:
            raw = _read_bounded(reg, url, MAX_MANIFEST_BYTES, {"Accept": MANIFEST_ACCEPT})
        except _Oversized as err:
            raise classified(
                ErrorType.BAD_INPUT, f"{url}: manifest larger than {MAX_MANIFEST_BYTES} bytes ({err}): refused"
            ) from None
        if raw is None:
            raise _RegistryHTTPError(404, url, "manifest unknown")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise classified(ErrorType.DIGEST_MISMATCH, f"{url} served a manifest whose digest is {digest}")
        try:
            body = json.loads(raw)
            manifest = Manifest(
                digest=digest,
                media_type=body.get("mediaType", OCI_MANIFEST_MEDIA_TYPE),
                config_media_type=body["config"]["mediaType"],
                config_digest=body["config"]["digest"],
                layers=[
                    Layer(
                        media_type=layer["mediaType"],
                        digest=layer["digest"],
                        size=layer["size"],
                        annotations=layer.get("annotations") or {},
                    )
                    for layer in body.get("layers", [])
                ],
                annotations=body.get("annotations") or {},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise classified(ErrorType.BAD_INPUT, f"{url}: not an OCI manifest: {str(err)[:300]}") from None
        return manifest

    @activity.defn(name="push_artifact")
    def push_artifact(self, input: PushArtifactInput) -> PushArtifactResult:
        """Push one file as a single-layer artifact and tag it. Idempotent for identical content (same
        digests); it does not check immutability — the release workflow does that first. Heartbeats on every
        registry request (blob upload, config, manifest)."""
        reg, host, path = self._client(input.repository)
        source = Path(input.file_path)
        if not source.is_file():
            raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{source} does not exist on this worker")
        target = f"{host}/{path}:{input.tag}"
        with tempfile.TemporaryDirectory(prefix="ferry-push-") as tmp, _classified(reg, f"push {target}"):
            config = Path(tmp) / "config.json"
            config.write_text(input.config_json)
            response = reg.push(
                target,
                files=[f"{source}:{input.layer_media_type}"],
                manifest_config=f"{config}:{input.config_media_type}",
                manifest_annotations=dict(input.annotations),
                disable_path_validation=True,
                quiet=True,
            )
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                digest = self._get_manifest(reg, host, path, input.tag).digest
        return PushArtifactResult(digest=digest, layer_digest=_file_digest(source), size=source.stat().st_size)

    @activity.defn(name="resolve_desired")
    def resolve_desired(self, input: ResolveInput) -> ResolveResult:
        """What an environment should run now: the pinned version's digest, or the highest tag in the
        range that is not held. Read-only; NotFound when a pinned version does not exist. An OCI Helm chart's
        versions are read from its tags as `helm` reads them (``1.0.0_b1`` is ``1.0.0+b1``, ferry.helm_oci)."""
        if input.version is not None:
            digest = self.resolve_tag(ResolveTagInput(repository=input.repository, tag=input.version)).digest
            assert digest is not None
            return ResolveResult(ref=VersionRef(version=input.version, digest=digest), candidates=1)
        tags = self.list_tags(ListTagsInput(repository=input.repository)).tags
        by_version = tag_versions(tags)
        ref = self._highest(input, by_version)
        if ref is not None and by_version[ref.version] != ref.version and not self._is_chart(input.repository, ref):
            # NB: only a Helm chart's tag stands for a version with build metadata; elsewhere such a tag is not a
            # release and is ignored, as it was before charts.
            ref = self._highest(input, {tag: tag for tag in tags})
        return ResolveResult(ref=ref, candidates=len(tags) if ref else 0)

    def _highest(self, input: ResolveInput, by_version: dict[str, str]) -> VersionRef | None:
        chosen = select(list(by_version), SemverRange(input.semver or ""), input.prereleases, frozenset(input.held))
        if chosen is None:
            return None
        digest = self.resolve_tag(ResolveTagInput(repository=input.repository, tag=by_version[chosen])).digest
        assert digest is not None
        return VersionRef(version=chosen, digest=digest)

    def _is_chart(self, repository: str, ref: VersionRef) -> bool:
        manifest = self.fetch_manifest(FetchManifestInput(repository=repository, reference=ref.digest))
        return manifest.config_media_type == HELM_CONFIG_MEDIA_TYPE

    @activity.defn(name="list_tags")
    def list_tags(self, input: ListTagsInput) -> ListTagsResult:
        """All tags of a repository (paginated by oras); an absent repository has no tags. Read-only."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"list tags of {input.repository}"):
            url = f"{reg.prefix}://{host}/v2/{path}/tags/list"
            tags: list[str] = []
            while url:
                response = reg.do_request(url, "GET")
                if response.status_code == 404:
                    return ListTagsResult(tags=[])
                self._check(reg, response, url)
                tags.extend(response.json().get("tags") or [])
                link = response.links.get("next", {}).get("url")
                url = f"{reg.prefix}://{host}{link}" if link and link.startswith("/") else (link or "")
        return ListTagsResult(tags=sorted(set(tags)))

    @activity.defn(name="resolve_tag")
    def resolve_tag(self, input: ResolveTagInput) -> ResolveTagResult:
        """The manifest digest a tag points to now (HEAD, no body). NotFound unless missing_ok. Read-only. A chart
        version with build metadata (``1.0.0+b1``) is looked up under Helm's tag (``1.0.0_b1``)."""
        reg, host, path = self._client(input.repository)
        tag = oci_tag(input.tag)
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{tag}"
        with _classified(reg, f"resolve {input.repository}:{input.tag}"):
            response = reg.do_request(url, "HEAD", headers={"Accept": MANIFEST_ACCEPT})
            if response.status_code == 404 and input.missing_ok:
                return ResolveTagResult(digest=None)
            if response.status_code == 404:
                raise classified(ErrorType.NOT_FOUND, f"{input.repository}:{input.tag} does not exist")
            self._check(reg, response, url)
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                digest = self._get_manifest(reg, host, path, tag).digest
        return ResolveTagResult(digest=digest)

    @activity.defn(name="fetch_manifest")
    def fetch_manifest(self, input: FetchManifestInput) -> Manifest:
        """The manifest at a tag or digest, digest-verified when fetched by digest. Read-only."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"fetch manifest {input.repository}@{input.reference}"):
            return self._get_manifest(reg, host, path, input.reference)

    @activity.defn(name="pull_artifact")
    def pull_artifact(self, input: PullArtifactInput) -> PullArtifactResult:
        """Download the layer of the given media type from the manifest at ``digest`` into ``dest_dir``,
        verifying its sha256 while streaming. Idempotent (the file is named by its digest; an existing,
        verified file is not downloaded again). Heartbeats per MiB."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"pull {input.repository}@{input.digest}"):
            manifest = self._get_manifest(reg, host, path, input.digest)
            layer = self._pullable_layer(input, manifest)
            dest = Path(input.dest_dir)
            dest.mkdir(parents=True, exist_ok=True)
            final = dest / (layer.digest.replace(":", "-") + ".tar.gz")
            if final.is_file() and _file_digest(final) == layer.digest:
                return PullArtifactResult(
                    path=str(final), layer_digest=layer.digest, size=layer.size, manifest=manifest
                )
            size = self._download(
                reg, f"{reg.prefix}://{host}/v2/{path}/blobs/{layer.digest}", layer, final, input.repository
            )
        return PullArtifactResult(path=str(final), layer_digest=layer.digest, size=size, manifest=manifest)

    def _pullable_layer(self, input: PullArtifactInput, manifest: Manifest) -> Layer:
        """The manifest's layer of ``input.layer_media_type``, refused unread unless the manifest's config is
        ``input.config_media_type`` (when given), its digest is a sha256 digest and its declared size is within the
        download limit."""
        if input.config_media_type and manifest.config_media_type != input.config_media_type:
            raise classified(
                ErrorType.BAD_INPUT,
                f"{input.repository}@{input.digest}: config media type {manifest.config_media_type[:100]!r} is not "
                f"{input.config_media_type}: not the kind of artifact expected here",
            )
        layer = manifest.layer(input.layer_media_type)
        if layer is None:
            raise classified(
                ErrorType.BAD_INPUT,
                f"{input.repository}@{input.digest} has no layer of media type {input.layer_media_type} "
                f"(it has: {', '.join(sorted({x.media_type for x in manifest.layers})) or 'none'})",
            )
        limit = self._registries.max_download_bytes
        if not is_digest(layer.digest):
            raise classified(
                ErrorType.BAD_INPUT,
                f"{input.repository}@{input.digest}: layer digest {layer.digest[:80]!r} is not a sha256 digest",
            )
        if layer.size < 0 or layer.size > limit:
            raise classified(
                ErrorType.UNSAFE_ARCHIVE,
                f"{input.repository}@{input.digest}: layer of "
                f"{layer.size} bytes is over the {limit}-byte download limit: refused unread",
            )
        return layer

    def _download(self, reg: _OneShotRegistry, url: str, layer: Layer, final: Path, repository: str) -> int:
        """Stream the blob at ``url`` into ``final`` (through a partial file beside it, replaced only once its
        sha256 is the layer's digest); never more than the layer's declared size on disk. Returns its size."""
        response = reg.do_request(url, "GET", stream=True)
        self._check(reg, response, url)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > layer.size:
            response.close()
            raise classified(
                ErrorType.DIGEST_MISMATCH,
                f"blob {layer.digest} is served as {declared} bytes; the manifest says {layer.size}: refused unread",
            )
        fd, partial = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out, contextlib.closing(response):
                size, got = _stream(response, out, layer)
            if got != layer.digest:
                raise classified(ErrorType.DIGEST_MISMATCH, f"blob {layer.digest} from {repository} hashed to {got}")
            os.replace(partial, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return size


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
