"""ferry.sops and ferry.redact: which files are SOPS files, the bounds a worker checks before sops runs (a 50 MB
file, a dotenv of 100,000 keys, a truncated file, a binary blob), the keyed hash that names a value, and the
redaction of every form of a value."""

from __future__ import annotations

import base64
import json
import os

import pytest

from ferry.redact import REDACTED, Redactor
from ferry.sops import (
    MAX_SOPS_ENTRIES,
    MAX_SOPS_FILE_BYTES,
    SopsRefused,
    hash_key,
    inspect,
    is_plain_secret,
    keyed_hash,
    missing_recipients,
    secret_hashes,
    store_of,
)

RECIPIENT = "age1465lxsxr5msvsfejrj23gsxujaamnctshmev4dh50y8nzym93p8qplhk62"
ENC = "ENC[AES256_GCM,data:NWs6Hy==,iv:h8Kx=,tag:TUFm==,type:str]"
YAML = f"""\
apiVersion: v1
kind: Secret
metadata:
    name: db
stringData:
    password: {ENC}
sops:
    age:
        - recipient: {RECIPIENT}
          enc: |
            -----BEGIN AGE ENCRYPTED FILE-----
            -----END AGE ENCRYPTED FILE-----
    lastmodified: "2026-12-07T16:23:03Z"
    mac: {ENC}
    version: 3.13.3
"""
DOTENV = f"API_KEY={ENC}\nsops_age__list_0__map_recipient={RECIPIENT}\nsops_mac={ENC}\nsops_version=3.13.3\n"
BINARY = json.dumps({"data": ENC, "sops": {"age": [{"recipient": RECIPIENT, "enc": "x"}], "mac": ENC}})


def test_sops_files_are_told_by_their_store_and_metadata() -> None:
    assert store_of("secret.yaml", YAML) == "yaml"
    assert store_of("api.env", DOTENV) == "dotenv"
    assert store_of("blob.bin", BINARY) == "binary"
    assert store_of("blob.json", BINARY) == "json"
    assert store_of("plain.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n") is None
    assert store_of("values.yaml", "sops: 3\nother: x\n") is None  # a scalar named sops is no SOPS metadata
    found = inspect("secret.yaml", YAML)
    assert found is not None and found.store == "yaml" and found.recipients == (RECIPIENT,)
    assert inspect("api.env", DOTENV) is not None
    assert inspect("plain.yaml", "a: b\n") is None


def test_a_truncated_file_is_refused_naming_it() -> None:
    # cut inside its metadata (no mac), before its metadata (values only), and a JSON cut short
    with pytest.raises(SopsRefused, match="s.yaml: SOPS metadata has no mac"):
        inspect("s.yaml", YAML[: YAML.index("    mac:")])
    with pytest.raises(SopsRefused, match="s.yaml: no SOPS metadata"):
        inspect("s.yaml", YAML[: YAML.index("sops:")])
    with pytest.raises(SopsRefused, match="a.env: SOPS values without SOPS metadata"):
        inspect("a.env", DOTENV.split("\n")[0] + "\n")
    with pytest.raises(SopsRefused, match="s.json: SOPS JSON does not parse"):
        inspect("s.json", BINARY[:-30])
    with pytest.raises(SopsRefused, match="not an age recipient: 'bogus'"):
        inspect("s.yaml", YAML.replace(f"recipient: {RECIPIENT}", "recipient: bogus"))


def test_oversized_files_and_huge_dotenvs_are_refused_before_sops_runs() -> None:
    big = YAML + "#" * (50 * 1024 * 1024)
    with pytest.raises(SopsRefused, match=f"more than {MAX_SOPS_FILE_BYTES}"):
        inspect("s.yaml", big)
    keys = "".join(f"K{i}={ENC}\n" for i in range(100_000))
    with pytest.raises(SopsRefused, match=str(MAX_SOPS_ENTRIES)):
        inspect("a.env", keys[: MAX_SOPS_FILE_BYTES // 2] + DOTENV)


def test_a_binary_blob_is_no_sops_file() -> None:
    blob = os.urandom(4096).decode("latin-1")
    assert store_of("secret.yaml", blob) is None and inspect("secret.bin", blob) is None


def test_a_file_for_kms_or_pgp_only_is_refused_the_worker_decrypts_with_age() -> None:
    kms_only = YAML.replace(f"    age:\n        - recipient: {RECIPIENT}\n", "    kms:\n        - arn: arn:aws:kms:x\n")
    with pytest.raises(SopsRefused, match="kms keys only"):
        inspect("s.yaml", kms_only)
    mixed = YAML.replace("    lastmodified", "    pgp:\n        - fp: ABCD\n    lastmodified")
    found = inspect("s.yaml", mixed)
    assert found is not None and found.other_keys == ("pgp",)
    assert missing_recipients(found, ["age1other"]) == [RECIPIENT]
    assert missing_recipients(found, [RECIPIENT]) == []


def test_keyed_hashes_name_equal_values_alike_and_need_the_key() -> None:
    key = hash_key(b"AGE-SECRET-KEY-1TEST")
    assert keyed_hash(key, "pw") == keyed_hash(key, b"pw") != keyed_hash(key, "pw2")
    assert keyed_hash(key, "pw") != keyed_hash(hash_key(b"another identity"), "pw")
    data = {"kind": "Secret", "data": {"a": base64.b64encode(b"pw").decode()}, "stringData": {"b": "pw"}}
    lines = secret_hashes(data, key)
    assert [line.split("=")[0] for line in lines] == ["data.a", "data.b"]
    assert lines[0].split("=", 1)[1] == lines[1].split("=", 1)[1] == keyed_hash(key, "pw")
    assert secret_hashes({"kind": "ConfigMap", "data": {"a": "b"}}, key) == []


def test_plain_secrets_are_told_from_encrypted_and_empty_ones() -> None:
    assert is_plain_secret({"apiVersion": "v1", "kind": "Secret", "stringData": {"a": "b"}})
    assert not is_plain_secret({"apiVersion": "v1", "kind": "Secret", "stringData": {"a": ENC}, "sops": {}})
    assert not is_plain_secret({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "empty"}})
    assert not is_plain_secret({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})


def test_the_redactor_takes_out_every_form_of_a_value() -> None:
    redactor = Redactor.of(["hunter2-secret", "line-one\nline-two", "ab"])
    encoded = base64.b64encode(b"hunter2-secret").decode()
    text = f"data[password]: Invalid value: hunter2-secret ({encoded}); key line-two; ab stays"
    out = redactor.text(text)
    assert "hunter2-secret" not in out and encoded not in out and "line-two" not in out
    assert out.count(REDACTED) == 3 and "ab stays" in out  # values under 4 characters are not blanked
    assert not Redactor.of([])


def test_review_findings_misnamed_crlf_quoted_host_naming_keys_json_escaped_values() -> None:
    # a SOPS YAML file under a name sops reads as binary would be applied as ciphertext: refused
    with pytest.raises(SopsRefused, match="config.txt: SOPS-encrypted YAML or dotenv under a name sops reads"):
        inspect("config.txt", YAML)
    assert inspect("notes.txt", "no secrets here\n") is None
    # CRLF line endings and a quoted key are still SOPS metadata
    crlf = YAML.replace("\n", "\r\n")
    assert store_of("s.yaml", crlf) == "yaml"
    assert store_of("s.yaml", YAML.replace("sops:\n", '"sops":\n').replace(ENC, "plain")) == "yaml"
    # a file that lists a key kind naming its own server (Vault, Azure Key Vault) is refused: never contacted
    vault = YAML.replace(
        "    lastmodified", "    hc_vault:\n        - vault_address: http://attacker:8200\n    lastmodified"
    )
    with pytest.raises(SopsRefused, match="hc_vault keys, which name their own server"):
        inspect("s.yaml", vault)
    # a value as a JSON message escapes it
    value = 'pa"ss\\word\n9'
    assert value not in (out := Redactor.of([value]).text(json.dumps({"message": f"bad: {value}"})))
    assert json.dumps(value)[1:-1] not in out


def test_a_plan_entry_of_a_secret_with_thousands_of_keys_stays_small_in_history() -> None:
    from ferry.reconcile import PlanEntry

    entry = PlanEntry(
        object="Secret/ns/big", action="create", secret=[f"data.k{i}=hmac-sha256:{i:016x}" for i in range(4096)]
    )
    dumped = entry.model_dump()["secret"]
    assert len(dumped) == 51 and dumped[-1] == "... and 4046 more", dumped[-1]
    assert len(str(dumped)) < 8192
