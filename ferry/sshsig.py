"""The SSHSIG signature format (OpenSSH's PROTOCOL.sshsig, as ``ssh-keygen -Y sign`` writes it): the SSH wire
format, public key lines and fingerprints, the armor, parsing and verifying a signature, OpenSSH private keys, and
the raw signing primitive. Approval policy (what is signed and who may sign) is :mod:`ferry.approvals`.

The wire format (armor, SSH strings, the signed blob) is written out below; every cryptographic operation is
``cryptography``'s. Keys: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa of at least 2048 bits (signatures rsa-sha2-512
or rsa-sha2-256, never SHA-1).

Pure: no I/O, no clock, no randomness in verification (signing randomness is ECDSA's nonce, on the CLI only),
so this module is passed through into Temporal's workflow sandbox. Imports: stdlib, cryptography.
``sshsig`` on PyPI does not fit: it verifies only (no signing) and has no ECDSA, so it covers neither
``ferry approve`` nor nistp256 keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Bounds on hostile input: an armored SSHSIG is ~300 characters for ed25519/ecdsa and ~1.9 KiB for a 4096-bit RSA
# key; a public key line is ~100 characters (ed25519) to ~750 (RSA 4096); an OpenSSH private key file is a few KiB.
MAX_SIGNATURE = 8192
MAX_KEY_LINE = 4096
MAX_PRIVATE_KEY = 64 * 1024
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # OpenSSH's own limit
MAX_NAME = 128

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"

_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
_MAGIC = b"SSHSIG"
_SIG_VERSION = 1
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha512": hashes.SHA512, "sha256": hashes.SHA256}
_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class ApprovalError(ValueError):
    """A signed decision that proves nothing. ``reason`` is one line for a person (never key material); ``kind``
    is a stable code: statement, armor, format, namespace, signature, unlisted, name, key, encrypted (a private
    key that needs a password)."""

    def __init__(self, reason: str, kind: str = "signature") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


# ----------------------------------------------------------------------------------- SSH wire format ---


class _Reader:
    """SSH wire-format reader over bytes; every length is checked against what is left."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._at, self._what = data, 0, what

    def raw(self, n: int) -> bytes:
        if n > len(self._data) - self._at:
            raise ApprovalError(f"{self._what} is truncated", "format")
        out = self._data[self._at : self._at + n]
        self._at += n
        return out

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.raw(4))[0]
        return value

    def string(self) -> bytes:
        return self.raw(self.u32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise ApprovalError(f"{self._what} has a non-ASCII name", "format") from None

    def mpint(self) -> int:
        data = self.string()
        if data and (data[0] & 0x80 or (data[0] == 0 and (len(data) == 1 or not data[1] & 0x80))):
            raise ApprovalError(f"{self._what} has a negative or non-minimal integer", "format")
        return int.from_bytes(data, "big")

    def end(self) -> None:
        if self._at != len(self._data):
            raise ApprovalError(f"{self._what} has {len(self._data) - self._at} trailing bytes", "format")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    return _string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


# ------------------------------------------------------------------------------------------- keys ---


def _load_public_key(key_type: str, blob: bytes) -> PublicKey:
    """The key in an SSH public key blob of ``key_type``, checked for the types and sizes Ferry accepts."""
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key type {key_type[:40]!r} is not accepted (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa)")
    inner = _Reader(blob, "public key")
    if inner.text() != key_type:
        raise ValueError(f"public key data is not a {key_type} key")
    try:
        key = serialization.load_ssh_public_key(key_type.encode() + b" " + base64.b64encode(blob))
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"not a valid {key_type} public key") from None
    if isinstance(key, rsa.RSAPublicKey) and not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} (at most {MAX_RSA_BITS})")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("only the nistp256 curve is accepted for ECDSA keys")
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"key type {key_type} is not accepted")
    return key


def _canonical_blob(key: PublicKey) -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split(b" ")[1])


def _parse_key_line(line: str) -> tuple[PublicKey, bytes]:
    """(key, canonical blob) of one OpenSSH public key line ``TYPE BASE64 [comment]``; ValueError names what is
    wrong without echoing the line."""
    if len(line) > MAX_KEY_LINE:
        raise ValueError(f"public key line of {len(line)} characters exceeds {MAX_KEY_LINE}")
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or _CONTROL.search(line.strip()):
        raise ValueError("not an OpenSSH public key line (expected 'ssh-ed25519 AAAA... [comment]', as in id_*.pub)")
    key_type, b64 = parts[0], parts[1]
    if key_type not in _KEY_TYPES:
        raise ValueError(f"key type {key_type[:40]!r} is not accepted (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa)")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key's base64 does not decode") from None
    try:
        key = _load_public_key(key_type, blob)
    except ApprovalError as err:
        raise ValueError(err.reason) from None
    return key, _canonical_blob(key)


def _fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def key_fingerprint(public_key_line: str) -> str:
    """``SHA256:<base64, no padding>`` of an OpenSSH public key line, as ``ssh-keygen -l`` prints it.
    ValueError (an :class:`ApprovalError`, kind ``key``) says what is wrong with the line."""
    try:
        return _fingerprint(_parse_key_line(public_key_line)[1])
    except ApprovalError:
        raise
    except ValueError as err:
        raise ApprovalError(str(err), "key") from None


class ApproverKey(BaseModel):
    """One approver as environments.yaml lists it: ``{name: alice, key: "ssh-ed25519 AAAA… alice@laptop"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
    key: str = Field(
        max_length=MAX_KEY_LINE,
        description="one OpenSSH public key line: ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa (>= 2048 bits)",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            _parse_key_line(value)
        except ValueError as err:
            raise ValueError(f"key: {err}") from None
        return value.strip()


@dataclass(frozen=True)
class _Sshsig:
    key_type: str
    public_key: bytes
    namespace: str
    hash_algorithm: str
    signature_algorithm: str
    signature: bytes


def _dearmor(armored: str) -> bytes:
    if len(armored) > MAX_SIGNATURE:
        raise ApprovalError(f"signature of {len(armored)} characters exceeds {MAX_SIGNATURE}", "armor")
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise ApprovalError(f"signature is not armored as {_ARMOR_BEGIN} ... {_ARMOR_END}", "armor")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise ApprovalError("signature armor is not base64", "armor") from None


def _parse_sshsig(armored: str) -> _Sshsig:
    r = _Reader(_dearmor(armored), "signature")
    if r.raw(6) != _MAGIC:
        raise ApprovalError("signature is not an SSHSIG blob", "format")
    if (version := r.u32()) != _SIG_VERSION:
        raise ApprovalError(f"signature version {version} is not supported (1)", "format")
    public_key = r.string()
    try:
        namespace = r.string().decode("utf-8")
    except UnicodeDecodeError:
        raise ApprovalError("signature namespace is not text", "format") from None
    r.string()  # reserved
    hash_algorithm = r.text()
    sig = _Reader(r.string(), "signature")
    r.end()
    signature_algorithm = sig.text()
    signature = sig.string()
    sig.end()
    key_type = _Reader(public_key, "signature's public key").text()
    return _Sshsig(
        key_type=key_type,
        public_key=public_key,
        namespace=namespace,
        hash_algorithm=hash_algorithm,
        signature_algorithm=signature_algorithm,
        signature=signature,
    )


def _signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = hashes.Hash(_HASHES[hash_algorithm]())
    digest.update(message)
    return (
        _MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest.finalize())
    )


def signature_public_key(signature: str) -> str:
    """The public key line (``TYPE BASE64``) embedded in an armored SSH signature; ApprovalError if malformed."""
    sig = _parse_sshsig(signature)
    try:
        _load_public_key(sig.key_type, sig.public_key)
    except ApprovalError:
        raise
    except ValueError as err:
        raise ApprovalError(f"signature's public key: {err}", "key") from None
    return f"{sig.key_type} {base64.b64encode(sig.public_key).decode()}"


def _verify(key: PublicKey, sig: _Sshsig, data: bytes) -> None:
    """cryptography's verification of one SSH signature; InvalidSignature or ApprovalError if it does not hold."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        if sig.signature_algorithm != "ssh-ed25519":
            raise ApprovalError(
                f"signature algorithm {sig.signature_algorithm[:40]} does not match an ed25519 key", "format"
            )
        key.verify(sig.signature, data)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if sig.signature_algorithm != "ecdsa-sha2-nistp256":
            raise ApprovalError(
                f"signature algorithm {sig.signature_algorithm[:40]} does not match a nistp256 key", "format"
            )
        rs = _Reader(sig.signature, "ECDSA signature")
        r, s = rs.mpint(), rs.mpint()
        rs.end()
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    else:
        rsa_hash = {"rsa-sha2-512": hashes.SHA512, "rsa-sha2-256": hashes.SHA256}.get(sig.signature_algorithm)
        if rsa_hash is None:
            raise ApprovalError(
                f"signature algorithm {sig.signature_algorithm[:40]} is not accepted for RSA keys "
                "(rsa-sha2-512, rsa-sha2-256)",
                "format",
            )
        key.verify(sig.signature, data, padding.PKCS1v15(), rsa_hash())


def _armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    return "\n".join([_ARMOR_BEGIN, *(b64[i : i + 70] for i in range(0, len(b64), 70)), _ARMOR_END]) + "\n"


_NOT_A_KEY = (
    "not an OpenSSH private key of an accepted type (expected '-----BEGIN OPENSSH PRIVATE KEY-----': "
    "ed25519, ecdsa nistp256 or rsa)"
)


def _load_private(private_key: bytes, password: bytes | None) -> Any:
    try:
        return serialization.load_ssh_private_key(private_key, password=password)
    except TypeError:
        raise ApprovalError(
            "the private key is encrypted: a password is needed (FERRY_KEY_PASSWORD)", "encrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ApprovalError(_NOT_A_KEY, "key") from None


def load_private_key(
    private_key: bytes, password: bytes | None = None
) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """An OpenSSH private key file (as ssh-keygen writes it) of an accepted type. ApprovalError (kind ``key``)
    says what is wrong, never echoing the key."""
    if len(private_key) > MAX_PRIVATE_KEY:
        raise ApprovalError(f"private key file of {len(private_key)} bytes exceeds {MAX_PRIVATE_KEY}", "key")
    if password:
        try:
            key = serialization.load_ssh_private_key(private_key, password=password)
        except TypeError:  # NB: cryptography's answer to a password for an unencrypted key: FERRY_KEY_PASSWORD is moot
            key = _load_private(private_key, None)
        except (ValueError, UnsupportedAlgorithm):
            raise ApprovalError(_NOT_A_KEY + ", or a wrong password", "key") from None
    else:
        key = _load_private(private_key, None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ApprovalError("private key type is not accepted (ed25519, ecdsa nistp256, rsa >= 2048 bits)", "key")
    try:
        _load_public_key(*_type_and_blob(key.public_key()))
    except ValueError as err:
        raise ApprovalError(f"private key: {err}", "key") from None
    return key


def _type_and_blob(key: PublicKey) -> tuple[str, bytes]:
    blob = _canonical_blob(key)
    return _Reader(blob, "public key").text(), blob


def public_key_line(private_key: bytes, password: bytes | None = None) -> str:
    """The OpenSSH public key line (``TYPE BASE64``) of a private key file."""
    key_type, blob = _type_and_blob(load_private_key(private_key, password).public_key())
    return f"{key_type} {base64.b64encode(blob).decode()}"


def sign(namespace: str, message: bytes, private_key: bytes, password: bytes | None = None) -> str:
    """The armored SSHSIG of ``message`` in ``namespace``, as ``ssh-keygen -Y sign -n <namespace>`` would make it
    (sha512; RSA keys sign with rsa-sha2-512). ``private_key`` is an OpenSSH private key file's bytes."""
    key = load_private_key(private_key, password)
    key_type, blob = _type_and_blob(key.public_key())
    data = _signed_data(namespace, "sha512", message)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm, raw = "ssh-ed25519", key.sign(data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        algorithm, raw = "ecdsa-sha2-nistp256", _mpint(r) + _mpint(s)
    else:
        algorithm, raw = "rsa-sha2-512", key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    assert key_type in _KEY_TYPES
    blob_out = (
        _MAGIC
        + struct.pack(">I", _SIG_VERSION)
        + _string(blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(algorithm.encode()) + _string(raw))
    )
    return _armor(blob_out)
