"""What `ferry release` validates in a bundle directory before it is packaged: complete manifests, kustomizations
built with the real kustomize, Helm charts checked as charts, values files recognised (activities.manifests has
the parsing and bounds, activities.helm.render the chart checks)."""

from __future__ import annotations

from pathlib import Path

import yaml

from activities.helm.render import check_chart
from activities.manifests import (
    _SAFE_LOADER,
    KUSTOMIZATION_FILES,
    MANIFEST_SUFFIXES,
    BundleError,
    BundleFile,
    _kustomize_roots,
    _read_manifest,
    check_aliases,
    kustomize,
    parse_documents,
    scan,
)
from ferry.release import MAX_BUNDLE_FILE_BYTES


def _chart_roots(files: list[BundleFile]) -> list[str]:
    """The top-most directories holding a Chart.yaml (a vendored subchart is inside its parent's)."""
    dirs = sorted(
        f.relpath.rsplit("/", 1)[0] if "/" in f.relpath else "."
        for f in files
        if f.relpath.rsplit("/", 1)[-1] == "Chart.yaml"
    )
    roots: list[str] = []
    for d in dirs:
        if not any(r == "." or d.startswith(r + "/") for r in roots):
            roots.append(d)
    return roots


def _is_values_file(text: str, where: str) -> bool:
    """A YAML file whose every document is a mapping with neither apiVersion nor kind: a chart's values file (a
    manifest that lacks one of them is still refused by parse_documents, naming it)."""
    check_aliases(text, where)
    try:
        docs = [d for d in yaml.load_all(text, Loader=_SAFE_LOADER) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(docs) and all(isinstance(d, dict) and "apiVersion" not in d and "kind" not in d for d in docs)


def validate(root: Path, max_file_bytes: int = MAX_BUNDLE_FILE_BYTES) -> int:
    """Validate a bundle directory the way the release command promises; returns the object count.

    Directories with a kustomization are built with real kustomize (files under them are kustomize's
    inputs, validated by that build); a directory with a Chart.yaml is a Helm chart, checked as a chart
    (activities.helm.render.check_chart: dependencies vendored, schemas local; its templates are rendered per
    environment on the worker); a YAML file of mappings without apiVersion and kind is a values file; every other
    YAML file must hold complete manifests."""
    files = scan(root, max_file_bytes)
    kroots, charts = _kustomize_roots(files), _chart_roots(files)
    count = 0
    for f in files:
        if not f.relpath.endswith(MANIFEST_SUFFIXES) or f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES:
            continue
        if any(k == "." or f.relpath.startswith(k + "/") for k in [*kroots, *charts]):
            continue
        text = _read_manifest(f.path, f.relpath, max_file_bytes)
        if not _is_values_file(text, f.relpath):
            count += len(parse_documents(text, f.relpath))
    for k in kroots:
        if not any(c == "." or k == c or k.startswith(c + "/") for c in charts):
            count += len(parse_documents(kustomize(root / k, root), f"{k} (kustomize build)"))
    for c in charts:
        check_chart(root / c)
    if count == 0 and not charts:
        raise BundleError(f"{root}: no Kubernetes objects found")
    return count
