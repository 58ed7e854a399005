"""`ferry verify REPO:TAG --key PUB`: check a release's signature (cosign's format) the way environments do."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from cli.common import CommandError, emit, settings_from
from ferry.artifacts import ResolveTagInput
from ferry.cosign import MAX_PUBLIC_KEY_PEM, PublisherKey, VerifyArtifactInput
from ferry.oci import is_digest, is_tag, split_repository
from workers.wiring import RegistryActivities, SignatureActivities, verify_activities


def split_reference(reference: str) -> tuple[str, str]:
    """``HOST[:PORT]/PATH:TAG`` or ``HOST[:PORT]/PATH@sha256:…`` -> (repository, tag or digest)."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        if not is_digest(digest):
            raise CommandError(f"{reference}: {digest!r} is not a sha256 digest")
        return repository, digest
    repository, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag or not is_tag(tag):
        raise CommandError(f"{reference}: expected REPOSITORY:TAG or REPOSITORY@sha256:DIGEST")
    return repository, tag


def read_public_keys(paths: list[str]) -> list[PublisherKey]:
    """Each --key file as a trusted publisher named after the file (cosign.pub -> cosign)."""
    keys: list[PublisherKey] = []
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                pem = handle.read(MAX_PUBLIC_KEY_PEM + 1)
        except OSError as err:
            raise CommandError(f"--key {path}: {err.strerror}") from None
        name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(path).stem).strip(".-_")[:63] or "key"
        if any(k.name == name for k in keys):
            name = f"{name[:58]}-{len(keys) + 1}"
        try:
            keys.append(PublisherKey(name=name, key=pem))
        except ValidationError as err:
            raise CommandError(f"--key {path}: {err.errors()[0]['msg']}") from None
    return keys


def verify_reference(
    reference: str,
    key_paths: list[str],
    activities: SignatureActivities,
    registry: RegistryActivities,
    default_registry: str | None = None,
) -> dict[str, Any]:
    """Resolve the reference to a digest and verify its signature; CommandError carries the reason."""
    repository, ref = split_reference(reference)
    host = repository.split("/")[0] if "/" in repository else ""
    if default_registry and not any(c in host for c in ".:"):
        repository = f"{default_registry}/{repository}"  # a bare PATH is on the default registry
    try:
        split_repository(repository)
    except ValueError as err:
        raise CommandError(str(err)) from None
    keys = read_public_keys(key_paths)
    try:
        digest = ref if is_digest(ref) else registry.resolve_tag(ResolveTagInput(repository=repository, tag=ref)).digest
        assert digest is not None
        verified = activities.verify_artifact(
            VerifyArtifactInput(repository=repository, digest=digest, publishers=keys)
        )
    except ApplicationError as err:
        raise CommandError(f"{reference}: {err.type}: {err.message}") from None
    return {
        "repository": repository,
        "reference": ref,
        "digest": digest,
        "verified": True,
        "key_name": verified.key_name,
        "fingerprint": verified.fingerprint,
        "publisher": verified.publisher,
        "signature_tag": verified.signature_tag,
    }


def cmd_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    signatures, registry = verify_activities(settings)
    out = verify_reference(args.reference, args.key, signatures, registry, settings.registry.default)
    emit(
        out,
        args.json,
        f"verified {out['repository']}@{out['digest']}\n"
        f"signed by: {out['key_name']} {out['fingerprint']}\n"
        f"publisher: {out['publisher']}",
    )
    return 0
