"""ReleaseWorkflow's vocabulary: input, result, packaging messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.oci import Repository
from ferry.versions import parse_release_version


class _Model(BaseModel):
    """Sent between the CLI, workflows and workers: unknown fields are tolerated (older/newer builds)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def release_workflow_id(repository: str, version: str) -> str:
    return f"release/{repository}/{version}"


class ReleaseInput(_Model):
    repository: Repository = Field(description="HOST[:PORT]/PATH")
    version: str = Field(description="semver tag, a leading v allowed and kept")
    ci_task_queue: str = Field(description="task queue served by the `ferry release` process on the CI host")
    bundle_dir: str = Field(description="directory on the CI host")
    revision: str = ""
    source: str = ""
    publisher: str
    created: str | None = Field(None, description="RFC 3339; from the revision's commit time when known")
    timeout_seconds: int = Field(900, ge=10, description="how long registry outages may delay the release")
    sign_key_fingerprint: str | None = Field(
        None, description="SHA256:<hex> of the key the `ferry release` process signs with (--sign-key); the key "
                          "itself never leaves that process. None: an unsigned release")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        parse_release_version(value)
        return value

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
    max_file_bytes: int = 5 * 1024 * 1024


class PackageBundleResult(_Model):
    path: str = Field(description="the tar.gz on the CI host")
    layer_digest: str
    size: int
    files: int
