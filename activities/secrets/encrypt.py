"""Encrypting a file for age recipients with the real sops (`ferry secrets encrypt`, the demo, the tests), and
making an age identity with the real age-keygen (`ferry dev up`).

A Kubernetes Secret manifest is encrypted the way Flux's guide does it, ``--encrypted-regex '^(data|stringData)$'``:
its kind and metadata stay readable (a reviewer sees which Secret changed, Ferry plans it), its values do not.
Any other file is encrypted whole. sops runs with a scrubbed environment in an empty directory, so no
``.sops.yaml`` or cloud credential of the caller's changes what it does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from activities.manifests import BundleError, run_bounded
from activities.secrets.binaries import age_keygen_path, sops_path
from ferry.sops import DOTENV_SUFFIXES, JSON_SUFFIXES, MAX_SOPS_FILE_BYTES, YAML_SUFFIXES, Store, store_of

SECRET_FIELDS_REGEX = "^(data|stringData)$"
ENCRYPT_TIMEOUT = 30.0


class EncryptFailed(ValueError):
    """What stops an encryption, naming the file."""


def store_for(name: str) -> Store:
    lower = name.lower()
    if lower.endswith(YAML_SUFFIXES):
        return "yaml"
    if lower.endswith(JSON_SUFFIXES):
        return "json"
    return "dotenv" if lower.endswith(DOTENV_SUFFIXES) else "binary"


def _is_secret_manifest(text: str) -> bool:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False
    return bool(docs) and all(isinstance(d, dict) and d.get("kind") == "Secret" for d in docs)


def encrypt(path: Path, recipients: list[str]) -> bytes:
    """``path`` encrypted for ``recipients`` (age1…), as sops writes it; EncryptFailed names the problem."""
    if not recipients:
        raise EncryptFailed("name at least one age recipient (--recipient age1…)")
    bad = [r for r in recipients if not r.startswith("age1")]
    if bad:
        raise EncryptFailed(f"not an age recipient: {bad[0][:80]!r}")
    data = path.read_bytes()
    if len(data) > MAX_SOPS_FILE_BYTES:
        raise EncryptFailed(f"{path}: {len(data)} bytes, more than a worker decrypts ({MAX_SOPS_FILE_BYTES})")
    store = store_for(path.name)
    text = data.decode(errors="replace")
    if store != "binary" and store_of(path.name, text) is not None:
        raise EncryptFailed(f"{path}: already SOPS-encrypted")
    argv = [str(sops_path()), "encrypt", "--input-type", store, "--output-type", store, "--age", ",".join(recipients)]
    if store == "yaml" and _is_secret_manifest(text):
        argv += ["--encrypted-regex", SECRET_FIELDS_REGEX]
    with tempfile.TemporaryDirectory(prefix="ferry-sops-encrypt-") as empty:
        env = {"PATH": "", "HOME": empty, "XDG_CONFIG_HOME": empty}
        try:
            run = run_bounded(
                [*argv, str(path.resolve())],
                f"sops encrypt {path}",
                env,
                4 * MAX_SOPS_FILE_BYTES,
                ENCRYPT_TIMEOUT,
                cwd=Path(empty),
            )
        except BundleError as err:
            raise EncryptFailed(str(err)) from None
    if run.code != 0:
        reason = run.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise EncryptFailed(f"{path}: sops could not encrypt it: {reason[0][:300]}")
    return run.stdout


def new_identity(path: Path) -> str:
    """A new age identity written to ``path`` (0600, never overwritten), by the real age-keygen; its recipient."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise EncryptFailed(f"{path} exists: an identity is never overwritten")
    run = run_bounded([str(age_keygen_path())], "age-keygen", {"PATH": ""}, 64 * 1024, 10.0)
    if run.code != 0:
        raise EncryptFailed(f"age-keygen failed: {run.stderr.decode(errors='replace')[:200]}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(run.stdout)
    for line in run.stdout.decode().splitlines():
        if line.startswith("# public key: "):
            return line.removeprefix("# public key: ").strip()
    raise EncryptFailed("age-keygen wrote no public key")
