"""A publisher's cosign key pair and Ferry's own signing adapter: releases that Ferry (tests/e2e) and Flux
(tests/flux) must verify."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from activities.registry import Registries, SignatureActivities
from ferry.cosign import ReleaseSigner, SignArtifactInput, load_signer
from ferry.settings import Settings


def key_pair() -> tuple[ReleaseSigner, str]:
    """(signer, the public key as PEM, what `cosign.pub` holds)."""
    private = ec.generate_private_key(ec.SECP256R1())
    signer = load_signer(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return signer, public.decode()


def sign_release(
    settings: Settings, signer: ReleaseSigner, repository: str, digest: str, publisher: str = "ci-bot"
) -> None:
    """Sign as `ferry release --sign-key` does (the `sha256-<hex>.sig` tag beside the release)."""
    SignatureActivities(Registries(settings.registry), signer).sign_artifact(
        SignArtifactInput(repository=repository, digest=digest, publisher=publisher, key_fingerprint=signer.fingerprint)
    )
