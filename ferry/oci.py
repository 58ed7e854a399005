"""OCI media types and annotations. Flux's, so Flux and ferry read each other's artifacts."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"
FLUX_CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"

ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_PUBLISHED_BY = "dev.ferry.published-by"
ANNOTATION_RELEASE_WORKFLOW = "dev.ferry.release-workflow-id"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# host[:port]/path(/path)* — lowercase path components as the distribution spec requires.
_REPOSITORY = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?)/(?P<path>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)$"
)


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def is_tag(value: str) -> bool:
    return bool(_TAG.match(value))


def split_repository(repository: str) -> tuple[str, str]:
    """``127.0.0.1:5000/team/app`` -> (``127.0.0.1:5000``, ``team/app``); ValueError names the problem."""
    m = _REPOSITORY.match(repository)
    if not m:
        raise ValueError(
            f"repository {repository!r} is not HOST[:PORT]/PATH with a lowercase path "
            "(for example 127.0.0.1:5000/team/app)"
        )
    return m.group("host"), m.group("path")


def _repository(value: str) -> str:
    split_repository(value)
    return value


def _digest(value: str) -> str:
    if not is_digest(value):
        raise ValueError(f"{value!r} is not a sha256 digest")
    return value


# Field types for models: validated once, here.
Repository = Annotated[str, AfterValidator(_repository)]
Digest = Annotated[str, AfterValidator(_digest)]
