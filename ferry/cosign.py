"""Release signatures in cosign's format: keyed ECDSA P-256 over a "simple signing" payload.

What cosign (and Flux's OCIRepository ``verify: {provider: cosign}``) reads and writes, so either can check
the other's signatures:

- the signature of manifest ``sha256:<hex>`` lives in the same repository under the tag ``sha256-<hex>.sig``
  (:func:`signature_tag`): an OCI manifest with one layer per signature, each layer of media type
  :data:`SIMPLE_SIGNING_MEDIA_TYPE` whose blob is the payload (:func:`simple_signing_payload`) and whose
  annotation :data:`SIGNATURE_ANNOTATION` is the base64 of an ASN.1/DER ECDSA-P256-SHA256 signature over it;
- public keys are PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) text, as ``cosign generate-key-pair`` writes.

Who is who (the trust model): a :class:`PublisherKey` listed by an environment is what that environment
trusts; its ``name`` is the *trusted signer* (``key_name``). The payload's ``optional["dev.ferry.publisher"]``
is who CI *attests* triggered the release (``ferry release --published-by``); it is believed only because a
trusted key signed it. :func:`verify_release_signature` returns both; ``publisher`` falls back to the key's
name when the payload attests nobody (a signature made by plain ``cosign sign``). Segregation of duties
compares approvers with ``publisher``. ``critical.identity.docker-reference`` is informational (Ferry writes
the repository, as cosign does; cosign does not check it either): the manifest digest binds the content.

Pure: no I/O, no clock; verification has no randomness (signing is deterministic too, RFC 6979), so this
module can be passed through into Temporal's workflow sandbox. Imports: stdlib, pydantic, cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.oci import Digest, Repository, is_digest

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
PUBLISHER_ANNOTATION = "dev.ferry.publisher"
# The config blob of cosign's signature manifests (go-containerregistry's image config).
SIGNATURE_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"

# Bounds on hostile input: a simple-signing payload is a few hundred bytes; a DER P-256 signature is at most
# 72 bytes (96 in base64); a PEM P-256 public key is ~180 bytes.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURE_B64 = 512
MAX_PUBLIC_KEY_PEM = 4096
MAX_PUBLISHER = 256
MAX_PUBLISHER_KEYS = 32

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class SignatureError(ValueError):
    """A signature that does not prove what it should. ``reason`` is one line for a person; ``kind`` is a
    stable code: unsigned, oversized, malformed-signature, untrusted, malformed-payload, other-digest."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# ------------------------------------------------------------------------------------------ keys ---


def _public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """The EC P-256 public key in ``pem``; ValueError says what is wrong without echoing the text."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ValueError("not a PEM public key (expected '-----BEGIN PUBLIC KEY-----', as cosign.pub)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key (cosign keys are EC P-256)")
    return key


def _fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def key_fingerprint(pem: str) -> str:
    """``SHA256:<64 lowercase hex>`` of the key's DER SubjectPublicKeyInfo: the same as
    ``openssl pkey -pubin -in cosign.pub -outform DER | sha256sum``. ValueError for anything but EC P-256."""
    return _fingerprint(_public_key(pem))


class PublisherKey(BaseModel):
    """A key an environment trusts to sign releases (``verify: {publishers: [{name, key}]}``). Typed by
    people in environments.yaml, so unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the trusted signer, e.g. ci-main (letters, digits, . _ -; at most 63)")
    key: str = Field(max_length=MAX_PUBLIC_KEY_PEM, description="PEM EC P-256 public key (cosign.pub)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"name {value[:80]!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            _public_key(value)
        except ValueError as err:
            raise ValueError(f"key: {err}") from None
        return value.strip() + "\n"

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)


class ReleaseSigner:
    """A private signing key held in memory on the CI host. Its repr and str never show the key; it is not
    a pydantic model on purpose, so it cannot be serialized into a payload by accident."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the signing key is not ECDSA P-256 (cosign keys are EC P-256)")
        self._key = key
        self.public_key_pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )
        self.fingerprint = _fingerprint(key.public_key())

    def __repr__(self) -> str:
        return f"ReleaseSigner({self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a ReleaseSigner holds a private key and is never serialized")

    def sign(self, payload: bytes) -> str:
        """base64 of the DER ECDSA-P256-SHA256 signature, as cosign stores it. Deterministic (RFC 6979), so a
        retried signing produces the same bytes."""
        der = self._key.sign(payload, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        return base64.b64encode(der).decode("ascii")


def load_signer(pem: bytes, password: bytes | None = None) -> ReleaseSigner:
    """A PEM EC P-256 private key (PKCS#8 ``PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY`` or SEC1 ``EC PRIVATE
    KEY``). ValueError names the problem and never quotes the key. cosign's own ``ENCRYPTED SIGSTORE PRIVATE
    KEY`` (scrypt + NaCl secretbox) is not read: make a key with openssl (see ``ferry release --help``)."""
    if b"SIGSTORE PRIVATE KEY" in pem or b"COSIGN PRIVATE KEY" in pem:
        raise ValueError(
            "this is cosign's encrypted key format, which Ferry does not read: make a PEM key with "
            "`openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "
            "release.key` (and `cosign import-key-pair --key release.key` if cosign should use it too)"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=password or None)
    except TypeError:
        if password:
            raise ValueError("the key is not encrypted, but FERRY_SIGN_KEY_PASSWORD is set") from None
        raise ValueError("the key is encrypted: put its password in FERRY_SIGN_KEY_PASSWORD") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a readable PEM private key, or a wrong FERRY_SIGN_KEY_PASSWORD") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the signing key is not an EC key (cosign keys are ECDSA P-256)")
    return ReleaseSigner(key)


# -------------------------------------------------------------------------------------- payload ---


def _hex(manifest_digest: str) -> str:
    if not is_digest(manifest_digest):
        raise ValueError(f"{manifest_digest[:100]!r} is not a sha256 digest")
    return manifest_digest.removeprefix("sha256:")


def signature_tag(manifest_digest: str) -> str:
    """Where cosign keeps the signatures of a manifest: ``sha256:<hex>`` -> ``sha256-<hex>.sig``."""
    return f"sha256-{_hex(manifest_digest)}.sig"


def simple_signing_payload(docker_reference: str, manifest_digest: str, publisher: str | None) -> bytes:
    """The payload cosign signs, byte for byte as Go's encoding/json writes sigstore's SimpleContainerImage
    (struct field order, compact, HTML-escaped); ``optional`` is null when no publisher is attested."""
    _hex(manifest_digest)
    optional: dict[str, str] | None = {PUBLISHER_ANNOTATION: publisher} if publisher else None
    body = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": optional,
    }
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    # NB: Go's json.Marshal escapes <, > and & (and U+2028/9); the bytes must match what cosign would sign.
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


# ---------------------------------------------------------------------------------- verification ---


class VerifiedRelease(BaseModel):
    """What a valid signature proves."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key_name: str = Field(description="the trusted signer: the environment's name for the key that verified")
    fingerprint: str = Field(description="SHA256:<hex> of that key")
    publisher: str = Field(description="who CI attests released it (payload), else key_name")
    docker_reference: str = Field("", description="the repository the signer named (informational)")


def verify_release_signature(
    payload: bytes, signature_b64: str, manifest_digest: str, publishers: list[PublisherKey]
) -> VerifiedRelease:
    """Check that a trusted key signed ``payload`` and that the payload is cosign's claim about exactly
    ``manifest_digest``. The signature is checked before the payload is believed. Raises SignatureError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SignatureError("oversized", f"signature payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if len(signature_b64) > MAX_SIGNATURE_B64:
        raise SignatureError("oversized", f"signature of {len(signature_b64)} characters exceeds {MAX_SIGNATURE_B64}")
    if not signature_b64:
        raise SignatureError("unsigned", f"the layer has no {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed-signature", "bad signature: not base64") from None
    if not publishers:
        raise SignatureError("untrusted", "no publisher keys are trusted, so no signature can verify")
    matched: PublisherKey | None = None
    for candidate in publishers:
        try:
            _public_key(candidate.key).verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        matched = candidate
        break
    if matched is None:
        names = ", ".join(f"{p.name} {p.fingerprint}" for p in publishers[:5])
        more = f" and {len(publishers) - 5} more" if len(publishers) > 5 else ""
        raise SignatureError(
            "untrusted",
            f"bad signature or unknown key: it verifies with none of the trusted keys ({names}{more}); "
            "it was made by another key or the payload was altered",
        )
    claim = _parse_payload(payload)
    claimed_digest = claim["critical"]["image"]["docker-manifest-digest"]
    if claimed_digest != manifest_digest:
        raise SignatureError(
            "other-digest",
            f"signed by {matched.name}, but for another artifact: the payload "
            f"names {str(claimed_digest)[:80]}, not {manifest_digest}",
        )
    optional = claim.get("optional") or {}
    attested = optional.get(PUBLISHER_ANNOTATION) if isinstance(optional, dict) else None
    publisher = attested.strip() if isinstance(attested, str) and attested.strip() else matched.name
    return VerifiedRelease(
        key_name=matched.name,
        fingerprint=matched.fingerprint,
        publisher=publisher[:MAX_PUBLISHER],
        docker_reference=str(claim["critical"]["identity"].get("docker-reference", ""))[:512],
    )


def _parse_payload(payload: bytes) -> dict[str, Any]:
    def malformed(why: str) -> SignatureError:
        return SignatureError("malformed-payload", f"malformed payload: {why}")

    try:
        claim = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise malformed("not JSON") from None
    if not isinstance(claim, dict) or not isinstance(claim.get("critical"), dict):
        raise malformed("no 'critical' object")
    critical = claim["critical"]
    if critical.get("type") != COSIGN_SIGNATURE_TYPE:
        raise malformed(f"critical.type is {str(critical.get('type'))[:80]!r}, not {COSIGN_SIGNATURE_TYPE!r}")
    image, identity = critical.get("image"), critical.get("identity")
    if not isinstance(image, dict) or not isinstance(image.get("docker-manifest-digest"), str):
        raise malformed("no critical.image.docker-manifest-digest")
    if not isinstance(identity, dict):
        raise malformed("no critical.identity")
    optional = claim.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise malformed("optional is not an object")
    return claim


# -------------------------------------------------------------------------------- activity models ---


class _Wire(BaseModel):
    """Sent between workflows and workers: unknown fields are tolerated (older/newer workers)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class SignArtifactInput(_Wire):
    """Sign a released manifest with the key the CI process holds. Never carries the key."""

    repository: Repository
    digest: Digest = Field(description="the manifest digest to sign")
    publisher: str = Field(max_length=MAX_PUBLISHER, description="who CI attests released it")
    key_fingerprint: str = Field(
        description="the key the release was started with; refused if the worker holds another"
    )


class SignArtifactResult(_Wire):
    signature_tag: str = Field(description="sha256-<hex>.sig")
    signature_digest: str = Field(description="manifest digest of the signature artifact")
    key_fingerprint: str
    payload_digest: str = Field(description="digest of the simple-signing payload layer")
    already_signed: bool = False


class VerifyArtifactInput(_Wire):
    repository: Repository
    digest: Digest = Field(description="the manifest digest whose signature is checked")
    publishers: list[PublisherKey] = Field(max_length=MAX_PUBLISHER_KEYS, description="the trusted keys")


class VerifyArtifactResult(_Wire):
    publisher: str = Field(description="who CI attests released it (signed payload), else key_name")
    key_name: str = Field(description="the trusted signer: the name the environment gave the key")
    fingerprint: str = Field(description="SHA256:<hex> of the key that verified")
    signature_tag: str = ""
