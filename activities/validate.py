"""What `ferry release` validates in a bundle directory before it is packaged: complete manifests, kustomizations
built with the real kustomize, Helm charts checked as charts, values files recognised (activities.manifests has
the parsing and bounds, activities.helm.render the chart checks), and the plain-secrets guard: no Kubernetes Secret
with data in the clear, and no kustomize ``secretGenerator`` fed by literals or unencrypted files, unless the caller
allows them (`ferry release --allow-plain-secrets`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from ferry.sops import is_plain_secret, store_of

MAX_PLAIN_SECRETS_NAMED = 5  # a refusal names this many findings, then counts the rest
ENCRYPT_HINT = "ferry secrets encrypt FILE --recipient age1… --in-place"


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


def _dir_of(relpath: str) -> str:
    return relpath.rsplit("/", 1)[0] if "/" in relpath else "."


def _under(relpath: str, directory: str) -> bool:
    return directory == "." or relpath.startswith(directory + "/")


def _documents(f: BundleFile, max_file_bytes: int) -> list[Any]:
    """A YAML/JSON file's documents, or [] when it does not read or parse (validate reports that, naming it)."""
    try:
        text = _read_manifest(f.path, f.relpath, max_file_bytes)
        check_aliases(text, f.relpath)
        return [d for d in yaml.load_all(text, Loader=_SAFE_LOADER) if d is not None]
    except (BundleError, OSError, yaml.YAMLError):
        return []


def _items(doc: Any, index: int) -> list[tuple[Any, str]]:
    """A document, or a List's items, each with where it is (what a refusal names)."""
    items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
    if isinstance(items, list):
        return [(item, f"document {index} item {n}") for n, item in enumerate(items)]
    return [(doc, f"document {index}")]


def _plain_documents(docs: list[Any], relpath: str) -> Iterator[str]:
    for index, doc in enumerate(docs):
        for item, where in _items(doc, index):
            if isinstance(item, dict) and is_plain_secret(item):
                meta = item.get("metadata")
                name = str(meta.get("name", "?"))[:253] if isinstance(meta, dict) else "?"
                yield f"{relpath}: {where}: Secret {name} holds data in the clear"


def _generator_inputs(gen: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, path as written) of every file a secretGenerator reads (``files: [key=path]``, ``envs``, ``env``)."""
    for field in ("envs", "files"):
        for entry in gen.get(field) or []:
            if isinstance(entry, str):
                yield field, entry.split("=", 1)[-1]
    if isinstance(gen.get("env"), str):
        yield "env", gen["env"]


def _plain_generators(root: Path, f: BundleFile, max_file_bytes: int) -> Iterator[str]:
    """A kustomization's secretGenerators that make Secrets in the clear: ``literals:``, and ``envs:``/``files:``
    naming a file that is not SOPS-encrypted (an encrypted one is decrypted on the worker before kustomize runs).
    A file that is missing or outside the bundle is left to check_offline and kustomize, which name it."""
    base, top = (root / _dir_of(f.relpath)).resolve(), root.resolve()
    for doc in _documents(f, max_file_bytes):
        for index, gen in enumerate(doc.get("secretGenerator") or [] if isinstance(doc, dict) else []):
            if not isinstance(gen, dict):
                continue
            name = str(gen.get("name", "?"))[:253]
            if gen.get("literals"):
                yield f"{f.relpath}: secretGenerator {index} ({name}) has literals: values in the clear"
            for field, entry in _generator_inputs(gen):
                target = (base / entry).resolve()
                if not target.is_relative_to(top) or not target.is_file():
                    continue
                rel = target.relative_to(top).as_posix()
                try:
                    text = _read_manifest(target, rel, max_file_bytes)
                except (BundleError, OSError):
                    text = ""  # not UTF-8 text: a binary file, not SOPS's (its binary store is JSON)
                if store_of(target.name, text) is None:
                    yield f"{f.relpath}: secretGenerator {index} ({name}) {field}: {rel} is not SOPS-encrypted"


def plain_secrets(root: Path, files: list[BundleFile], max_file_bytes: int = MAX_BUNDLE_FILE_BYTES) -> list[str]:
    """Every place a bundle would carry a secret value in the clear, each naming the file (and document): a core v1
    Secret with data or stringData and no SOPS metadata in any YAML/JSON document (manifests, kustomize inputs,
    a chart's crds/ and values; not a chart's templates/, which are templates rendered per environment), and
    a kustomization's secretGenerator with literals or with envs/files that are not SOPS-encrypted."""
    charts = {_dir_of(f.relpath) for f in files if f.relpath.rsplit("/", 1)[-1] == "Chart.yaml"}
    templates = [("" if c == "." else c + "/") + "templates" for c in charts]
    found: list[str] = []
    for f in files:
        name = f.relpath.rsplit("/", 1)[-1]
        if name in KUSTOMIZATION_FILES:
            found.extend(_plain_generators(root, f, max_file_bytes))
        elif f.relpath.endswith(MANIFEST_SUFFIXES) and not any(_under(f.relpath, t) for t in templates):
            found.extend(_plain_documents(_documents(f, max_file_bytes), f.relpath))
    return found


def check_plain_secrets(root: Path, files: list[BundleFile] | None = None) -> None:
    """BundleError naming the plain secrets of ``root`` (plain_secrets) and the fix; nothing when there are none."""
    found = plain_secrets(root, scan(root) if files is None else files)
    if not found:
        return
    more = f" (and {len(found) - MAX_PLAIN_SECRETS_NAMED} more)" if len(found) > MAX_PLAIN_SECRETS_NAMED else ""
    raise BundleError(
        "; ".join(found[:MAX_PLAIN_SECRETS_NAMED])
        + more
        + f": encrypt with SOPS (`{ENCRYPT_HINT}`) or release with --allow-plain-secrets"
    )


def validate(root: Path, max_file_bytes: int = MAX_BUNDLE_FILE_BYTES, *, allow_plain_secrets: bool = True) -> int:
    """Validate a bundle directory the way the release command promises; returns the object count.

    Directories with a kustomization are built with real kustomize (files under them are kustomize's
    inputs, validated by that build); a directory with a Chart.yaml is a Helm chart, checked as a chart
    (activities.helm.render.check_chart: dependencies vendored, schemas local; its templates are rendered per
    environment on the worker); a YAML file of mappings without apiVersion and kind is a values file; every other
    YAML file must hold complete manifests. With ``allow_plain_secrets=False`` (what `ferry release` passes unless
    told otherwise) a plain secret is a BundleError too (check_plain_secrets); the default keeps the earlier
    callers' behaviour (the CI queue's package_bundle re-validating a bundle the command already checked)."""
    files = scan(root, max_file_bytes)
    if not allow_plain_secrets:
        check_plain_secrets(root, files)
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
