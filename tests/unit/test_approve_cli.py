"""`ferry approve|reject` signing at the console, without a running promotion: `--run/--digest` stand in for what
the command otherwise reads from the promotion, and `--print`/`--print-statement` never contact Temporal.
Keys and the other side of every signature are the real ssh-keygen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ferry.approvals import APPROVAL_NAMESPACE, SignedDecision, Statement, verify_decision
from ferry.sshsig import ApproverKey

DIGEST = "sha256:" + "3f" * 32
RUN = "0196f2c4-7a3e-7c1d-9a43-5a3f0e2b1c9d"


def ferry(tmp: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FERRY_KEY_PASSWORD"}
    env.update(
        {
            "FERRY_STATE_DIR": str(tmp / "no-stack"),
            "FERRY_TEMPORAL_ADDRESS": "127.0.0.1:1",
            "FERRY_TEMPORAL_NAMESPACE": "ops",
        }
    )
    if password is not None:
        env["FERRY_KEY_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def keygen(tmp: Path, name: str, password: str = "") -> Path:
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", password, "-C", name, "-f", str(path)], check=True)
    return path


def public(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


def ssh_verify(
    tmp: Path, key: Path, principal: str, statement: str, signature: str
) -> subprocess.CompletedProcess[str]:
    (tmp / "allowed_signers").write_text(f"{principal} {public(key)}\n")
    (tmp / "payload.sig").write_text(signature)
    return subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(tmp / "allowed_signers"),
            "-I",
            principal,
            "-n",
            APPROVAL_NAMESPACE,
            "-s",
            str(tmp / "payload.sig"),
        ],
        input=statement,
        capture_output=True,
        text=True,
    )


def test_approve_with_key_prints_the_signed_json_to_send(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    out = ferry(
        tmp_path,
        "approve",
        "production",
        "1.1.0",
        "--as",
        "alice",
        "--comment",
        "looks good",
        "--key",
        str(key),
        "--run",
        RUN,
        "--digest",
        DIGEST,
        "--expires",
        "30m",
        "--print",
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert sorted(payload) == ["approver", "comment", "signature", "statement"]
    assert payload["approver"] == "alice" and payload["comment"] == "looks good"
    statement = Statement.parse(payload["statement"])
    assert statement.model_dump(exclude={"expires"}) == {
        "environment": "production",
        "version": "1.1.0",
        "digest": DIGEST,
        "promotion": "promote/production/1.1.0",
        "run": RUN,
        "decision": "approve",
        "approver": "alice",
        "comment": "looks good",
    }
    expires = datetime.strptime(statement.expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)
    verified = verify_decision(SignedDecision.model_validate(payload), [ApproverKey(name="alice", key=public(key))])
    assert verified.approver == "alice"
    assert ssh_verify(tmp_path, key, "alice", payload["statement"], payload["signature"]).returncode == 0
    hint = out.stderr.strip()
    assert (
        "\n" not in hint
        and "temporal workflow update execute --address 127.0.0.1:1 --namespace ops "
        "--workflow-id promote/production/1.1.0 --name approve_update --input-file approval.json"
        in hint
    )
    assert "temporal workflow signal --address 127.0.0.1:1 --namespace ops" in hint and "--name approve " in hint
    assert "PRIVATE KEY" not in out.stdout + out.stderr


def test_reject_signs_a_rejection_with_an_encrypted_key(tmp_path: Path) -> None:
    key = keygen(tmp_path, "bob", password="hunter22")
    args = (
        "reject",
        "production",
        "1.1.0",
        "--as",
        "bob",
        "--key",
        str(key),
        "--run",
        RUN,
        "--digest",
        DIGEST,
        "--print",
    )
    no_password = ferry(tmp_path, *args)  # stdin is not a terminal: an error, not a prompt that hangs
    assert no_password.returncode == 1 and "is encrypted: set FERRY_KEY_PASSWORD (no terminal" in no_password.stderr
    wrong = ferry(tmp_path, *args, password="wrong")
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr and "hunter22" not in wrong.stderr
    out = ferry(tmp_path, *args, password="hunter22")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert Statement.parse(payload["statement"]).decision == "reject"
    assert "--name reject_update" in out.stderr and "--name reject " in out.stderr
    assert ssh_verify(tmp_path, key, "bob", payload["statement"], payload["signature"]).returncode == 0


def test_a_statement_signed_with_ssh_keygen_is_read_from_files(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    printed = ferry(
        tmp_path,
        "approve",
        "production",
        "1.1.0",
        "--as",
        "alice",
        "--comment",
        "ok by me",
        "--run",
        RUN,
        "--digest",
        DIGEST,
        "--print-statement",
    )
    assert printed.returncode == 0, printed.stderr
    assert not printed.stdout.endswith("\n") and Statement.parse(printed.stdout).approver == "alice"
    assert f"ssh-keygen -Y sign -n {APPROVAL_NAMESPACE}" in printed.stderr
    statement = tmp_path / "statement.json"
    statement.write_text(printed.stdout)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", APPROVAL_NAMESPACE, "-f", str(key), str(statement)], check=True
    )
    signature = tmp_path / "statement.json.sig"
    files = ("--statement", str(statement), "--signature", str(signature))
    out = ferry(tmp_path, "approve", "production", "1.1.0", *files, "--print")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "approver": "alice",
        "comment": "ok by me",
        "statement": printed.stdout,
        "signature": signature.read_text(),
    }

    # checked before anything is sent: the command it is for, and the signature itself
    other = ferry(tmp_path, "reject", "production", "1.1.0", *files, "--print")
    assert other.returncode == 1 and "for decision 'approve' (this command: 'reject')" in other.stderr
    elsewhere = ferry(tmp_path, "approve", "staging", "1.1.0", *files, "--print")
    assert elsewhere.returncode == 1 and "environment 'production' (this command: 'staging')" in elsewhere.stderr
    claimed = ferry(tmp_path, "approve", "production", "1.1.0", *files, "--as", "bob", "--print")
    assert claimed.returncode == 1 and "approver 'alice' (this command: 'bob')" in claimed.stderr
    statement.write_text(printed.stdout + "\n")
    newline = ferry(tmp_path, "approve", "production", "1.1.0", *files, "--print")
    assert newline.returncode == 1 and "ends with a newline" in newline.stderr
    statement.write_text(printed.stdout.replace(DIGEST, "sha256:" + "00" * 32))
    tampered = ferry(tmp_path, "approve", "production", "1.1.0", *files, "--print")
    assert tampered.returncode == 1 and "does not verify" in tampered.stderr
    lonely = ferry(tmp_path, "approve", "production", "1.1.0", "--statement", str(statement), "--print")
    assert lonely.returncode == 1 and "--statement and --signature go together" in lonely.stderr
    signature.write_text("x" * 9000)
    oversized = ferry(tmp_path, "approve", "production", "1.1.0", *files, "--print")
    assert oversized.returncode == 1 and "larger than 8192 bytes" in oversized.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--expires", "8d"), "at most 7d"),
        (("--expires", "soon"), "--expires: duration 'soon'"),
        (("--as", "alice smith"), "cannot build the statement: approver"),
        (("--digest", "sha256:nope"), "cannot build the statement: digest"),
    ],
)
def test_bad_signing_options_are_refused(tmp_path: Path, args: tuple[str, ...], reason: str) -> None:
    key = keygen(tmp_path, "alice")
    out = ferry(
        tmp_path,
        "approve",
        "production",
        "1.1.0",
        "--as",
        "alice",
        "--key",
        str(key),
        "--run",
        RUN,
        "--digest",
        DIGEST,
        *args,
        "--print",
    )
    assert out.returncode == 1 and reason in out.stderr, out.stderr


def test_a_public_key_is_not_a_signing_key(tmp_path: Path) -> None:
    key = keygen(tmp_path, "alice")
    out = ferry(
        tmp_path,
        "approve",
        "production",
        "1.1.0",
        "--key",
        str(key) + ".pub",
        "--run",
        RUN,
        "--digest",
        DIGEST,
        "--print",
    )
    assert out.returncode == 1 and "not an OpenSSH private key" in out.stderr
