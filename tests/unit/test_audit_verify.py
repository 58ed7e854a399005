"""`ferry audit --verify`: a recorded decision is re-verified offline from the payload that carried it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli.audit import SignedRecord, verify_record
from ferry.approvals import Statement, sign_statement
from ferry.sshsig import key_fingerprint

DIGEST = "sha256:" + "a" * 64


def record(tmp: Path, **overrides: object) -> SignedRecord:
    key = tmp / "id_bob"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    statement = Statement(
        environment="production",
        version="1.1.0",
        digest=DIGEST,
        promotion="promote/production/1.1.0",
        run="run-1",
        decision="approve",
        approver="bob",
        comment="",
        expires="2030-01-01T00:00:00Z",
    )
    proof = sign_statement(statement, key.read_bytes())
    fingerprint = key_fingerprint(Path(f"{key}.pub").read_text())
    fields: dict[str, object] = {
        "workflow_id": "promote/production/1.1.0",
        "run_id": "run-1",
        "started": {"environment": "production", "version": "1.1.0"},
        "record": {"action": "approve", "by": "bob", "verified": True, "fingerprint": fingerprint},
        "payload": {"approver": "bob", "statement": proof.statement, "signature": proof.signature},
    }
    fields.update(overrides)
    return SignedRecord.model_validate(fields)


def test_a_genuine_record_verifies(tmp_path: Path) -> None:
    assert verify_record(record(tmp_path)) == ""


def test_what_the_signatures_do_not_prove_is_reported(tmp_path: Path) -> None:
    genuine = record(tmp_path)
    other_key = {**genuine.record, "fingerprint": "SHA256:" + "A" * 43}
    assert "fingerprint" in verify_record(record(tmp_path, record=other_key))
    assert "by" not in verify_record(genuine)
    assert "approver 'bob' != recorded 'alice'" in verify_record(
        record(tmp_path, record={**genuine.record, "by": "alice"})
    )
    assert "run 'run-1' != recorded 'run-2'" in verify_record(record(tmp_path, run_id="run-2"))
    assert "environment" in verify_record(record(tmp_path, started={"environment": "staging", "version": "1.1.0"}))
    assert "no signed statement" in verify_record(record(tmp_path, payload={"approver": "bob"}))
    tampered = {**genuine.payload, "statement": genuine.payload["statement"].replace("1.1.0", "1.1.1", 1)}
    assert "does not verify" in verify_record(record(tmp_path, payload=tampered))
