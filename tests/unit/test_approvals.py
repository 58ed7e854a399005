"""Signed approvals against the real OpenSSH: ssh-keygen makes the keys, signs statements Ferry verifies, and
verifies statements Ferry signs."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path

import pytest

from ferry.approvals import APPROVAL_NAMESPACE, SignedDecision, Statement, sign_statement, verify_decision
from ferry.sshsig import (
    MAX_SIGNATURE,
    ApprovalError,
    ApproverKey,
    key_fingerprint,
    public_key_line,
    signature_public_key,
)

KEY_TYPES = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa", "-b", "256"], "rsa": ["-t", "rsa", "-b", "3072"]}


def keygen(tmp: Path, name: str, kind: str = "ed25519", password: str = "") -> Path:
    path = tmp / f"id_{kind}_{name}"
    subprocess.run(
        ["ssh-keygen", "-q", *KEY_TYPES[kind], "-N", password, "-C", f"{name}@laptop", "-f", str(path)], check=True
    )
    return path


def pub(path: Path) -> str:
    return path.with_name(path.name + ".pub").read_text().strip()


def statement(**overrides: str) -> Statement:
    fields = {
        "environment": "production",
        "version": "1.1.0",
        "digest": "sha256:" + "ab" * 32,
        "promotion": "promote/production/1.1.0",
        "run": "0196f2c4-7a3e-7c1d-9a43-5a3f0e2b1c9d",
        "decision": "approve",
        "approver": "alice",
        "comment": 'looks good: ✓ "quoted"',
        "expires": "2026-12-01T13:00:00Z",
        **overrides,
    }
    return Statement.model_validate(fields)


def ssh_sign(tmp: Path, key: Path, text: str, namespace: str = APPROVAL_NAMESPACE) -> str:
    message = tmp / "statement.json"
    message.write_text(text)
    signature = tmp / "statement.json.sig"
    signature.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key), str(message)],
        check=True,
        capture_output=True,
    )
    return signature.read_text()


def refusal(signed: SignedDecision, approvers: list[ApproverKey]) -> ApprovalError:
    with pytest.raises(ApprovalError) as err:
        verify_decision(signed, approvers)
    return err.value


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_a_statement_signed_by_ssh_keygen_is_accepted(tmp_path: Path, kind: str) -> None:
    key = keygen(tmp_path, "alice", kind)
    text = statement().canonical()
    verified = verify_decision(
        SignedDecision(statement=text, signature=ssh_sign(tmp_path, key, text)),
        [ApproverKey(name="bob", key=pub(keygen(tmp_path, "bob"))), ApproverKey(name="alice", key=pub(key))],
    )
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], check=True, capture_output=True, text=True)
    assert verified.approver == "alice" and verified.statement == statement()
    assert verified.fingerprint == expected.stdout.split()[1] == key_fingerprint(pub(key))
    assert verified.fingerprint.startswith("SHA256:") and not verified.fingerprint.endswith("=")


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_a_ferry_signature_verifies_with_ssh_keygen(tmp_path: Path, kind: str) -> None:
    key = keygen(tmp_path, "alice", kind)
    signed = sign_statement(statement(), key.read_bytes())
    assert signed.statement == statement().canonical()
    (tmp_path / "allowed_signers").write_text(f"alice {pub(key)}\n")
    (tmp_path / "statement.sig").write_text(signed.signature)

    def ssh_verify(
        principal: str, message: str, namespace: str = APPROVAL_NAMESPACE
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(tmp_path / "allowed_signers"),
                "-I",
                principal,
                "-n",
                namespace,
                "-s",
                str(tmp_path / "statement.sig"),
            ],
            input=message,
            capture_output=True,
            text=True,
        )

    good = ssh_verify("alice", signed.statement)
    assert good.returncode == 0 and f'Good "{APPROVAL_NAMESPACE}" signature for alice' in good.stdout, good
    # the same check that accepts it refuses it for another message, principal or namespace
    assert ssh_verify("alice", signed.statement.replace("1.1.0", "1.2.0")).returncode != 0
    assert ssh_verify("bob", signed.statement).returncode != 0
    assert ssh_verify("alice", signed.statement, "git").returncode != 0
    assert verify_decision(signed, [ApproverKey(name="alice", key=pub(key))]).approver == "alice"
    assert signature_public_key(signed.signature) == " ".join(pub(key).split()[:2])


def test_an_encrypted_private_key_signs_with_its_password(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice", password="correct horse")
    signed = sign_statement(statement(), key.read_bytes(), b"correct horse")
    assert verify_decision(signed, [ApproverKey(name="alice", key=pub(key))]).approver == "alice"
    assert public_key_line(key.read_bytes(), b"correct horse") == " ".join(pub(key).split()[:2])
    with pytest.raises(ApprovalError, match="encrypted: a password is needed") as needs:
        sign_statement(statement(), key.read_bytes())
    assert needs.value.kind == "encrypted"
    with pytest.raises(ApprovalError, match="wrong password") as err:
        sign_statement(statement(), key.read_bytes(), b"wrong")
    assert "PRIVATE KEY-----\n" not in str(err.value) and err.value.kind == "key"
    with pytest.raises(ApprovalError, match="not an OpenSSH private key"):
        sign_statement(statement(), pub(key).encode())


def test_a_tampered_statement_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    signed = sign_statement(statement(), key.read_bytes())
    forged = statement(digest="sha256:" + "cd" * 32).canonical()
    err = refusal(
        SignedDecision(statement=forged, signature=signed.signature), [ApproverKey(name="alice", key=pub(key))]
    )
    assert err.kind == "signature" and "does not verify" in err.reason and key_fingerprint(pub(key)) in err.reason


def test_another_namespace_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    text = statement().canonical()
    err = refusal(
        SignedDecision(statement=text, signature=ssh_sign(tmp_path, key, text, namespace="git")),
        [ApproverKey(name="alice", key=pub(key))],
    )
    assert err.kind == "namespace" and "'git'" in err.reason


def test_an_unlisted_key_is_refused(tmp_path: Path) -> None:
    mallory = keygen(tmp_path, "mallory")
    signed = sign_statement(statement(), mallory.read_bytes())
    err = refusal(signed, [ApproverKey(name="alice", key=pub(keygen(tmp_path, "alice")))])
    assert err.kind == "unlisted" and key_fingerprint(pub(mallory)) in err.reason
    assert refusal(signed, []).kind == "unlisted"


def test_a_key_listed_for_bob_cannot_sign_as_alice(tmp_path: Path) -> None:
    bob = keygen(tmp_path, "bob")
    signed = sign_statement(statement(approver="alice"), bob.read_bytes())
    err = refusal(
        signed, [ApproverKey(name="alice", key=pub(keygen(tmp_path, "alice"))), ApproverKey(name="bob", key=pub(bob))]
    )
    assert err.kind == "name" and "listed for bob, but the statement names alice" in err.reason


def test_a_rejection_is_verified_like_an_approval(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice", "ecdsa")
    signed = sign_statement(statement(decision="reject", comment=""), key.read_bytes())
    assert verify_decision(signed, [ApproverKey(name="alice", key=pub(key))]).statement.decision == "reject"


def _armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    return (
        "-----BEGIN SSH SIGNATURE-----\n"
        + "\n".join(b64[i : i + 70] for i in range(0, len(b64), 70))
        + "\n-----END SSH SIGNATURE-----\n"
    )


def _blob(signature: str) -> bytes:
    return base64.b64decode("".join(signature.strip().splitlines()[1:-1]))


@pytest.mark.parametrize(
    ("mangle", "kind", "reason"),
    [
        (lambda s: s.replace("-----BEGIN SSH SIGNATURE-----", "-----BEGIN PGP SIGNATURE-----"), "armor", "armored"),
        (lambda s: "", "armor", "armored"),
        (lambda s: "garbage\n" * 3, "armor", "armored"),
        (lambda s: s.replace("U1NIU0lH", "U1NIU0l!"), "armor", "not base64"),
        (lambda s: "\n".join(s.splitlines()[:2] + s.splitlines()[-1:]), "armor", "base64"),  # truncated lines
        (lambda s: _armor(_blob(s)[:-7]), "format", "truncated"),
        (lambda s: _armor(_blob(s) + b"\0"), "format", "trailing bytes"),
        (lambda s: _armor(b"NOTSIG" + _blob(s)[6:]), "format", "not an SSHSIG"),
        (lambda s: _armor(_blob(s)[:6] + struct.pack(">I", 2) + _blob(s)[10:]), "format", "version 2"),
        (lambda s: _armor(b"SSHSIG" + struct.pack(">I", 1) + struct.pack(">I", 2**31)), "format", "truncated"),
    ],
)
def test_malformed_signatures_are_refused_with_their_reason(
    tmp_path: Path, mangle: object, kind: str, reason: str
) -> None:
    key = keygen(tmp_path, "alice")
    signed = sign_statement(statement(), key.read_bytes())
    assert callable(mangle)
    err = refusal(
        SignedDecision(statement=signed.statement, signature=mangle(signed.signature)),
        [ApproverKey(name="alice", key=pub(key))],
    )
    assert err.kind == kind and reason in err.reason, err.reason


def test_oversized_input_is_refused_before_parsing(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    signed = sign_statement(statement(), key.read_bytes())
    padded = signed.signature.replace("\n", "\n" + " " * MAX_SIGNATURE, 1)
    with pytest.raises(ValueError, match="at most 8192 characters"):  # the wire model's own bound
        SignedDecision(statement=signed.statement, signature=padded)
    err = refusal(
        SignedDecision.model_construct(statement=signed.statement, signature=padded),
        [ApproverKey(name="alice", key=pub(key))],
    )
    assert err.kind == "armor" and "exceeds 8192" in err.reason
    with pytest.raises(ApprovalError, match="exceeds 4096") as too_long:
        Statement.parse(" " * 5000)
    assert too_long.value.kind == "statement"
    with pytest.raises(ValueError, match="comment of 1025 bytes exceeds 1024"):
        statement(comment="x" * 1025)
    with pytest.raises(ApprovalError, match="exceeds 65536"):
        sign_statement(statement(), b"x" * 70000)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (lambda c: json.dumps(json.loads(c), sort_keys=True), "not canonical"),  # spaces after separators
        (lambda c: json.dumps(json.loads(c), separators=(",", ":")), "not canonical"),  # key order as given
        (lambda c: c + "\n", "it ends with a newline"),
        (lambda c: json.dumps(json.loads(c), sort_keys=True, separators=(",", ":")), "not canonical"),  # \u escapes
        (lambda c: c.replace('"comment":', '"comment":"x","comment":'), "not canonical"),  # duplicate key
        (lambda c: c[:-1], "not JSON"),
        (lambda c: "[" + c + "]", "not a JSON object"),
        (lambda c: c.replace('"approver":"alice",', '"admin":true,"approver":"alice",'), "admin: Extra inputs"),
        (lambda c: c.replace('"approver":"alice",', ""), "approver: Field required"),
        (lambda c: c.replace('"approve"', '"yes"'), "decision:"),
        (lambda c: c.replace("2026-12-01T13:00:00Z", "2026-12-01 13:00"), "expires:"),
        (lambda c: c.replace("2026-12-01T13:00:00Z", "2026-13-01T13:00:00Z"), "not a valid UTC time"),
        (lambda c: c.replace('"sha256:', '"sha512:'), "digest:"),
        (lambda c: c.replace('"alice"', '"alice smith"'), "approver:"),
        (lambda c: c.replace('"production"', '"prod\\u001b[31m"'), "environment:"),
    ],
)
def test_only_valid_canonical_statements_are_read(tmp_path: Path, text: object, reason: str) -> None:
    assert callable(text)
    canonical = statement().canonical()
    mangled = text(canonical)
    assert mangled != canonical
    with pytest.raises(ApprovalError) as err:
        Statement.parse(mangled)
    assert err.value.kind == "statement" and reason in err.value.reason, err.value.reason
    # and a signature over the non-canonical text does not make it acceptable
    key = keygen(tmp_path, "alice")
    signed = SignedDecision(statement=mangled, signature=ssh_sign(tmp_path, key, mangled))
    assert refusal(signed, [ApproverKey(name="alice", key=pub(key))]).kind == "statement"


def test_the_canonical_statement_is_compact_sorted_utf8() -> None:
    text = statement().canonical()
    assert text.startswith('{"approver":"alice","comment":"looks good: ✓ \\"quoted\\"","decision":"approve",')
    assert Statement.parse(text) == statement() and "\n" not in text and ", " not in text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "not an OpenSSH public key line"),
        ("ssh-ed25519", "not an OpenSSH public key line"),
        ("ssh-ed25519 AAAA!!!!", "base64"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not accepted"),
        (
            "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x05short").decode(),
            "not a valid ssh-ed25519",
        ),
        ("ssh-rsa " + base64.b64encode(b"\0\0\0\x0bssh-ed25519").decode(), "not a ssh-rsa key"),
        ("ssh-ed25519 " + "A" * 5000, "at most 4096 characters"),
    ],
)
def test_approver_keys_are_validated_naming_the_field(line: str, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        ApproverKey(name="alice", key=line)
    assert "key" in str(err.value) and reason in str(err.value), str(err.value)


def test_approver_key_types_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(ApprovalError, match="public key line of 5012 characters exceeds 4096"):
        key_fingerprint("ssh-ed25519 " + "A" * 5000)
    for kind in KEY_TYPES:
        assert ApproverKey(name="alice", key=pub(keygen(tmp_path, "alice", kind))).name == "alice"
    small = tmp_path / "id_rsa_small"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(small)], check=True)
    with pytest.raises(ValueError, match="RSA key of 1024 bits: at least 2048"):
        ApproverKey(name="alice", key=pub(small))
    p384 = tmp_path / "id_p384"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(p384)], check=True)
    with pytest.raises(ValueError, match="ecdsa-sha2-nistp384' is not accepted"):
        ApproverKey(name="alice", key=pub(p384))
    with pytest.raises(ApprovalError, match="ecdsa-sha2-nistp384' is not accepted"):
        sign_statement(statement(), p384.read_bytes())
    with pytest.raises(ValueError, match="name"):
        ApproverKey(name="alice smith", key=pub(keygen(tmp_path, "x")))
    with pytest.raises(ValueError, match="Extra inputs"):
        ApproverKey.model_validate({"name": "alice", "key": pub(keygen(tmp_path, "y")), "admin": True})
