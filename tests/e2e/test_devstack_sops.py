"""`ferry dev up`'s age identity for its workers, with the real age-keygen: made once at <state>/sops/age.key
(0600 in a 0700 directory), kept across down/up, its recipient (never the key) in devstack.json and `dev status
--json`, and every worker started with FERRY_SOPS_AGE_KEYS naming it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.procs import StackError, free_port
from devstack.sops import prepare_identity

FERRY = [sys.executable, "-m", "cli.main"]
PRIVATE = "AGE-SECRET-KEY"


def _ferry(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _ports() -> list[str]:
    flags = (
        "--temporal-port",
        "--ui-port",
        "--registry-port",
        "--kube-port",
        "--metrics-port",
        "--receiver-port",
        "--prometheus-port",
        "--traffic-port",
    )
    return [part for flag in flags for part in (flag, str(free_port()))]


def _recipient_by_age_keygen(entry: dict[str, str]) -> str:
    """What the real `age-keygen -y` says the identity file's recipient is."""
    out = subprocess.run([entry["age_keygen"], "-y", entry["identities"]], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_identity_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = prepare_identity(tmp_path)
    key = tmp_path / "sops" / "age.key"
    assert first["identities"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert first["recipient"].startswith("age1")
    assert first["recipient"] == _recipient_by_age_keygen(first)
    assert Path(first["sops"]).is_file() and Path(first["age_keygen"]).is_file()
    assert PRIVATE not in json.dumps(first)
    text = key.read_bytes()
    assert PRIVATE.encode() in text  # the file itself holds the private key, as age-keygen wrote it
    again = prepare_identity(tmp_path)
    assert again == first and key.read_bytes() == text  # kept, not replaced


def test_a_kept_identity_readable_by_others_is_refused_and_left_alone(tmp_path: Path) -> None:
    prepare_identity(tmp_path)
    key = tmp_path / "sops" / "age.key"
    text = key.read_bytes()
    key.chmod(0o644)
    with pytest.raises(StackError) as refused:
        prepare_identity(tmp_path)
    assert str(key) in str(refused.value) and "chmod 600" in str(refused.value)
    assert PRIVATE not in str(refused.value)
    assert key.read_bytes() == text


def test_a_kept_file_that_is_no_identity_is_refused_without_its_text(tmp_path: Path) -> None:
    key = tmp_path / "sops" / "age.key"
    key.parent.mkdir(mode=0o700)
    key.write_text("AGE-SECRET-KEY-1NOTAKEYATALL\n")
    key.chmod(0o600)
    with pytest.raises(StackError) as refused:
        prepare_identity(tmp_path)
    assert str(key) in str(refused.value) or "not an age identity" in str(refused.value)
    assert PRIVATE not in str(refused.value)


def test_missing_age_keygen_fails_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "FERRY_AGE_KEYGEN": str(tmp_path / "no-age-keygen")}
    result = _ferry("dev", "up", "--state-dir", str(state), *_ports(), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: sops: age-keygen"), lines
    assert "make sops" in lines[0]
    assert not (state / "devstack.json").exists() and not (state / "sops").exists()


def test_dev_up_gives_every_worker_the_stack_identity_and_records_only_its_recipient(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _ferry("dev", "up", "--state-dir", str(state), "--json", *_ports())
    assert up.returncode == 0, up.stderr
    try:
        recorded = (state / "devstack.json").read_text()
        entry = json.loads(recorded)["sops"]
        key = state.resolve() / "sops" / "age.key"
        assert entry["identities"] == str(key) and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert entry["recipient"] == _recipient_by_age_keygen(entry)
        status = _ferry("dev", "status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        shown = json.loads(status.stdout)["sops"]
        assert shown["up"] and shown["recipient"] == entry["recipient"]
        assert Path(shown["sops"]).name == "sops" and Path(shown["age_keygen"]).name == "age-keygen"
        for text in (recorded, up.stdout, up.stderr, status.stdout):
            assert PRIVATE not in text
        worker_pid = json.loads(recorded)["worker"]["pid"]
        environ = Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
        assert f"FERRY_SOPS_AGE_KEYS={key}".encode() in environ
    finally:
        assert _ferry("dev", "down", "--state-dir", str(state)).returncode == 0
    again = _ferry("dev", "up", "--state-dir", str(state), "--json", "--no-worker", *_ports())
    assert again.returncode == 0, again.stderr
    try:
        assert json.loads(again.stdout)["sops"]["recipient"] == entry["recipient"]  # kept across down/up
    finally:
        assert _ferry("dev", "down", "--state-dir", str(state)).returncode == 0
