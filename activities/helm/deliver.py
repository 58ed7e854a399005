"""What a reconcile of a chart environment applies: the chart rendered for the target cluster, through a cache.

Contract of ``render_release``:
- The chart is the release's directory ``HelmSource.chart``, or (``chart == ""``) the one top directory of an OCI
  chart artifact; values files are relative to the release root (an OCI chart: to the chart). Plain manifests at
  ``HelmSource.manifests`` are rendered beside it (activities.bundle.render, the bundles' rules).
- ``.Capabilities`` are the target cluster's (activities.cluster.capabilities), ``.Release.Namespace`` the
  environment's namespace, ``.Release.IsUpgrade`` whether the environment has an inventory on the cluster.
- The render is cached on the worker at ``<cache>/renders/<render_key>.json``: the key names the release digest and
  chart path (the chart's bytes and the values files are inside the digest), the inline values, the capabilities,
  the release name and namespace, is-upgrade and the helm build (ferry.helm_render.render_key). An unchanged
  iteration runs no helm process. Entries are written atomically; at most MAX_CACHED_RENDERS are kept (oldest first
  out). A cache file that does not read back is rendered again, never trusted. A render with `lookup` opted in
  (activities.helm.lookup) reads the cluster's state, so it is never cached.
- Errors: BundleError (RENDER_FAILED) naming the file or Helm's own message; HelmMissing is turned into one with
  the `make helm` fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.bundle import render
from activities.helm.binary import HelmMissing, helm_path
from activities.helm.lookup import ClusterAccess
from activities.helm.render import render_chart
from activities.manifests import BundleError
from ferry.helm_render import (
    Capabilities,
    HelmRenderInput,
    Rendered,
    RenderRefused,
    release_id,
    render_key,
    split_rendered,
    values_digest,
)
from ferry.helm_spec import HelmSource
from ferry.hooks import CRD_KIND
from ferry.plan import ObjectId

logger = logging.getLogger(__name__)
MAX_CACHED_RENDERS = 2048  # above a fleet's environments per worker, or they would take turns missing
RENDERS_DIR = "renders"
CRD_GROUP = "apiextensions.k8s.io"


@dataclass(frozen=True)
class ChartRender:
    """A chart environment's objects (its crds/ CRDs first, then the release and any manifests beside it), which of
    them came from crds/ (by name), its hooks and what Helm would ignore; ``cached``: no helm process ran."""

    objects: list[dict[str, Any]]  # ``release``: the release's identity (ferry.helm_render.release_id)
    crd_names: frozenset[str]
    rendered: Rendered
    cached: bool
    prune_crds: bool = False
    release: str = ""

    def is_crd(self, oid: ObjectId) -> bool:
        """Whether ``oid`` is one of the chart's crds/ CustomResourceDefinitions."""
        return oid.kind == CRD_KIND and oid.group == CRD_GROUP and oid.name in self.crd_names


def chart_dir(root: Path, helm: HelmSource) -> Path:
    """The chart directory of the release (or the OCI chart's one top directory)."""
    if helm.chart:
        return root / helm.chart if helm.chart != "." else root
    entries = [p for p in root.iterdir()] if root.is_dir() else []
    if len(entries) != 1 or not entries[0].is_dir():
        raise BundleError(f"the chart artifact holds {len(entries)} top entries, not one chart directory")
    return entries[0]


def _helm_build() -> str:
    path = helm_path()
    stat = path.stat()
    return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"


class RenderCache:
    """``<dir>/<key>.json``: the (source, object) pairs of one render in output order (re-split on read)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def load(self, key: str) -> Rendered | None:
        try:
            pairs = json.loads((self._dir / f"{key}.json").read_text())
            return split_rendered((str(source), obj) for source, obj in pairs)
        except (OSError, ValueError, TypeError, RenderRefused):
            return None

    def store(self, key: str, rendered: Rendered) -> None:
        """Best effort: the cache only saves a render, so a full disk or a concurrent eviction loses nothing."""
        pairs = [(o.source, o.object) for o in (*rendered.crds, *rendered.manifests)]
        pairs += [(h.path, h.object) for h in rendered.hooks]
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".render-")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(pairs, out, separators=(",", ":"))
                os.replace(tmp, self._dir / f"{key}.json")
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)  # gone when it was renamed
            self._evict()
        except OSError as err:
            logger.warning("render cache %s: not stored (%s)", self._dir, err.strerror or err)

    def _evict(self) -> None:
        entries: list[tuple[float, Path]] = []
        for path in self._dir.glob("*.json"):
            with contextlib.suppress(OSError):  # another thread evicted it meanwhile
                entries.append((path.stat().st_mtime, path))
        for _, stale in sorted(entries)[: max(0, len(entries) - MAX_CACHED_RENDERS)]:
            with contextlib.suppress(OSError):
                stale.unlink()


def render_release(
    root: Path,
    digest: str,
    helm: HelmSource,
    namespace: str,
    capabilities: Capabilities,
    is_upgrade: bool,
    cache_dir: Path,
    access: ClusterAccess | None = None,
    cacheable: bool = True,
) -> ChartRender:
    """The objects a chart environment applies (see the module's contract). ``access``: lookup opted in (read the
    cluster as ``helm.lookup_as``); such a render depends on the cluster's state, so it is never cached. Nor is a
    render that is not ``cacheable`` (from decrypted values: it holds plaintext)."""
    cacheable = cacheable and access is None
    try:
        build = _helm_build()
    except HelmMissing as err:
        raise BundleError(str(err)) from None
    directory = chart_dir(root, helm)
    values_root = root if helm.chart else directory
    input = HelmRenderInput(
        release_name=helm.release_name,
        namespace=namespace,
        kube_version=capabilities.kube_version,
        api_versions=list(capabilities.api_versions),
        is_upgrade=is_upgrade,
        values=helm.values,
        values_files=helm.values_files,
    )
    values = values_digest(helm.values, [(f, "") for f in helm.values_files])
    key = render_key(
        f"{digest}/{helm.chart}", values, helm.release_name, namespace, *_cluster(capabilities), is_upgrade, build
    )
    cache = RenderCache(cache_dir / RENDERS_DIR)
    rendered, cached = (cache.load(key), True) if cacheable else (None, False)
    if rendered is None:
        rendered, cached = render_chart(directory, input, values_root, access), False
        if cacheable:
            cache.store(key, rendered)
    objects = [o.object for o in (*rendered.crds, *rendered.manifests)]
    if helm.manifests:
        objects += render(root / helm.manifests, root)
    release = release_id(f"{digest}/{helm.chart}", values, helm.release_name, namespace)
    return ChartRender(objects, _crd_names(rendered), rendered, cached, helm.prune_crds, release)


def _cluster(capabilities: Capabilities) -> tuple[str, tuple[str, ...]]:
    return capabilities.kube_version, tuple(capabilities.api_versions)


def _crd_names(rendered: Rendered) -> frozenset[str]:
    return frozenset(
        str((o.object.get("metadata") or {}).get("name", "")) for o in rendered.crds if o.object.get("kind") == CRD_KIND
    )
