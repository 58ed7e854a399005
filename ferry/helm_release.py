"""Helm's own release storage, read to adopt a release (`ferry env import-helm`): pure rules, text and dicts in.

What Helm v4.3.2 stores (checked in helm.sh/helm/v4@v4.3.2): one Secret per revision, named
``sh.helm.release.v1.NAME.vN`` (pkg/storage/storage.go:327-329), of type ``helm.sh/release.v1``, labelled
``owner=helm``, ``name``, ``status`` and ``version`` (pkg/storage/driver/secrets.go:241-286). Its ``data.release`` is
base64(gzip(JSON of the release)), and the API's ``data`` adds a second base64; gzip is skipped on read when the
magic ``1f 8b 08`` is absent (driver/util.go, decodeRelease). The JSON (pkg/release/v1/release.go:34-55) has
``name``, ``info.status``, ``chart.metadata`` (Chart.yaml), ``config`` (the user's values, without the chart's
defaults), ``manifest`` (what ``helm get manifest`` prints: the templates without hooks and crds/), ``hooks``,
``version`` (the revision) and ``namespace``. The deployed revision is the newest with ``status=deployed``
(storage.go:155-176: several are deployed after concurrent upgrades; Helm takes the newest).

Every input is hostile: the stored text and the decompressed JSON are bounded (a gzip bomb is refused while it
inflates, never after), revisions are picked from labels (only the chosen Secret is decoded), and a JSON that is
not a release is refused naming the field. Helm's storage does not say where the chart came from, so the import
is told: an OCI chart (``oci://…``) or a path inside a Ferry release.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry.helm_render import Rendered
from ferry.helm_spec import OCI_SCHEME
from ferry.plan import ENVIRONMENT_LABEL, ObjectId

RELEASE_TYPE = "helm.sh/release.v1"  # the Secret's type (secrets.go:276-286)
NAME_PREFIX = "sh.helm.release.v1."  # + NAME + ".v" + revision (storage.go:33-38,327-329)
HELM_MANAGER = "helm"  # Helm's field manager (cmd/helm/helm.go:36; v3 used the same name with Update)
# NB: Helm's annotations meta.helm.sh/release-{name,namespace} stay on adopted objects: removing an annotation bumps
# a Deployment's generation (its strategy counts metadata.annotations), and they give nothing back to Helm: Ferry's
# apply sets app.kubernetes.io/managed-by: ferry, so a later `helm install` of the name refuses the objects
# ("invalid ownership metadata", pkg/action/validate.go:170-196) unless told --take-ownership.
STATUSES = frozenset(
    {
        "unknown",
        "deployed",
        "uninstalled",
        "superseded",
        "failed",
        "uninstalling",
        "pending-install",
        "pending-upgrade",
        "pending-rollback",
    }
)  # pkg/release/common/status.go
MAX_STORED_BYTES = 4 * 1024 * 1024  # data.release as the API returns it: a Secret holds at most 1 MiB (~1.8 MiB here)
MAX_RELEASE_BYTES = 32 * 1024 * 1024  # the JSON once inflated: a 1,000-object chart's release is a few MiB
MAX_REVISIONS = 10_000  # Secrets of one release (Helm keeps 10 by default, --history-max 0 keeps every one)
MAX_NOTED_TEMPLATES = 5  # templates named per unstable function in the import's notes
_GZIP_MAGIC = b"\x1f\x8b\x08"
# What `helm template` renders differently from the install that made the release (.Release.Revision is always 1
# there) or differently on every render: in a pod template, each one means a restart at adoption.
_UNSTABLE = re.compile(r"\.Release\.Revision|\b(?:randAlphaNum|randAlpha|randNumeric|randAscii|uuidv4|now|genCA)\b")


class ReleaseRefused(ValueError):
    """What is wrong with a release Secret, its JSON or the import asked for, naming the field."""


@dataclass(frozen=True)
class HelmRelease:
    """One decoded revision: what the import needs of it."""

    name: str
    namespace: str
    revision: int
    status: str
    chart: str
    chart_version: str
    app_version: str
    values: dict[str, Any]
    manifest: str
    hooks: int = 0
    apply_method: str = ""
    unstable: tuple[str, ...] = ()  # "templates/x.yaml: .Release.Revision" (see _UNSTABLE)


@dataclass(frozen=True)
class ChartSource:
    """Where the adopting environment takes the chart from (Helm's storage does not say): ``chart`` an oci://
    reference (``version`` defaults to the release's chart version), or ``repository`` + ``path``, a Ferry release
    holding the chart, with ``version`` or ``semver``."""

    chart: str | None = None
    repository: str | None = None
    path: str | None = None
    version: str | None = None
    semver: str | None = None


@dataclass
class Imported:
    environment: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def release_selector(name: str) -> str:
    """The label selector of every revision of release ``name`` (storage.go History)."""
    return f"owner=helm,name={name}"


def _revision_of(secret: Mapping[str, Any], name: str) -> int | None:
    """The revision a Secret stores for release ``name``, from its name and labels (both must agree), or None."""
    meta = secret.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    if not isinstance(labels, Mapping) or labels.get("owner") != "helm" or labels.get("name") != name:
        return None
    found = re.fullmatch(re.escape(NAME_PREFIX + name) + r"\.v([1-9][0-9]{0,9})", str(meta.get("name", "")))
    if found is None or labels.get("version") != found[1]:
        return None
    return int(found[1])


def revisions(secrets: Iterable[Mapping[str, Any]], name: str) -> list[tuple[int, Mapping[str, Any]]]:
    """Release ``name``'s Secrets (metadata is enough) as (revision, secret), oldest first. ReleaseRefused past
    MAX_REVISIONS."""
    found: list[tuple[int, Mapping[str, Any]]] = []
    for secret in secrets:
        revision = _revision_of(secret, name)
        if revision is not None:
            found.append((revision, secret))
            if len(found) > MAX_REVISIONS:
                raise ReleaseRefused(f"release {name}: more than {MAX_REVISIONS} revisions stored: refused")
    return sorted(found, key=lambda pair: pair[0])


def newest_deployed(secrets: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    """The Secret of the newest revision labelled ``status=deployed`` (Helm's own choice when several are).
    ReleaseRefused when there is none, naming the newest revision's status (fix the release with Helm first)."""
    listed = revisions(secrets, name)
    if not listed:
        raise ReleaseRefused(f"release {name}: no Helm release Secret ({NAME_PREFIX}{name}.vN, owner=helm) found")
    deployed = [pair for pair in listed if (pair[1]["metadata"]["labels"]).get("status") == "deployed"]
    if not deployed:
        revision, newest = listed[-1]
        status = newest["metadata"]["labels"].get("status", "")
        raise ReleaseRefused(
            f"release {name}: no deployed revision (the newest, v{revision}, is {str(status)[:40]!r}): "
            "roll it back or upgrade it with helm until one is deployed, then import it"
        )
    return deployed[-1][1]


def _inflate(data: bytes, limit: int) -> bytes:
    """gunzip with the output capped while it inflates (a bomb stops at ``limit`` + 1 bytes); concatenated members
    are read like Go's gzip reader (multistream) does."""
    out = bytearray()
    while data:
        if not data.startswith(_GZIP_MAGIC):
            raise ReleaseRefused("data.release: bytes after the gzip stream that are not another gzip member")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = data
        while pending and not inflater.eof:
            out += inflater.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise ReleaseRefused(f"data.release: inflates to more than {limit} bytes (a gzip bomb?): refused")
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise ReleaseRefused("data.release: the gzip stream is truncated")
        data = inflater.unused_data
    return bytes(out)


def decode_stored(stored: str, limit: int = MAX_RELEASE_BYTES) -> bytes:
    """``data.release`` as the API returns it (base64 of Helm's base64 of gzip) -> the release's JSON bytes."""
    if len(stored) > MAX_STORED_BYTES:
        raise ReleaseRefused(f"data.release: more than {MAX_STORED_BYTES} bytes: refused")
    try:
        inner = base64.b64decode(base64.b64decode(stored, validate=True), validate=True)
    except (binascii.Error, ValueError):
        raise ReleaseRefused("data.release: not base64 of Helm's base64 text") from None
    if len(inner) > 3 and inner.startswith(_GZIP_MAGIC):
        try:
            return _inflate(inner, limit)
        except zlib.error as err:
            raise ReleaseRefused(f"data.release: not a readable gzip stream: {err}") from None
    if len(inner) > limit:
        raise ReleaseRefused(f"data.release: more than {limit} bytes of JSON: refused")
    return inner


def _field(data: Mapping[str, Any], path: str, kind: type, required: bool = True) -> Any:
    """``data``'s value at the dotted ``path`` when it is a ``kind`` (None for a missing optional one)."""
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        shown = "missing" if value is None else _an(_JSON_NAMES.get(type(value).__name__, type(value).__name__))
        raise ReleaseRefused(f"not a Helm release: field {path} is {shown}, not {_an(_JSON_NAMES[kind.__name__])}")
    return value


_JSON_NAMES = {
    "str": "string",
    "int": "number",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
    "NoneType": "null",
}


def _an(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def parse_release(raw: bytes) -> HelmRelease:
    """The release's JSON -> HelmRelease. ReleaseRefused naming the first field that is not what Helm writes."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ReleaseRefused(f"not a Helm release: the data is not JSON ({str(err)[:120]})") from None
    if not isinstance(data, dict):
        raise ReleaseRefused(f"not a Helm release: the JSON is a {type(data).__name__}, not an object")
    status = _field(data, "info.status", str)
    if status not in STATUSES:
        raise ReleaseRefused(f"not a Helm release: field info.status is {status[:40]!r}, not a Helm status")
    revision = _field(data, "version", int)
    if revision < 1:
        raise ReleaseRefused(f"not a Helm release: field version is {revision}, not a revision (1 or more)")
    hooks = _field(data, "hooks", list, required=False) or []
    return HelmRelease(
        name=_field(data, "name", str),
        namespace=_field(data, "namespace", str),
        revision=revision,
        status=status,
        chart=_field(data, "chart.metadata.name", str),
        chart_version=_field(data, "chart.metadata.version", str),
        app_version=_field(data, "chart.metadata.appVersion", str, required=False) or "",
        values=_field(data, "config", dict, required=False) or {},
        manifest=_field(data, "manifest", str, required=False) or "",
        hooks=len(hooks),
        apply_method=_field(data, "apply_method", str, required=False) or "",
        unstable=_unstable_templates(data),
    )


def _unstable_templates(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Templates of the stored chart that use what renders differently at adoption (see _UNSTABLE)."""
    found: list[str] = []
    templates = (data.get("chart") or {}).get("templates") if isinstance(data.get("chart"), Mapping) else None
    for template in templates if isinstance(templates, list) else []:
        if not isinstance(template, Mapping) or not isinstance(template.get("data"), str):
            continue
        try:
            text = base64.b64decode(template["data"], validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            continue
        names = sorted(set(_UNSTABLE.findall(text)))
        if names:
            found.append(f"{str(template.get('name', ''))[:200]}: {', '.join(names)}")
        if len(found) >= MAX_NOTED_TEMPLATES:
            break
    return tuple(found)


def decode_secret(secret: Mapping[str, Any], name: str) -> HelmRelease:
    """One release Secret (as the API returns it) -> its release, checked against the Secret's own name and
    labels (a Secret claiming revision 7 of ``name`` must hold revision 7 of ``name``)."""
    where = str((secret.get("metadata") or {}).get("name", "?"))[:253]
    revision = _revision_of(secret, name)
    if revision is None:
        raise ReleaseRefused(f"Secret {where}: not a revision of Helm release {name} (name or labels)")
    if secret.get("type") != RELEASE_TYPE:
        raise ReleaseRefused(f"Secret {where}: type {str(secret.get('type'))[:80]!r}, not {RELEASE_TYPE}")
    stored = (secret.get("data") or {}).get("release")
    if not isinstance(stored, str):
        raise ReleaseRefused(f"Secret {where}: no data.release")
    try:
        release = parse_release(decode_stored(stored))
    except ReleaseRefused as err:
        raise ReleaseRefused(f"Secret {where}: {err}") from None
    if release.name != name or release.revision != revision:
        raise ReleaseRefused(
            f"Secret {where}: holds {release.name[:53]!r} revision {release.revision}, not {name} revision {revision}"
        )
    return release


def manifest_ids(rendered: Rendered) -> list[ObjectId]:
    """The objects of a release's manifest (split and parsed with ferry.helm_render's bounds by the adapter), in
    manifest order, as the manifest names them (the adapter puts a namespaced one without a namespace into the
    release's, as Helm did). ReleaseRefused for an object without apiVersion, kind or name."""
    ids: list[ObjectId] = []
    for entry in (*rendered.crds, *rendered.manifests):
        obj = entry.object
        meta = obj.get("metadata")
        if not all(isinstance(v, str) and v for v in (obj.get("apiVersion"), obj.get("kind"))) or not (
            isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and meta["name"]
        ):
            raise ReleaseRefused(
                f"the release's manifest ({entry.source or 'no source'}): an object without "
                "apiVersion, kind or metadata.name"
            )
        namespace = meta.get("namespace")
        ids.append(ObjectId.of({**obj, "metadata": {"name": meta["name"], "namespace": str(namespace or "")}}))
    return ids


def _source(release: HelmRelease, source: ChartSource) -> dict[str, Any]:
    """The spec's source part for ``source``: ``helm.chart`` (+ version) for an OCI chart, or ``repository``,
    ``path`` and ``version``/``semver`` for a chart inside a Ferry release."""
    if source.chart is not None and source.repository is not None:
        raise ReleaseRefused("give --chart oci://... or --repository/--path, not both")
    if source.chart is not None:
        if not source.chart.startswith(OCI_SCHEME):
            raise ReleaseRefused(f"--chart {source.chart[:120]!r}: an OCI chart reference (oci://HOST/PATH/NAME)")
        if source.semver is not None:
            return {"helm": {"chart": source.chart, "semver": source.semver}}
        return {"helm": {"chart": source.chart, "version": source.version or release.chart_version}}
    if source.repository is None:
        raise ReleaseRefused(
            f"Helm's release storage does not say where chart {release.chart} {release.chart_version} came from: "
            "give --chart oci://HOST/PATH/NAME (an OCI Helm repository), or --repository HOST/PATH --path DIR "
            "with --version or --semver (a Ferry release holding the chart)"
        )
    if (source.version is None) == (source.semver is None):
        raise ReleaseRefused("--repository: give exactly one of --version or --semver (the Ferry release to track)")
    tracking = {"version": source.version} if source.version is not None else {"semver": source.semver}
    return {"repository": source.repository, "path": source.path or ".", **tracking, "helm": {}}


def import_environment(
    release: HelmRelease,
    source: ChartSource,
    objects: Sequence[tuple[ObjectId, bool]],
    environment: str | None = None,
    cluster: str | None = None,
) -> Imported:
    """The environment that adopts ``release`` (EnvironmentSpec-shaped, kebab-case, for `ferry env apply`): the
    release's name, namespace and values, the chart from ``source``; ``namespaces`` and ``cluster-kinds`` so every
    object of the manifest (``objects``: id, namespaced) is inside its bounds. Notes say what may differ."""
    env: dict[str, Any] = {"name": environment or release.name, **_source(release, source)}
    env["helm"].update({"release-name": release.name, "values": release.values})
    if cluster:
        env["cluster"] = cluster
    env["namespace"] = release.namespace
    others = sorted({i.namespace for i, namespaced in objects if namespaced} - {release.namespace})
    if others:
        env["namespaces"] = [release.namespace, *others]
    kinds = sorted({i.kind for i, namespaced in objects if not namespaced and i.kind != "Namespace"})
    if kinds:
        env["cluster-kinds"] = kinds
    notes = _notes(release)
    if source.chart is not None and source.chart.rstrip("/").rpartition("/")[2] != release.chart:
        notes.append(
            f"--chart {source.chart[:120]} does not end in the release's chart name {release.chart!r} (Helm pushes "
            "a chart to .../NAME): the render must be the same chart for the adoption to change nothing"
        )
    return Imported(env, notes)


_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[-_]?key|private[-_]?key|credential", re.IGNORECASE)


def secret_like_paths(values: Mapping[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """The dotted paths of values whose key names a credential (password, token, secret…) and that hold a string."""
    found: list[str] = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and depth < 16:
            found += secret_like_paths(value, path, depth + 1)
        elif isinstance(value, str) and value and _SECRET_KEY.search(str(key)):
            found.append(path)
    return found


def _notes(release: HelmRelease) -> list[str]:
    notes = [
        f"release {release.namespace}/{release.name} revision {release.revision}: chart {release.chart} "
        f"{release.chart_version}, {len(release.values)} top-level value(s) set by the user (the chart's defaults "
        "stay in the chart)"
    ]
    if release.hooks:
        notes.append(
            f"the release has {release.hooks} hook(s): Ferry's first reconcile of it is an install to Ferry (no "
            "inventory yet: .Release.IsUpgrade is false, as in `helm install`), so the chart's install hooks run "
            "again under Ferry's hook rules (docs/helm.md)"
        )
    secretive = sorted(secret_like_paths(release.values))[:5]
    if secretive:
        notes.append(
            f"value(s) {', '.join(secretive)} look like credentials: inline values live in the spec, its history and "
            "its diffs; move them to a Secret the chart reads (or a values file kept out of the spec) before "
            "`ferry env apply`"
        )
    for template in release.unstable:
        notes.append(
            f"{template}: renders differently under Ferry (.Release.Revision is 1 in a render) or on every "
            "render; in a pod template that restarts the workload at adoption"
        )
    return notes


def adopted(obj: Mapping[str, Any], environment: str) -> bool:
    """Whether environment ``environment``'s reconcile has applied ``obj`` (it carries the environment label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, Mapping) and labels.get(ENVIRONMENT_LABEL) == environment


def remove_manager_patch(obj: Mapping[str, Any], manager: str = HELM_MANAGER) -> list[dict[str, Any]] | None:
    """A JSON patch (RFC 6902) removing ``manager``'s managedFields entries of the object itself (any operation,
    Apply from Helm v4's server-side apply and Update from client-side apply; status and other subresource
    entries are not the release's), or None when it has none. As fluxcd/pkg ssa PatchRemoveFieldsManagers
    (ssa@v0.76.2/patch.go:82-110): one ``replace`` of /metadata/managedFields with the other entries, ``[{}]`` when
    none is left (an empty list would leave the field as it is). A ``test`` of the resourceVersion first, so a
    write in between (a reconcile taking fields) fails the patch instead of being undone by it."""
    meta = obj.get("metadata") or {}
    entries = meta.get("managedFields") or []
    kept = [
        e for e in entries if not (isinstance(e, Mapping) and e.get("manager") == manager and not e.get("subresource"))
    ]
    if len(kept) == len(entries):
        return None
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion", "")},
        {"op": "replace", "path": "/metadata/managedFields", "value": kept or [{}]},
    ]
