"""`helm template` output as Ferry reads it, and the rules around a render (pure: text and objects in, verdicts out).

Helm v4.3.2 prints every document as ``---\\n# Source: PATH\\n…`` (pkg/action/action.go:476-503): first the files
of ``crds/`` raw, one Source line per *file* (so a file's later documents carry no Source of their own), then the
manifests in InstallOrder, then the hooks (pkg/cmd/template.go:121-147). The rule (HELM-PLAN §2): split on document
separators, carry the last ``# Source:`` forward; a document whose Source is under ``crds/`` of the chart or of a
vendored subchart is a CRD, one that carries ``helm.sh/hook`` is a hook (ferry.hooks), everything else a manifest.

YAML is parsed by the adapter (activities.helm.render, with the bundles' alias bounds): this module splits the
text (``split_documents``) and sorts the parsed objects (``split_rendered``). The bounds are the bundles': the
output like kustomize's (activities.manifests.MAX_KUSTOMIZE_OUTPUT), one document like one bundle file
(ferry.release.MAX_BUNDLE_FILE_BYTES), the objects like a bundle's members (activities.manifests.MAX_MEMBERS);
tests/unit/test_helm_render.py keeps them equal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from ferry.helm_spec import MAX_VALUES_FILES, check_inline_values
from ferry.hooks import HOOK_ANNOTATION, Hook, parse_hook
from ferry.model import Message
from ferry.release import MAX_BUNDLE_FILE_BYTES

MAX_RENDER_BYTES = 2 * 100 * 1024 * 1024  # = activities.manifests.MAX_KUSTOMIZE_OUTPUT
MAX_DOCUMENT_BYTES = MAX_BUNDLE_FILE_BYTES
MAX_RENDER_OBJECTS = 10_000  # = activities.manifests.MAX_MEMBERS
MAX_HELM_ERROR = 800  # characters of Helm's error kept on the record
MAX_SCHEMA_NODES = 100_000  # a values.schema.json is walked this far, no further
MAX_API_VERSIONS = 4096  # a cluster serving every upstream API has ~100 group-versions and ~700 GV/Kind entries
RENDER_KEY_VERSION = 1  # bump when the key's inputs or encoding change: old cached renders are then never read

_SEPARATOR = re.compile(r"^---(?=[ \t]|\r?$)", re.MULTILINE)
_SOURCE = re.compile(r"# Source: (?P<path>[^\r\n]+)")
# crds/ of the chart (``shop/crds/x.yaml``) or of a vendored subchart at any depth (``shop/charts/db/crds/x.yaml``).
_CRD_SOURCE = re.compile(r"^[^/]+(?:/charts/[^/]+)*/crds/")
_LOCAL_REF = re.compile(r"^(?:#|urn:)", re.IGNORECASE)
_SCHEMA_ID_KEYS = ("$ref", "$id", "$dynamicRef", "$recursiveRef", "$schema")
# Meta-schemas the validator (santhosh-tekuri/jsonschema v6) has built in: naming one loads nothing.
_KNOWN_METASCHEMAS = re.compile(
    r"^https?://json-schema\.org/(?:draft-0[4-7]/schema|draft/20(?:19-09|20-12)/schema)"
    r"#?$"
)


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_KUBE_VERSION = re.compile(r"v?[0-9]{1,4}\.[0-9]{1,4}(?:\.[0-9]{1,6})?(?:[-+][0-9A-Za-z.+-]{1,64})?")
# group/version or group/version/Kind as discovery serves them: no comma (helm splits -a on commas), no space.
_API_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}(?:/[A-Za-z0-9][A-Za-z0-9.-]{0,62}){0,2}")
_RELATIVE_PATH = re.compile(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\x00\\]{1,1024}")


# Each argv-bound field: its pattern and what it must be.
_ARGV_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "release_name": (_DNS_SUBDOMAIN, "must be a lowercase DNS name of at most 53 characters (the release name)"),
    "namespace": (_DNS_LABEL, "must be a lowercase DNS label (the namespace)"),
    "kube_version": (_KUBE_VERSION, "is not a Kubernetes version (v1.35.4)"),
    "api_versions": (_API_VERSION, "is not an API version (group/version or group/version/Kind)"),
    "values_files": (_RELATIVE_PATH, "must be a relative path inside the release, with no '..' (a values file)"),
}


class HelmRenderInput(Message):
    """What one `helm template` of a chart reads besides the chart: ``.Release`` and ``.Capabilities`` (from the
    target cluster), the values files (relative to the release root, merged in order) and the inline values
    (merged last). Every string reaches helm's argv, so each is validated to be what it says (no leading '-')."""

    release_name: str = Field(max_length=53)
    namespace: str = Field(max_length=63)
    kube_version: str = Field(max_length=80)
    api_versions: list[str] = Field(default_factory=list, max_length=MAX_API_VERSIONS)
    is_upgrade: bool = False
    values: dict[str, Any] = Field(default_factory=dict)
    values_files: list[str] = Field(default_factory=list, max_length=MAX_VALUES_FILES)

    @field_validator("release_name", "namespace", "kube_version", "api_versions", "values_files")
    @classmethod
    def _argv_safe(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        pattern, what = _ARGV_RULES[info.field_name or ""]
        for entry in [value] if isinstance(value, str) else value:
            if not pattern.fullmatch(entry):
                raise ValueError(f"{entry[:80]!r} {what}")
        return value

    @field_validator("values")
    @classmethod
    def _values(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_inline_values(value)


class RenderRefused(ValueError):
    """What is wrong with a render (its size, an object, a schema, Helm's own error), naming where."""


@dataclass(frozen=True)
class Document:
    """One YAML document of the output and the template file it came from (``""`` before any Source line)."""

    source: str
    text: str


@dataclass(frozen=True)
class RenderedObject:
    source: str
    object: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Rendered:
    """A render sorted as Helm would install it: ``crds`` (applied first, never pruned unless asked), ``manifests``
    (the release), ``hooks`` (run around it, in ferry.hooks' order; test hooks included but never run by a release),
    ``dropped`` (hooks Helm ignores: an unknown event, named for the record)."""

    crds: tuple[RenderedObject, ...]
    manifests: tuple[RenderedObject, ...]
    hooks: tuple[Hook, ...]
    dropped: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.crds) + len(self.manifests) + len(self.hooks)


def _is_blank(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def split_documents(
    text: str,
    max_bytes: int = MAX_RENDER_BYTES,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    max_documents: int = MAX_RENDER_OBJECTS,
) -> list[Document]:
    """The non-empty documents of ``helm template`` output, each with the Source line in force.

    A separator is a line starting ``---`` (then a space, a tab or the end of the line), as YAML reads it: such a
    line ends the document even inside a block scalar. A chunk's first non-blank line, when it is ``# Source:
    PATH``, sets the source for it and the chunks after it. RenderRefused past a bound."""
    if len(text) > max_bytes:
        raise RenderRefused(f"helm template output is over {max_bytes} bytes: refused")
    documents: list[Document] = []
    source = ""
    starts = [0, *(m.end() for m in _SEPARATOR.finditer(text))]
    ends = [m.start() for m in _SEPARATOR.finditer(text)] + [len(text)]
    for start, end in zip(starts, ends, strict=True):
        chunk = text[start:end]
        first = next((line.strip() for line in chunk.splitlines() if line.strip()), "")
        found = _SOURCE.fullmatch(first)
        if found:
            source = found["path"].strip()
        if _is_blank(chunk):
            continue
        if len(chunk.encode()) > max_document_bytes:
            raise RenderRefused(
                f"{source or 'helm template output'}: a rendered document is over {max_document_bytes} bytes: refused"
            )
        documents.append(Document(source, chunk))
        if len(documents) > max_documents:
            raise RenderRefused(f"helm template output has more than {max_documents} documents: refused")
    return documents


def is_crd_source(source: str) -> bool:
    """Whether a Source path is a file of ``crds/`` (of the chart or a vendored subchart), which Helm prints raw."""
    return bool(_CRD_SOURCE.match(source))


def split_rendered(objects: Iterable[tuple[str, Mapping[str, Any]]], max_objects: int = MAX_RENDER_OBJECTS) -> Rendered:
    """Sort parsed (source, object) pairs, in output order, into CRDs, manifests and hooks (the module's rule).

    RenderRefused past ``max_objects`` or for a hook annotation Helm could not have read."""
    crds: list[RenderedObject] = []
    manifests: list[RenderedObject] = []
    hooks: list[Hook] = []
    dropped: list[str] = []
    for source, obj in objects:
        if len(crds) + len(manifests) + len(hooks) >= max_objects:
            raise RenderRefused(f"the chart renders more than {max_objects} objects: refused")
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if is_crd_source(source):
            crds.append(RenderedObject(source, dict(obj)))
        elif isinstance(annotations, Mapping) and HOOK_ANNOTATION in annotations:
            try:
                hook = parse_hook(obj, source)
            except ValueError as err:
                raise RenderRefused(str(err)) from None
            if hook is None:
                name = (obj.get("metadata") or {}).get("name", "")
                dropped.append(
                    f"{source}: {obj.get('kind')}/{name}: unknown hook event "
                    f"{str(annotations[HOOK_ANNOTATION])[:80]!r} (Helm ignores it)"
                )
            else:
                hooks.append(hook)
        else:
            manifests.append(RenderedObject(source, dict(obj)))
    return Rendered(tuple(crds), tuple(manifests), tuple(hooks), tuple(dropped))


def helm_error(stderr: str, limit: int = MAX_HELM_ERROR) -> str:
    """Helm's message for a failed command: the ``Error: `` paragraph without the prefix (cobra prints it,
    cmd/helm/helm.go:44-49; a template's execution error continues on indented lines up to a blank one), else the
    first non-blank line; one line of at most ``limit`` characters."""
    lines = [line.strip() for line in stderr.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("Error: ")), None)
    if start is None:
        message = next((line for line in lines if line), "helm failed without a message")
    else:
        paragraph = [lines[start][len("Error: ") :]]
        for line in lines[start + 1 :]:
            if not line:
                break
            paragraph.append(line)
        message = " ".join(paragraph)
    return message if len(message) <= limit else message[: limit - 3] + "..."


_ERROR_AT = re.compile(r"^(?P<at>(?:execution error at \([^)]{1,300}\)|[^\s:]{1,300}:\d+:\d+))")


def redacted_error(message: str) -> str:
    """Helm's message without the text a template wrote (``fail``/``required`` messages and YAML errors, which a
    template with `lookup` could fill with what it read): the template position when there is one, and a digest of
    the whole message to compare two failures by. Helm's own messages are kept."""
    if not (message.startswith("execution error at") or "YAML parse error" in message):
        return message  # helm's own words (a lookup forbidden, a missing kind): nothing a template wrote
    found = _ERROR_AT.match(message)
    digest = hashlib.sha256(message.encode()).hexdigest()[:16]
    where = found["at"] if found else "the render"
    return f"{where}: message withheld (lookup is on: it may hold what the template read), sha256 {digest}"


def schema_refs_refused(schema: Any, where: str = "values.schema.json") -> str | None:
    """Why a values schema would make Helm load something, or None.

    Helm compiles values.schema.json rooted at ``file:///values.schema.json`` with loaders for file, http and https
    (pkg/chart/common/util/jsonschema.go:140-152): a ``$ref`` or ``$id`` that is not a fragment (``#…``) or a
    ``urn:`` (resolved to a permissive schema, never loaded) reads the worker's files or the network. So does a
    ``$schema`` that is not a built-in meta-schema. The answer names the key's path (``properties.db.$ref``)."""
    todo: list[tuple[str, Any]] = [("", schema)]
    seen = 0
    while todo:
        path, node = todo.pop()
        seen += 1
        if seen > MAX_SCHEMA_NODES:
            return f"{where}: more than {MAX_SCHEMA_NODES} nodes: refused"
        if isinstance(node, list):
            todo.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(node))))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            at = f"{path}.{key}" if path else str(key)
            if key in _SCHEMA_ID_KEYS and isinstance(value, str):
                reason = _ref_problem(key, value)
                if reason:
                    return (
                        f"{where}: {at} is {value[:200]!r}: {reason}; Helm would load it while rendering "
                        "(no network, no worker files): vendor it into the schema under $defs and use '#/$defs/…'"
                    )
            todo.append((at, value))
    return None


def _ref_problem(key: str, value: str) -> str | None:
    if key == "$schema":
        return None if _KNOWN_METASCHEMAS.match(value) else "not a built-in meta-schema"
    if _LOCAL_REF.match(value):
        return None
    return "not a local reference ('#…') or a urn:"


def values_digest(values: Mapping[str, Any], values_files: Sequence[tuple[str, str]] = ()) -> str:
    """The digest of what a render merges: the values files (path and content digest, in merge order) and the
    inline values (canonical JSON: sorted keys, no spaces)."""
    body = json.dumps(
        {"files": [list(f) for f in values_files], "values": values},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def release_id(chart_digest: str, values_digest: str, release_name: str, namespace: str) -> str:
    """What makes a new Helm release (an upgrade): the chart, the values, the release's name and namespace. Not the
    capabilities, the helm build or install-vs-upgrade: those re-render, but a drift revert or a worker upgrade is no
    new release, so it runs no hooks. 32 hex characters, recorded in the environment's inventory."""
    body = json.dumps([chart_digest, values_digest, release_name, namespace], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def render_key(
    chart_digest: str,
    values_digest: str,
    release_name: str,
    namespace: str,
    kube_version: str,
    api_versions: Iterable[str],
    is_upgrade: bool,
    helm_version: str,
) -> str:
    """The name of a cached render: everything `helm template` reads besides the chart's bytes and the values.

    ``.Capabilities`` (kube version, API versions: a set, so their order does not matter), ``.Release`` (name,
    namespace, IsUpgrade) and the helm build all change the output, so all are in the key, not only the issue's
    (chart, values) digests. 64 hex characters (a file name)."""
    body = json.dumps(
        {
            "v": RENDER_KEY_VERSION,
            "chart": chart_digest,
            "values": values_digest,
            "release": release_name,
            "namespace": namespace,
            "kube": kube_version,
            "api": sorted(set(api_versions)),
            "upgrade": bool(is_upgrade),
            "helm": helm_version,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Capabilities:
    kube_version: str
    api_versions: tuple[str, ...]


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def api_versions_of(documents: list[dict[str, Any]]) -> list[str]:
    """GV and GV/Kind entries from discovery documents (APIGroupDiscoveryList, else APIGroupList/APIVersions), in
    Helm's shape (``apps/v1``, ``apps/v1/Deployment``, ``v1/ConfigMap``); at most MAX_API_VERSIONS."""
    out: dict[str, None] = {}
    for doc in documents:
        if doc.get("kind") == "APIGroupDiscoveryList":
            for group in doc.get("items") or []:
                name = str((group.get("metadata") or {}).get("name") or "")
                for version in group.get("versions") or []:
                    gv = _group_version(name, str(version.get("version") or ""))
                    out[gv] = None
                    for resource in version.get("resources") or []:
                        kind = str((resource.get("responseKind") or {}).get("kind") or "")
                        if kind:
                            out[f"{gv}/{kind}"] = None
        elif doc.get("kind") == "APIGroupList":
            for group in doc.get("groups") or []:
                for version in group.get("versions") or []:
                    out[str(version.get("groupVersion") or "")] = None
        elif doc.get("kind") == "APIVersions":
            for version in doc.get("versions") or []:
                out[str(version)] = None
    return [v for v in out if v and "," not in v and " " not in v][:MAX_API_VERSIONS]
