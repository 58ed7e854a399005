"""`ferry secrets encrypt|recipients|status` against the real sops v3.13.3 and age-keygen v1.3.2 (`make sops`; a
missing binary fails with that hint, never skips). Each command runs as a process (`python -m cli`), so what it
prints is all it prints: no plaintext value and no AGE-SECRET-KEY anywhere in its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from activities.manifests import scan
from activities.secrets.binaries import sops_path
from activities.secrets.encrypt import new_identity
from activities.validate import plain_secrets

ROOT = Path(__file__).resolve().parents[2]
VALUE = "hunter2-correct-horse-battery"
SECRET = f"""apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: app
  labels: {{team: payments}}
stringData:
  password: {VALUE}
data:
  token: {"aHVudGVyMi10b2tlbi12YWx1ZQ=="}
"""
PRIVATE = "AGE-SECRET-KEY-"


def ferry(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    for text in (proc.stdout, proc.stderr):
        assert VALUE not in text and "hunter2-token-value" not in text and PRIVATE not in text
    return proc


@pytest.fixture
def identity(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "keys" / "age.key"
    return key, new_identity(key)


def decrypt(path: Path, key: Path) -> str:
    run = subprocess.run(
        [str(sops_path()), "decrypt", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"SOPS_AGE_KEY_FILE": str(key), "HOME": str(key.parent), "PATH": ""},
        cwd=key.parent,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_encrypt_to_stdout_then_sops_decrypt_gives_the_plaintext_back(
    tmp_path: Path, identity: tuple[Path, str]
) -> None:
    key, recipient = identity
    plain = tmp_path / "db.yaml"
    plain.write_text(SECRET)
    run = ferry("secrets", "encrypt", str(plain), "--recipient", recipient)
    assert run.returncode == 0 and run.stderr == ""
    encrypted = yaml.safe_load(run.stdout)
    # kind and metadata stay readable (reviewers, the plan); the values are ciphertext
    assert encrypted["kind"] == "Secret" and encrypted["metadata"]["name"] == "db"
    assert encrypted["metadata"]["labels"] == {"team": "payments"}
    assert encrypted["stringData"]["password"].startswith("ENC[AES256_GCM,")
    assert encrypted["data"]["token"].startswith("ENC[AES256_GCM,")
    assert [a["recipient"] for a in encrypted["sops"]["age"]] == [recipient]
    out = tmp_path / "db.enc.yaml"
    out.write_text(run.stdout)
    assert yaml.safe_load(decrypt(out, key)) == yaml.safe_load(SECRET)
    assert plain.read_text() == SECRET  # stdout mode leaves the file alone


def test_encrypt_in_place_and_to_a_file_for_two_recipients(tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    other_key = tmp_path / "other" / "age.key"
    other = new_identity(other_key)
    plain = tmp_path / "db.yaml"
    plain.write_text(SECRET)
    plain.chmod(0o640)
    run = ferry("secrets", "encrypt", str(plain), "-o", str(tmp_path / "out.yaml"), "--recipient", recipient)
    assert run.returncode == 0 and run.stdout == "" and "encrypted for 1 age recipient" in run.stderr
    assert yaml.safe_load(decrypt(tmp_path / "out.yaml", key)) == yaml.safe_load(SECRET)
    run = ferry("secrets", "encrypt", str(plain), "--in-place", "--recipient", f"{recipient},{other}")
    assert run.returncode == 0 and run.stdout == ""
    assert VALUE not in plain.read_text() and (plain.stat().st_mode & 0o777) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".db.yaml.")]  # no temporary file left
    for k in (key, other_key):  # either identity decrypts it (a key rotation's two recipients)
        assert yaml.safe_load(decrypt(plain, k)) == yaml.safe_load(SECRET)
    state = ["--state-dir", str(tmp_path / "state")]
    status = ferry("secrets", "status", str(plain), "--json", *state)
    assert status.returncode == 0
    assert json.loads(status.stdout) == {
        "file": str(plain),
        "encrypted": True,
        "store": "yaml",
        "recipients": [recipient, other],
        "other_keys": [],
    }
    # which of the worker's identities decrypt it: the rotation's new key does, a third one does not
    status = ferry("secrets", "status", str(plain), "--json", *state, env={"FERRY_SOPS_AGE_KEYS": str(other_key)})
    assert status.returncode == 0
    assert json.loads(status.stdout)["decryptable_with"] == [
        {"where": "worker", "path": str(other_key), "recipient": other}
    ]
    third = tmp_path / "third" / "age.key"
    new_identity(third)
    status = ferry("secrets", "status", str(plain), "--identities", str(third), *state)
    assert status.returncode == 1 and "the worker cannot decrypt it" in status.stdout

    # what encrypt wrote passes `ferry release`'s guard
    assert plain_secrets(tmp_path, scan(tmp_path)) == []


def test_an_encrypted_file_is_refused_and_so_is_bad_input(tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    plain = tmp_path / "db.yaml"
    plain.write_text(SECRET)
    assert ferry("secrets", "encrypt", str(plain), "-i", "--recipient", recipient).returncode == 0
    before = plain.read_bytes()
    refusals = {
        "already SOPS-encrypted (yaml)": [str(plain), "--recipient", recipient],
        "no such file": [str(tmp_path / "missing.yaml"), "--recipient", recipient],
        "not an age recipient": [str(plain), "--recipient", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"],
        "that is an age private key": [str(plain), "--recipient", key.read_text().split()[-1]],
    }
    for reason, argv in refusals.items():
        run = ferry("secrets", "encrypt", *argv)
        assert run.returncode == 2, (reason, run.stderr)
        assert run.stdout == "" and len(run.stderr.splitlines()) == 1 and reason in run.stderr
        assert run.stderr.startswith("ferry: ")
    assert plain.read_bytes() == before


def test_a_file_sops_would_not_parse_is_refused_without_its_content(tmp_path: Path, identity: tuple[Path, str]) -> None:
    _, recipient = identity
    bad_env = tmp_path / "db.env"
    bad_env.write_text(f"USER=app\n{VALUE}\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(f"password: {VALUE}\nother: [unclosed, {VALUE}\n")
    for path, reason in ((bad_env, "line 2: not KEY=VALUE"), (bad_yaml, "YAML does not parse")):
        run = ferry("secrets", "encrypt", str(path), "--recipient", recipient)
        assert run.returncode == 2 and reason in run.stderr and run.stdout == ""


def test_a_dotenv_and_a_binary_file_are_encrypted_whole(tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    env = tmp_path / "db.env"
    env.write_text(f"PASSWORD={VALUE}\n")
    blob = tmp_path / "tls.key"
    blob.write_bytes(b"\x00\x01" + VALUE.encode())
    for path in (env, blob):
        assert ferry("secrets", "encrypt", str(path), "-i", "--recipient", recipient).returncode == 0
        assert VALUE not in path.read_text(errors="replace")
    assert decrypt(env, key) == f"PASSWORD={VALUE}\n"
    status = ferry("secrets", "status", str(blob), "--state-dir", str(tmp_path / "state"))
    assert status.returncode == 0 and "SOPS-encrypted (binary) for 1 age recipient" in status.stdout


def test_status_of_a_plain_file_says_so(tmp_path: Path) -> None:
    plain = tmp_path / "db.yaml"
    plain.write_text(SECRET)
    state = ["--state-dir", str(tmp_path / "state")]
    run = ferry("secrets", "status", str(plain), *state)
    assert run.returncode == 1 and "not SOPS-encrypted" in run.stdout and "`ferry release` refuses it" in run.stdout
    assert json.loads(ferry("secrets", "status", str(plain), "--json", *state).stdout)["plain_secret"] is True
    assert ferry("secrets", "status", str(tmp_path / "none.yaml"), *state).returncode == 2


def test_recipients_prints_public_keys_and_the_source_never_the_key(tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    state = ["--state-dir", str(tmp_path / "state")]
    run = ferry("secrets", "recipients", *state, env={"FERRY_SOPS_AGE_KEYS": str(key)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"worker: {key}", f"  {recipient}"]
    run = ferry("secrets", "recipients", "--json", "--identities", str(key.parent), *state)
    assert json.loads(run.stdout) == {
        "sources": [{"where": "--identities", "path": str(key.parent), "recipients": [recipient]}]
    }
    run = ferry("secrets", "recipients", *state)
    assert run.returncode == 1 and "FERRY_SOPS_AGE_KEYS" in run.stderr


def test_recipients_of_every_source_in_the_clusters_file(tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    prod = tmp_path / "prod" / "age.key"
    prod_recipient = new_identity(prod)
    loose = tmp_path / "loose.key"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    clusters = tmp_path / "clusters.yaml"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    clusters.write_text(
        f"clusters:\n  prod:\n    kubeconfig: {kubeconfig}\n    sops-age-keys: {prod}\n"
        f"  staging:\n    kubeconfig: {kubeconfig}\n    sops-age-keys: {loose}\n"
    )
    env = {"FERRY_SOPS_AGE_KEYS": str(key), "FERRY_CLUSTERS": str(clusters)}
    run = ferry("secrets", "recipients", "--json", "--state-dir", str(tmp_path / "state"), env=env)
    assert run.returncode == 1  # one source is unusable: said, with the others
    sources = {s["where"]: s for s in json.loads(run.stdout)["sources"]}
    assert sources["worker"]["recipients"] == [recipient]
    assert sources["cluster prod"]["recipients"] == [prod_recipient]
    assert "readable by others" in sources["cluster staging"]["error"]
