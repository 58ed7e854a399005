"""ferry.cosign: cosign's payload, tag and key formats, and the verification verdicts (pure, real keys)."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import ValidationError

from ferry.cosign import (
    MAX_PAYLOAD_BYTES,
    PublisherKey,
    ReleaseSigner,
    SignatureError,
    key_fingerprint,
    load_signer,
    signature_tag,
    simple_signing_payload,
    verify_release_signature,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REPO = "127.0.0.1:5000/team/app"


def _signer() -> ReleaseSigner:
    return ReleaseSigner(ec.generate_private_key(ec.SECP256R1()))


def _trusted(signer: ReleaseSigner, name: str = "ci-main") -> PublisherKey:
    return PublisherKey(name=name, key=signer.public_key_pem)


def test_signature_tag_is_cosigns() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    with pytest.raises(ValueError, match="not a sha256 digest"):
        signature_tag("sha256:short")


def test_payload_is_byte_for_byte_what_go_marshals() -> None:
    payload = simple_signing_payload(REPO, DIGEST, "alice")
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/team/app"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":{"dev.ferry.publisher":"alice"}}'
    )
    assert simple_signing_payload(REPO, DIGEST, None).endswith(b'"optional":null}')
    # Go's encoding/json escapes HTML characters
    assert b"\\u003cbot\\u003e \\u0026 co" in simple_signing_payload(REPO, DIGEST, "<bot> & co")


def test_fingerprint_matches_openssl(tmp_path: object) -> None:
    signer = _signer()
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=signer.public_key_pem.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert key_fingerprint(signer.public_key_pem) == "SHA256:" + hashlib.sha256(der).hexdigest()
    assert signer.fingerprint == key_fingerprint(signer.public_key_pem)


def test_publisher_key_refuses_what_is_not_an_ec_p256_public_key() -> None:
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for bad, why in [
        ("hello", "not a PEM public key"),
        (ed, "not an ECDSA P-256"),
        (p384, "not an ECDSA P-256"),
        ("x" * 5000, "at most 4096"),
    ]:
        with pytest.raises(ValidationError) as err:
            PublisherKey(name="ci", key=bad)
        assert err.value.errors()[0]["loc"] == ("key",)
        assert why in str(err.value)
    with pytest.raises(ValidationError, match="1-63 letters"):
        PublisherKey(name="bad name!", key=_signer().public_key_pem)
    with pytest.raises(ValidationError, match="Extra inputs"):
        PublisherKey.model_validate({"name": "ci", "key": _signer().public_key_pem, "trust": "all"})


def test_valid_signature_names_signer_and_attested_publisher() -> None:
    signer = _signer()
    payload = simple_signing_payload(REPO, DIGEST, "alice")
    verified = verify_release_signature(
        payload, signer.sign(payload), DIGEST, [_trusted(_signer(), "other"), _trusted(signer)]
    )
    assert (verified.key_name, verified.publisher) == ("ci-main", "alice")
    assert verified.fingerprint == signer.fingerprint
    assert verified.docker_reference == REPO


def test_payload_without_publisher_falls_back_to_the_key_name() -> None:
    signer = _signer()
    payload = simple_signing_payload(REPO, DIGEST, None)
    assert verify_release_signature(payload, signer.sign(payload), DIGEST, [_trusted(signer)]).publisher == "ci-main"


def test_signing_is_deterministic() -> None:
    signer = _signer()
    payload = simple_signing_payload(REPO, DIGEST, "alice")
    assert signer.sign(payload) == signer.sign(payload)


def _reason(payload: bytes, signature: str, digest: str, keys: list[PublisherKey]) -> SignatureError:
    with pytest.raises(SignatureError) as err:
        verify_release_signature(payload, signature, digest, keys)
    return err.value


def test_refusals_say_why() -> None:
    signer, stranger = _signer(), _signer()
    payload = simple_signing_payload(REPO, DIGEST, "alice")
    good = signer.sign(payload)

    unknown = _reason(payload, stranger.sign(payload), DIGEST, [_trusted(signer)])
    assert unknown.kind == "untrusted" and "unknown key" in unknown.reason and signer.fingerprint in unknown.reason

    tampered = payload.replace(b"alice", b"mallory")
    assert _reason(tampered, good, DIGEST, [_trusted(signer)]).kind == "untrusted"

    other = _reason(payload, good, OTHER, [_trusted(signer)])
    assert other.kind == "other-digest" and DIGEST in other.reason and OTHER in other.reason

    assert "not base64" in _reason(payload, "!!!", DIGEST, [_trusted(signer)]).reason
    assert _reason(payload, "", DIGEST, [_trusted(signer)]).kind == "unsigned"
    big = b" " * (MAX_PAYLOAD_BYTES + 1)
    assert _reason(big, signer.sign(big), DIGEST, [_trusted(signer)]).kind == "oversized"
    assert _reason(payload, "A" * 600, DIGEST, [_trusted(signer)]).kind == "oversized"
    assert _reason(payload, good, DIGEST, []).kind == "untrusted"


def test_malformed_payloads_signed_by_a_trusted_key_are_refused() -> None:
    signer = _signer()
    for body, why in [
        (b"not json", "not JSON"),
        (b"[]", "no 'critical'"),
        (
            json.dumps({"critical": {"type": "atomic container signature", "image": {}, "identity": {}}}).encode(),
            "critical.type",
        ),
        (
            json.dumps({"critical": {"type": "cosign container image signature", "identity": {}}}).encode(),
            "docker-manifest-digest",
        ),
    ]:
        err = _reason(body, signer.sign(body), DIGEST, [_trusted(signer)])
        assert err.kind == "malformed-payload" and why in err.reason


def test_load_signer_reads_pkcs8_sec1_and_encrypted_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sec1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3cret")
    )
    expected = ReleaseSigner(key).fingerprint
    assert load_signer(pkcs8).fingerprint == expected
    assert load_signer(sec1).fingerprint == expected
    assert load_signer(encrypted, b"s3cret").fingerprint == expected
    with pytest.raises(ValueError, match="FERRY_SIGN_KEY_PASSWORD"):
        load_signer(encrypted)
    with pytest.raises(ValueError, match="wrong FERRY_SIGN_KEY_PASSWORD"):
        load_signer(encrypted, b"wrong")
    with pytest.raises(ValueError, match="cosign's encrypted key format"):
        load_signer(
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        )
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="P-256"):
        load_signer(p384)


def test_signer_never_shows_or_serializes_its_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = ReleaseSigner(key)
    secret = key.private_numbers().private_value
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for text in (repr(signer), str(signer), f"{signer}"):
        assert signer.fingerprint in text
        assert str(secret) not in text and base64.b64encode(der).decode()[:40] not in text
    with pytest.raises(TypeError, match="never serialized"):
        pickle.dumps(signer)
