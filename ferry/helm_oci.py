"""Helm's OCI chart format, as the real `helm push`/`helm pull` (v4.3.2) write and read it. Pure rules, no I/O.

Sources (helm.sh/helm/v4@v4.3.2): media types `pkg/registry/constants.go`; the config is `json.Marshal(*chart.Metadata)`
(`pkg/registry/client.go` Push, field order `pkg/chart/v2/metadata.go:29-83`, `dependency.go`); the manifest
(`client.go` tagManifest: schemaVersion, config, layers sorted by digest, annotations, no mediaType in the body);
annotations `pkg/registry/chart.go` generateOCIAnnotations; tags `pkg/registry/reference.go:56-60` (`+` -> `_`) and
`client.go` Tags (`_` -> `+`, strict semver only). Chart.yaml rules: `metadata.go` Validate (names, types, semver).

NB: Ferry requires *strict* semver chart versions (no leading `v`, MAJOR.MINOR.PATCH): Helm's own Validate accepts
`v1.2` but its tag listing keeps strict semver only, so such a chart could be pushed and never found by version.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from ferry.model import Message
from ferry.oci import Digest, Repository

HELM_CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_PROVENANCE_MEDIA_TYPE = "application/vnd.cncf.helm.chart.provenance.v1.prov"
HELM_LEGACY_CHART_MEDIA_TYPE = "application/tar+gzip"  # read by `helm pull` with a warning; never written

ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_URL = "org.opencontainers.image.url"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_AUTHORS = "org.opencontainers.image.authors"
# chart annotations may not override these (chart.go immutableOciAnnotations)
_IMMUTABLE_ANNOTATIONS = (ANNOTATION_VERSION, ANNOTATION_TITLE)

# SemVer 2.0.0's own regex, as Masterminds' StrictNewVersion applies it.
_NUM = r"(?:0|[1-9]\d*)"
_PRE = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
STRICT_SEMVER = re.compile(rf"^{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE}(?:\.{_PRE})*)?(?:\+{_BUILD})?$")
_OCI_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_ALIAS = re.compile(r"^[a-zA-Z0-9_-]+$")  # dependency.go aliasNameFormat
MAX_CHART_NAME = 250  # a name is a path component; Helm adds no bound of its own
CHART_TYPES = ("application", "library")


class ChartError(ValueError):
    """A chart (Chart.yaml, tag, archive) that Ferry refuses; the message names what is wrong."""


def sanitize(value: str) -> str:
    """Helm's sanitizeString (metadata.go): whitespace becomes a space, unprintable characters go."""
    return "".join(" " if ch.isspace() else ch for ch in value if ch.isspace() or ch.isprintable())


def is_strict_semver(version: str) -> bool:
    return bool(STRICT_SEMVER.match(version))


def tag_for(version: str) -> str:
    """The OCI tag Helm pushes a chart version under: `+` (not allowed in OCI tags) becomes `_`."""
    if not is_strict_semver(version):
        raise ChartError(f"chart version {version[:80]!r} is not strict semver (MAJOR.MINOR.PATCH[-PRE][+BUILD])")
    tag = version.replace("+", "_")
    if not _OCI_TAG.match(tag):
        raise ChartError(
            f"chart version {version[:80]!r} makes tag {tag[:80]!r}, which is not an OCI tag (at most 128 characters)"
        )
    return tag


def version_for(tag: str) -> str | None:
    """The chart version a registry tag stands for, as `helm`'s listing reads it (every `_` back to `+`), or None
    for a tag that is not strict semver then (`latest`, `v1.2.3`, `1.2`, a signature tag)."""
    version = tag.replace("_", "+")
    return version if is_strict_semver(version) else None


def oci_tag(version: str) -> str:
    """The tag a tracked version is looked up under: a Ferry release's version is its tag; a chart version with
    build metadata is Helm's tag (``+`` -> ``_``). No Ferry version carries ``+`` (ferry.versions refuses it)."""
    return version.replace("+", "_")


def tag_versions(tags: list[str]) -> dict[str, str]:
    """version -> tag, for resolving over a repository's tags: every tag stands for itself, and a tag that only
    reads as a chart version with build metadata (``1.0.0_b1``) also stands for that version (``1.0.0+b1``)."""
    out = {tag: tag for tag in tags}
    for tag in tags:
        version = version_for(tag)
        if version is not None and version != tag and version not in out:
            out[version] = tag
    return out


def chart_versions(tags: list[str]) -> list[str]:
    """The chart versions among a repository's tags, in tag order; other tags are left out."""
    return [v for v in (version_for(t) for t in tags) if v is not None]


class Maintainer(Message):
    name: str = ""
    email: str = ""
    url: str = ""


class Dependency(Message):
    name: str
    version: str = ""
    repository: str = ""
    condition: str = ""
    tags: list[str] = Field(default_factory=list)
    enabled: bool = False
    import_values: list[Any] = Field(default_factory=list, alias="import-values")
    alias: str = ""

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if value and not _ALIAS.match(value):
            raise ValueError(f"dependency alias {value[:80]!r} has disallowed characters")
        return value

    @property
    def key(self) -> str:
        return self.alias or self.name

    @property
    def remote(self) -> bool:
        """A dependency that `helm dependency build` fetches (a repository URL that is not a local `file://`)."""
        return bool(self.repository) and not self.repository.startswith("file://")


class ChartMetadata(Message):
    """Chart.yaml, the fields Helm's chart.Metadata has. apiVersion v2 only: v1 (Helm 2's format, dependencies in
    requirements.yaml) is refused, and v3 is behind Helm's HELM_EXPERIMENTAL_CHART_V3 gate, which Ferry never sets."""

    name: str
    home: str = ""
    sources: list[str] = Field(default_factory=list)
    version: str
    description: str = ""
    keywords: list[str] = Field(default_factory=list)
    maintainers: list[Maintainer] = Field(default_factory=list)
    icon: str = ""
    api_version: str = Field(alias="apiVersion")
    condition: str = ""
    tags: str = ""
    app_version: str = Field("", alias="appVersion")
    deprecated: bool = False
    annotations: dict[str, str] = Field(default_factory=dict)
    kube_version: str = Field("", alias="kubeVersion")
    dependencies: list[Dependency] = Field(default_factory=list)
    type: str = ""

    @model_validator(mode="before")
    @classmethod
    def _sanitized(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("Chart.yaml is not a mapping")
        out = dict(data)
        for key in ("name", "description", "home", "icon", "condition", "tags", "appVersion", "kubeVersion", "version"):
            if isinstance(out.get(key), str):
                out[key] = sanitize(out[key])
        for key in ("sources", "keywords"):
            if isinstance(out.get(key), list):
                out[key] = [sanitize(x) if isinstance(x, str) else x for x in out[key]]
        if out.get("maintainers") and any(m is None for m in out["maintainers"]):
            raise ValueError("maintainers must not contain empty or null nodes")
        if out.get("dependencies") and any(d is None for d in out["dependencies"]):
            raise ValueError("dependencies must not contain empty or null nodes")
        return out

    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value == "v2":
            return value
        if value == "v1":
            raise ValueError(
                "apiVersion v1 (Helm 2's chart format) is not supported: set apiVersion: v2 and move "
                "requirements.yaml's dependencies into Chart.yaml"
            )
        raise ValueError(f"apiVersion {value[:40]!r} is not supported: Ferry delivers apiVersion v2 charts")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError("name is required")
        if value in (".", "..") or "/" in value or "\\" in value or len(value) > MAX_CHART_NAME:
            raise ValueError(f"name {value[:80]!r} is invalid: it names the chart's directory")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not is_strict_semver(value):
            raise ValueError(
                f"version {value[:80]!r} is not strict semver (MAJOR.MINOR.PATCH[-PRE][+BUILD], no "
                "leading v): Helm lists OCI chart versions by strict semver only"
            )
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value and value not in CHART_TYPES:
            raise ValueError("type must be application or library")
        return value

    @model_validator(mode="after")
    def _unique_dependencies(self) -> ChartMetadata:
        seen: set[str] = set()
        for dep in self.dependencies:
            if dep.key in seen:
                raise ValueError(f"more than one dependency with name or alias {dep.key!r}")
            seen.add(dep.key)
        return self


def parse_chart_yaml(data: Any, where: str = "Chart.yaml") -> ChartMetadata:
    """Chart.yaml's parsed YAML as ChartMetadata; ChartError names the first problem."""
    from pydantic import ValidationError

    try:
        return ChartMetadata.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or "chart"
        raise ChartError(f"{where}: {loc}: {first.get('msg', 'invalid')}".replace("Value error, ", "")) from None


def _omit(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Go's omitempty: "", false, 0, empty lists and maps, and None are left out."""
    return {k: v for k, v in pairs if v not in ("", False, None) and v != [] and v != {}}


def _config_object(meta: ChartMetadata) -> dict[str, Any]:
    maintainers = [_omit([("name", m.name), ("email", m.email), ("url", m.url)]) for m in meta.maintainers]
    deps = []
    for d in meta.dependencies:
        # name and repository carry no omitempty in dependency.go
        deps.append(
            {"name": d.name}
            | _omit([("version", d.version)])
            | {"repository": d.repository}
            | _omit(
                [
                    ("condition", d.condition),
                    ("tags", d.tags),
                    ("enabled", d.enabled),
                    ("import-values", d.import_values),
                    ("alias", d.alias),
                ]
            )
        )
    return _omit(
        [
            ("name", meta.name),
            ("home", meta.home),
            ("sources", meta.sources),
            ("version", meta.version),
            ("description", meta.description),
            ("keywords", meta.keywords),
            ("maintainers", maintainers),
            ("icon", meta.icon),
            ("apiVersion", meta.api_version),
            ("condition", meta.condition),
            ("tags", meta.tags),
            ("appVersion", meta.app_version),
            ("deprecated", meta.deprecated),
            ("annotations", dict(sorted(meta.annotations.items()))),
            ("kubeVersion", meta.kube_version),
            ("dependencies", deps),
            ("type", meta.type),
        ]
    )


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, map keys as given (callers sort maps), UTF-8, and
    `<`, `>`, `&`, U+2028, U+2029 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


def chart_config(meta: ChartMetadata) -> bytes:
    """The config blob: Chart.yaml as JSON in chart.Metadata's field order, omitempty, compact."""
    return go_json(_config_object(meta))


def oci_annotations(meta: ChartMetadata, created: str) -> dict[str, str]:
    """The manifest annotations `helm push` writes: description, title, version, url, created, source, authors
    (each only when not blank), then every Chart.yaml annotation except title and version. Sorted by key."""
    out: dict[str, str] = {}

    def add(key: str, value: str) -> None:
        if value.strip():
            out[key] = value

    add(ANNOTATION_DESCRIPTION, meta.description)
    add(ANNOTATION_TITLE, meta.name)
    add(ANNOTATION_VERSION, meta.version)
    add(ANNOTATION_URL, meta.home)
    add(ANNOTATION_CREATED, created)
    if meta.sources:
        add(ANNOTATION_SOURCE, meta.sources[0])
    if meta.maintainers:
        add(ANNOTATION_AUTHORS, ", ".join(m.name + (f" ({m.email})" if m.email else "") for m in meta.maintainers))
    for key, value in meta.annotations.items():
        if key not in _IMMUTABLE_ANNOTATIONS:
            out[key] = value
    return dict(sorted(out.items()))


def descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def chart_manifest(config: dict[str, Any], layers: list[dict[str, Any]], annotations: dict[str, str]) -> dict[str, Any]:
    """The image manifest `helm push` writes: schemaVersion 2, config, layers sorted by digest (no per-layer
    annotations), annotations sorted; no mediaType or artifactType in the body."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "config": config,
        "layers": sorted(layers, key=lambda d: str(d["digest"])),
    }
    if annotations:
        body["annotations"] = dict(sorted(annotations.items()))
    return body


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The bytes pushed (and so hashed into the manifest digest): compact, as Go marshals ocispec.Manifest."""
    return go_json(manifest)


def chart_archive_name(meta: ChartMetadata) -> str:
    """`NAME-VERSION.tgz`, as `helm package` names it (save.go)."""
    return f"{meta.name}-{meta.version}.tgz"


class PushChartInput(Message):
    """Push a packaged chart in Helm's layout to ``repository`` (HOST/PATH/NAME) at ``tag_for(version)``.

    ``metadata`` None (what the ReleaseWorkflow sends: Chart.yaml stays out of history) is read from the archive
    on the host that pushes. ``annotations`` (Ferry's: publisher, release workflow, revision) are added to Helm's
    and win over a Chart.yaml annotation of the same key, so a chart cannot claim its own publisher."""

    repository: Repository
    archive_path: str = Field(description="the chart .tgz on this host")
    metadata: ChartMetadata | None = None
    version: str = Field("", description="the chart version expected in the archive ('' : whatever it says)")
    created: str = Field(description="RFC 3339: the org.opencontainers.image.created annotation")
    annotations: dict[str, str] = Field(default_factory=dict)


class PushChartResult(Message):
    repository: str
    tag: str
    version: str
    digest: str = Field(description="manifest digest")
    layer_digest: str
    size: int
    already_released: bool = False


class PullChartInput(Message):
    repository: Repository
    digest: Digest = Field(description="manifest digest; pulling by tag is refused so a moved tag cannot change it")
    dest_dir: str


class PullChartResult(Message):
    path: str = Field(description="the verified chart .tgz on the worker")
    layer_digest: str
    size: int
    version: str = Field(description="the manifest's org.opencontainers.image.version annotation, if any")


class ChartVersionsResult(Message):
    versions: list[str] = Field(description="chart versions (tags read back with `_` as `+`, strict semver only)")
    tags: int = Field(description="how many tags the repository has in all")
