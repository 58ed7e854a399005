"""Models for the registry adapter: one model in, one out, for every activity."""

from __future__ import annotations

from pydantic import Field, field_validator

from ferry.model import Message
from ferry.oci import Digest, Repository, is_tag

_Model = Message  # the one base (ferry/model.py), frozen; unknown fields from a newer build are ignored


class _RepositoryModel(_Model):
    repository: Repository = Field(description="HOST[:PORT]/PATH of the OCI repository")


class PushArtifactInput(_RepositoryModel):
    """Push one file (already on this worker's disk) as a single-layer OCI artifact."""

    tag: str
    file_path: str = Field(description="path on the worker that runs the activity")
    layer_media_type: str
    config_media_type: str
    config_json: str = "{}"
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("tag")
    @classmethod
    def _valid_tag(cls, value: str) -> str:
        if not is_tag(value):
            raise ValueError(f"{value!r} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")
        return value


class PushArtifactResult(_Model):
    digest: str = Field(description="manifest digest the tag now points to")
    layer_digest: str
    size: int = Field(description="layer size in bytes")


class ListTagsInput(_RepositoryModel):
    pass


class ListTagsResult(_Model):
    tags: list[str]


class ResolveTagInput(_RepositoryModel):
    tag: str
    missing_ok: bool = Field(
        default=False, description="answer digest=None for an absent tag instead of raising NotFound"
    )


class ResolveTagResult(_Model):
    digest: str | None


class FetchManifestInput(_RepositoryModel):
    reference: str = Field(description="a tag or a sha256 digest")


class Layer(_Model):
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = Field(default_factory=dict)


class Manifest(_Model):
    digest: str
    media_type: str
    config_media_type: str
    config_digest: str
    layers: list[Layer]
    annotations: dict[str, str] = Field(default_factory=dict)

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)


class PullArtifactInput(_RepositoryModel):
    digest: Digest = Field(description="manifest digest; pulling by tag is refused so a moved tag cannot change it")
    dest_dir: str
    layer_media_type: str
    config_media_type: str = Field(
        "", description="refuse the manifest (BadInput, before any layer is read) unless its config is this ('': any)"
    )


class PullArtifactResult(_Model):
    path: str = Field(description="the verified layer file on the worker")
    layer_digest: str
    size: int
    manifest: Manifest
