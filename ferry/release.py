"""ReleaseWorkflow's vocabulary: input, result, packaging messages."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from ferry.helm_oci import tag_for
from ferry.model import Message
from ferry.names import RELEASE_PREFIX
from ferry.oci import Repository
from ferry.versions import parse_release_version

_Model = Message  # the one base (ferry/model.py), frozen: sent between the CLI, workflows and workers


def release_workflow_id(repository: str, version: str) -> str:
    return f"{RELEASE_PREFIX}{repository}/{version}"


# The CI host's own task queue: `ferry release` makes one per run. Anything else (the main `ferry` queue,
# another worker's queue) would let a crafted ReleaseWorkflow package a directory of that worker's host.
# NB: the second form (host/8 hex) is an older `ferry release`'s: committed histories carry it, so it stays.
CI_TASK_QUEUE_PATTERN = re.compile(r"ferry-ci-[0-9a-f]{16,64}|ferry-ci/[A-Za-z0-9][A-Za-z0-9.-]{0,252}/[0-9a-f]{8}")
MAX_SOURCE_URL = 2048
MAX_BUNDLE_FILE_BYTES = 5 * 1024 * 1024  # one manifest file in a bundle (policies.PACKAGE_TIMEOUT assumes it)


def new_ci_task_queue() -> str:
    return f"ferry-ci-{secrets.token_hex(16)}"


def ci_task_queue_problem(queue: str) -> str | None:
    """Why ``queue`` cannot be a release's CI task queue, or None."""
    if CI_TASK_QUEUE_PATTERN.fullmatch(queue):
        return None
    return (
        f"ci_task_queue {queue[:80]!r} is not a CI host's queue (ferry-ci-<hex>, made by `ferry release`): "
        "packaging and push run only in the `ferry release` process that started the release"
    )


_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>\[[^]]+\]|[^:/\[]+):(?P<path>(?!//).*)$")


def strip_url_credentials(url: str) -> str:
    """A source URL with no secret in it, for history and OCI annotations: http(s) and other URLs lose their
    user-info, query and fragment (``https://user:token@host/r.git?x=1`` -> ``https://host/r.git``); ssh URLs
    and scp-like ``user@host:path`` keep the user name but no password. Local paths are unchanged."""
    url = url.strip()
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return ""  # unparseable (e.g. a broken IPv6 literal): nothing of it is kept
        userinfo, at, hostport = parts.netloc.rpartition("@")
        scheme = parts.scheme.lower()
        if scheme in ("ssh", "git+ssh", "ssh+git") and at:
            netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
            return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return urlunsplit((parts.scheme, hostport, parts.path, "", ""))
    match = _SCP_LIKE.match(url)
    if match and not url.startswith(("/", ".")):
        user = (match.group("user") or "").split(":", 1)[0]
        return f"{user + '@' if user else ''}{match.group('host')}:{match.group('path')}"
    return url


class ReleaseInput(_Model):
    repository: Repository = Field(description="HOST[:PORT]/PATH")
    version: str = Field(description="semver tag, a leading v allowed and kept; a chart's: strict semver")
    ci_task_queue: str = Field(description="task queue served by the `ferry release` process on the CI host")
    bundle_dir: str = Field(description="directory on the CI host")
    revision: str = ""
    source: str = ""
    publisher: str
    created: str | None = Field(None, description="RFC 3339; from the revision's commit time when known")
    timeout_seconds: int = Field(900, ge=10, description="how long registry outages may delay the release")
    sign_key_fingerprint: str | None = Field(
        None,
        description="SHA256:<hex> of the key the `ferry release` process signs with (--sign-key); the key "
        "itself never leaves that process. None: an unsigned release",
    )
    chart: bool = Field(
        False,
        description="bundle_dir is a Helm chart (`ferry release --chart`): pushed in Helm's OCI layout to "
        "repository (HOST/PATH/<chart name>) at tag_for(version), the version being Chart.yaml's",
    )

    @model_validator(mode="after")
    def _version(self) -> ReleaseInput:
        if self.chart:
            tag_for(self.version)  # ChartError (a ValueError): strict semver, `+` allowed (tag `_`)
        else:
            parse_release_version(self.version)
        return self

    @property
    def tag(self) -> str:
        """The OCI tag of this release: the version, or for a chart Helm's tag (`+` -> `_`)."""
        return tag_for(self.version) if self.chart else self.version

    @field_validator("ci_task_queue")
    @classmethod
    def _ci_task_queue(cls, value: str) -> str:
        problem = ci_task_queue_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        # NB: CI checkouts embed job tokens in remote.origin.url; nothing with a credential enters history.
        return strip_url_credentials(value)[:MAX_SOURCE_URL]

    @field_validator("publisher")
    @classmethod
    def _publisher(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("publisher is required: who releases this (CI identity or person)")
        return value.strip()


class ReleaseResult(_Model):
    repository: str
    version: str
    digest: str = Field(description="manifest digest")
    layer_digest: str
    size: int
    already_released: bool = False
    publisher: str
    signature_tag: str | None = Field(None, description="sha256-<hex>.sig when the release was signed")
    signature_key_fingerprint: str | None = None


class PackageBundleInput(_Model):
    bundle_dir: str
    max_file_bytes: int = MAX_BUNDLE_FILE_BYTES


class PackageBundleResult(_Model):
    path: str = Field(description="the tar.gz on the CI host")
    layer_digest: str
    size: int
    files: int


class PackageChartInput(_Model):
    chart_dir: str = Field(description="the chart directory on the CI host")
    version: str = Field("", description="the version the release expects Chart.yaml to say ('' : any)")


class PackageChartResult(_Model):
    path: str = Field(description="the chart .tgz on the CI host (NAME-VERSION.tgz, deterministic)")
    layer_digest: str
    size: int
    files: int
    name: str = Field(description="Chart.yaml's name: the last path component of the release's repository")
    version: str


def chart_version_problem(expected: str, actual: str, chart_dir: str) -> str | None:
    """Why a chart of version ``actual`` cannot be released as ``expected`` ('' expects nothing), or None."""
    if not expected or expected == actual:
        return None
    return (
        f"{chart_dir}: Chart.yaml says version {actual!r}, the release says {expected!r}: a chart is released under "
        "its Chart.yaml version (bump it there, or leave --version out)"
    )
