"""Bundles: the package_bundle activity, packaging into the work directory, rendering an environment path, and
the worker's content-addressed bundle cache. Manifests (scan, YAML bounds, kustomize) live in
activities.manifests, the tar.gz (write and safe extract) in activities.archive.

Contract:
- ``package_bundle`` (activity, runs on the CI host's task queue): idempotent — the same directory content
  gives the same bytes and digest on any machine (sorted entries, zero mtime/uid/gid, empty user/group
  names, normalized modes, fixed gzip header). Bad input (unsafe files, invalid manifests) is BadInput,
  non-retryable; a vanished directory is BundleSourceGone (retryable until the release deadline).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.archive import _digest, safe_extract, write_tarball
from activities.errors import classified
from activities.helm.charts import check_chart, package_chart
from activities.manifests import (
    KUSTOMIZATION_FILES,
    MANIFEST_SUFFIXES,
    BundleError,
    BundleFile,
    _read_manifest,
    kustomize,
    parse_documents,
    scan,
)
from activities.validate import validate
from ferry.artifacts import PullArtifactInput
from ferry.errors import ErrorType
from ferry.helm_oci import HELM_CHART_MEDIA_TYPE, HELM_CONFIG_MEDIA_TYPE
from ferry.oci import ANNOTATION_REVISION, FLUX_CONTENT_MEDIA_TYPE
from ferry.release import (
    PackageBundleInput,
    PackageBundleResult,
    PackageChartInput,
    PackageChartResult,
    chart_version_problem,
)

__all__ = [
    "BundleActivities",
    "BundleCache",
    "BundleError",
    "BundleFile",
    "ChartActivities",
    "bundle_root",
    "default_work_dir",
    "package",
    "packaged_chart",
    "render",
    "safe_extract",
    "scan",
    "validate",
    "write_tarball",
]


def bundle_root(directory: Path) -> Path:
    """The root of the bundle directory is in: the worker cache's ``<entry>/bundle`` (next to meta.json or
    a pulled blob), else directory itself."""
    for candidate in (directory, *directory.parents):
        if candidate.name == "bundle" and (
            (candidate.parent / "meta.json").exists() or (candidate.parent / "blob").exists()
        ):
            return candidate
    return directory


def render(directory: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """The objects an environment path renders to: kustomize when there is a kustomization, else every
    YAML document under it (sorted by path). Offline: remote kustomize resources are refused, and nothing is
    loaded from outside ``root`` (default: the bundle the directory belongs to). Errors: BundleError."""
    if not directory.is_dir():
        raise BundleError(f"{directory.name}: path does not exist in the artifact")
    root = root or bundle_root(directory)
    if any((directory / name).is_file() for name in KUSTOMIZATION_FILES):
        return parse_documents(kustomize(directory, root), f"{directory.name} (kustomize build)")
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
            where = path.relative_to(directory).as_posix()
            objects.extend(parse_documents(_read_manifest(path, where), where))
    return objects


def default_work_dir() -> Path:
    """Where the CI host keeps packaged bundles, each named by its digest."""
    return Path(tempfile.gettempdir()) / "ferry-bundles"


def package(root: Path, work_dir: Path, files: list[BundleFile]) -> PackageBundleResult:
    """Write the deterministic tar.gz of `files` as ``<work_dir>/sha256-<hex>.tar.gz`` (content-addressed)."""
    fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=_ensure(work_dir))
    os.close(fd)
    digest = write_tarball(root, files, Path(tmp))
    final = work_dir / (digest.replace(":", "-") + ".tar.gz")
    os.replace(tmp, final)
    return PackageBundleResult(path=str(final), layer_digest=digest, size=final.stat().st_size, files=len(files))


class BundleActivities:
    """Bundle activities for the CI host (package) — registered by `ferry release`'s in-process worker.
    `prepared`: bundle directory -> the PackageBundleResult `ferry release` validated and packaged before starting
    the workflow, so the activity neither parses nor tars the bundle a second time."""

    def __init__(self, work_dir: Path | None = None, prepared: dict[str, PackageBundleResult] | None = None) -> None:
        self._work_dir = work_dir or default_work_dir()
        self._prepared = dict(prepared or {})

    @activity.defn(name="package_bundle")
    def package_bundle(self, input: PackageBundleInput) -> PackageBundleResult:
        """Validate and package the bundle directory; idempotent (content-addressed). BundleSourceGone when the
        directory is not on this host, BadInput (non-retryable) for an invalid bundle."""
        prepared = self._prepared.get(input.bundle_dir)
        # the packaged file is named by its digest; re-hashing it (cheap) proves it is still those bytes
        if (
            prepared is not None
            and Path(prepared.path).is_file()
            and _digest(Path(prepared.path)) == prepared.layer_digest
        ):
            return prepared
        root = Path(input.bundle_dir)
        if not root.exists():
            raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{root} does not exist on this host")
        try:
            validate(root, input.max_file_bytes)
            files = scan(root, input.max_file_bytes)
        except BundleError as err:
            raise classified(ErrorType.BAD_INPUT, str(err)) from err
        return package(root, self._work_dir, files)


class ChartActivities:
    """`ferry release --chart`'s packaging on the CI host — registered by its in-process worker. ``prepared``: chart
    directory -> the PackageChartResult `ferry release` checked and packaged before starting the workflow."""

    def __init__(self, work_dir: Path | None = None, prepared: dict[str, PackageChartResult] | None = None) -> None:
        self._work_dir = work_dir or default_work_dir()
        self._prepared = dict(prepared or {})

    @activity.defn(name="package_chart")
    def package_chart(self, input: PackageChartInput) -> PackageChartResult:
        """Package and check the chart directory (deterministic: NAME-VERSION.tgz, activities.helm.charts);
        idempotent. BundleSourceGone when the directory is not on this host; BadInput (non-retryable) for an
        invalid chart or a Chart.yaml version other than ``input.version``."""
        prepared = self._prepared.get(input.chart_dir)
        if prepared is None or not (
            Path(prepared.path).is_file() and _digest(Path(prepared.path)) == prepared.layer_digest
        ):
            root = Path(input.chart_dir)
            if not root.exists():
                raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{root} does not exist on this host")
            try:
                prepared = packaged_chart(root, self._work_dir)
            except BundleError as err:
                raise classified(ErrorType.BAD_INPUT, str(err)) from err
        problem = chart_version_problem(input.version, prepared.version, Path(input.chart_dir).name)
        if problem:
            raise classified(ErrorType.BAD_INPUT, problem)
        return prepared


def packaged_chart(chart_dir: Path, work_dir: Path) -> PackageChartResult:
    """Package ``chart_dir`` into ``<work_dir>/chart-sha256-<hex>/NAME-VERSION.tgz`` (content-addressed) and check
    it; BundleError names the first problem (UnsafeArchive ApplicationError for a hostile archive)."""
    scratch = Path(tempfile.mkdtemp(prefix=".chart-", dir=_ensure(work_dir)))
    try:
        chart = package_chart(chart_dir, scratch)
        digest = _digest(chart.path)
        final = work_dir / ("chart-" + digest.replace(":", "-"))
        with contextlib.suppress(OSError):  # already there (the same bytes): keep it
            os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    path = final / chart.path.name
    return PackageChartResult(
        path=str(path),
        layer_digest=digest,
        size=path.stat().st_size,
        files=chart.files,
        name=chart.metadata.name,
        version=chart.metadata.version,
    )


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class BundleCache:
    """Content-addressed artifact cache on the worker: ``<cache_dir>/<digest>/bundle`` extracted and verified.
    A hit makes no registry request at all; a miss pulls by digest (never by tag) and extracts safely.

    ``ensure(..., HELM_CHART_MEDIA_TYPE)`` serves an OCI Helm chart: the manifest's config must be Helm's (BadInput
    otherwise, before the layer is read), the layer passes the worker's download bound and ``safe_extract`` (no links,
    no traversal, no devices, Helm's 100 MiB cap and the bundles' per-file bound), must hold exactly one top directory,
    and that directory must be a chart (activities.helm.charts.check_chart: Chart.yaml, values, vendored
    dependencies). Its root (``<cache_dir>/chart-<digest>/bundle``) then holds only that directory
    (``<root>/shop/Chart.yaml``). Charts have their own entries, so a digest cached as one kind is never served as
    the other."""

    def __init__(self, cache_dir: Path, pull: Any) -> None:
        self._dir = cache_dir
        self._pull = pull  # RegistryActivities.pull_artifact: (PullArtifactInput) -> PullArtifactResult
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def directory(self) -> Path:
        """The cache's directory (the chart render cache lives under it: activities.helm.deliver)."""
        return self._dir

    def ensure(self, repository: str, digest: str, media_type: str = FLUX_CONTENT_MEDIA_TYPE) -> tuple[Path, str]:
        """-> (bundle root, revision annotation)."""
        chart = media_type == HELM_CHART_MEDIA_TYPE
        if not chart and media_type != FLUX_CONTENT_MEDIA_TYPE:
            raise ValueError(f"the bundle cache serves Flux content and Helm charts, not {media_type}")
        key = ("chart-" if chart else "") + digest.replace(":", "-")
        entry = self._dir / key
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            meta = entry / "meta.json"
            if meta.is_file():
                return entry / "bundle", json.loads(meta.read_text()).get("revision", "")
            pulled = self._pull(
                PullArtifactInput(
                    repository=repository,
                    digest=digest,
                    dest_dir=str(entry / "blob"),
                    layer_media_type=media_type,
                    config_media_type=HELM_CONFIG_MEDIA_TYPE if chart else "",
                )
            )
            for stale in entry.glob(".extract-*"):  # a worker killed mid-extraction leaves one
                shutil.rmtree(stale, ignore_errors=True)
            staging = entry / f".extract-{uuid.uuid4().hex}"
            layer = _bare_gzip(Path(pulled.path)) if chart else Path(pulled.path)
            safe_extract(layer, staging)  # removes staging itself on any failure
            if chart:
                _checked_chart(staging, f"{repository}@{digest}")
            final = entry / "bundle"
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            shutil.rmtree(entry / "blob", ignore_errors=True)
            revision = pulled.manifest.annotations.get(ANNOTATION_REVISION, "")
            record = {"repository": repository, "digest": digest, "revision": revision}
            meta.write_text(json.dumps(record | {"layer_digest": pulled.layer_digest, "media_type": media_type}))
            return final, revision


def _checked_chart(staging: Path, where: str) -> None:
    """An extracted chart layer: exactly one top directory, and a chart (BadInput naming the problem); the
    staging directory is removed on refusal."""
    try:
        tops = sorted(staging.iterdir())
        loose = [p.name for p in tops if not p.is_dir()]
        if loose:
            raise BundleError(f"{loose[0]!r} lies outside the chart's directory (a chart holds one top directory)")
        if len(tops) != 1:
            raise BundleError(f"{len(tops)} top-level directories; a chart archive holds exactly one")
        check_chart(tops[0])
    except BundleError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise classified(ErrorType.BAD_INPUT, f"{where}: chart refused: {err}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2
MAX_GZIP_HEADER_FIELD = 64 * 1024


def _bare_gzip(path: Path) -> Path:
    """The same gzip member with a bare 10-byte header (``<path>.bare``): the deflate data and trailer unchanged.

    NB: `helm package` writes a gzip header with FEXTRA and FCOMMENT (Go's gzip.Header Extra/Comment, helm v4.3.2
    pkg/chart/v2/util/save.go), and Python 3.11's tarfile stream mode ("r|gz", which safe_extract uses) reads FEXTRA
    through the decompressor and fails with "invalid compressed data" on every chart the real helm packaged. The
    header carries nothing Ferry uses; the layer's digest was verified on the original bytes."""
    out = path.with_name(path.name + ".bare")
    with path.open("rb") as src:
        head = src.read(10)
        if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
            raise classified(ErrorType.UNSAFE_ARCHIVE, f"{path.name}: not a gzip (deflate) archive")
        flags = head[3]
        if flags & _FEXTRA:
            size = int.from_bytes(src.read(2), "little")
            if len(src.read(size)) != size:
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"{path.name}: truncated gzip header")
        for flag in (_FNAME, _FCOMMENT):
            if flags & flag:
                _skip_zero_terminated(src, path.name)
        if flags & _FHCRC:
            src.read(2)
        with out.open("wb") as dst:
            dst.write(head[:3] + b"\x00" + b"\x00\x00\x00\x00" + head[8:10])
            shutil.copyfileobj(src, dst)
    return out


def _skip_zero_terminated(src: Any, name: str) -> None:
    for _ in range(MAX_GZIP_HEADER_FIELD):
        byte = src.read(1)
        if byte in (b"", b"\x00"):
            if byte == b"":
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"{name}: truncated gzip header")
            return
    raise classified(ErrorType.UNSAFE_ARCHIVE, f"{name}: a gzip header field over {MAX_GZIP_HEADER_FIELD} bytes")
