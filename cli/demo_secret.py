"""`make demo`, the encrypted Secret: CI's release carries a Secret that sops encrypted for the local stack's age
recipient (devstack.json's ``sops.recipient``); staging and production declare ``decryption: {provider: sops}``,
and only the worker, which holds the stack's identity (FERRY_SOPS_AGE_KEYS), decrypts it, at apply time.

The step that checks it prints no value: the Secret in each namespace matches the plaintext (named by the keyed
hash history uses), the artifact pulled back from the registry holds ciphertext only, and the environments'
workflow histories hold neither the plaintext, nor its base64, nor an age private key."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import os
import secrets
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cli.demo_support import Story, run, step
from ferry.sops import ENCRYPTED_VALUE, hash_key, keyed_hash
from workers.secrets import encrypt_file
from workers.wiring import script_path

SECRET_NAME, SECRET_KEY = "podinfo-db", "password"
SECRET_FILE = "secret.sops.yaml"  # in the release's base/, next to the ConfigMap
PRIVATE_KEY_MARK = b"AGE-SECRET-KEY-"
MAX_BLOB_BYTES = 16 * 1024 * 1024  # the demo's artifact is a few KB; a registry answering more is not believed
ENVIRONMENTS = ("staging", "production")


@dataclass(frozen=True)
class DemoSecret:
    """The Secret this run encrypted: its plaintext (kept in memory only, never printed) and its ciphertext."""

    plaintext: str
    encrypted: bytes
    recipient: str
    identities: Path

    def __repr__(self) -> str:  # NB: never the plaintext, whatever prints this
        return f"DemoSecret(recipient={self.recipient!r})"

    def hashed(self) -> str:
        """The plaintext's keyed hash, as the worker names it (ferry.sops.hash_key of the stack's identities)."""
        return keyed_hash(hash_key(self.identities.read_bytes()), self.plaintext)

    def add_to(self, release: Path) -> None:
        """The ciphertext in a copy of examples/app: base/secret.sops.yaml, listed in base's kustomization."""
        base = release / "base"
        (base / SECRET_FILE).write_bytes(self.encrypted)
        kustomization = base / "kustomization.yaml"
        doc = yaml.safe_load(kustomization.read_text())
        doc["resources"] = [*doc.get("resources", []), SECRET_FILE]
        kustomization.write_text(yaml.safe_dump(doc, sort_keys=False))


def encrypt_secret(info: Any, tmp: Path) -> DemoSecret:
    """A new random value in a Secret manifest (0600 in the run's temporary directory, removed once encrypted),
    encrypted by the real sops for the stack's recipient."""
    stack = info.components.get("sops") or {}
    if not str(stack.get("recipient", "")).startswith("age1"):
        sys.exit("demo: devstack.json names no sops recipient: `ferry dev down && ferry dev up` (a newer Ferry)")
    plaintext = secrets.token_urlsafe(24)
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME},
        "type": "Opaque",
        "stringData": {SECRET_KEY: plaintext},
    }
    plain = tmp / "secret.yaml"
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(manifest, out, sort_keys=False)
    try:
        encrypted = encrypt_file(plain, [stack["recipient"]])
    finally:
        plain.unlink()
    print(
        f"$ sops encrypt --age {stack['recipient']} --encrypted-regex '^(data|stringData)$' secret.yaml "
        f"> base/{SECRET_FILE}   (the stack's recipient, from .ferry/devstack.json; a fresh random {SECRET_KEY})"
    )
    return DemoSecret(plaintext, encrypted, stack["recipient"], Path(stack["identities"]))


def secret_delivered(story: Story) -> None:
    secret: DemoSecret | None = story.secret
    if secret is None:
        return
    step(
        f"4c. secret/{SECRET_NAME}, encrypted by CI for the stack's age recipient, is decrypted on the worker only "
        "(decryption: {provider: sops}): the cluster holds the value; the registry and the histories do not"
    )
    for environment in ENVIRONMENTS:
        value = _in_cluster(story, environment)
        verdict = "matches" if value == secret.plaintext.encode() else "DOES NOT MATCH"
        print(f"  {environment}: data.{SECRET_KEY} {verdict} the plaintext CI encrypted ({secret.hashed()})")
        if value != secret.plaintext.encode():
            sys.exit(f"demo: secret/{SECRET_NAME} in {environment} is not the value CI encrypted")
    print("  " + _in_registry(story, secret))
    print("  " + asyncio.run(_in_histories(story, secret)))


def _in_cluster(story: Story, namespace: str) -> bytes:
    """The Secret's value as the cluster holds it, read with the admin kubeconfig (never printed)."""
    got = run(
        [
            script_path("kubectl") or "kubectl",
            "--kubeconfig",
            story.info.components["kube"]["kubeconfig"],
            "-n",
            namespace,
            "get",
            "secret",
            SECRET_NAME,
            "-o",
            "jsonpath={.data." + SECRET_KEY + "}",
        ],
        show=False,
    )
    return base64.b64decode(got.stdout.strip() or b"", validate=True)


def _needles(secret: DemoSecret) -> dict[str, bytes]:
    plain = secret.plaintext.encode()
    return {"the plaintext": plain, "its base64": base64.b64encode(plain), "an age private key": PRIVATE_KEY_MARK}


def _count(found: bytes, secret: DemoSecret) -> str:
    counts = {name: found.count(needle) for name, needle in _needles(secret).items()}
    if any(counts.values()):
        sys.exit(f"demo: found what must not be there: {counts}")
    return ", ".join(f"{name} {n} times" for name, n in counts.items())


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read(MAX_BLOB_BYTES + 1)
    if len(data) > MAX_BLOB_BYTES:
        sys.exit(f"demo: {url} answered more than {MAX_BLOB_BYTES} bytes")
    return data


def _in_registry(story: Story, secret: DemoSecret) -> str:
    """Pull the released 1.1.0 back over the registry's HTTP API and search every blob, unpacked."""
    host, name = story.repository.split("/", 1)
    manifest = _get(f"http://{host}/v2/{name}/manifests/1.1.0", "application/vnd.oci.image.manifest.v1+json")
    body = json.loads(manifest)
    blobs = [body["config"], *body.get("layers", [])]
    found, shipped = [manifest], "missing"
    for blob in blobs:
        data = _get(f"http://{host}/v2/{name}/blobs/{blob['digest']}")
        unpacked = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        found.append(unpacked)
        if unpacked[257:262] == b"ustar":
            shipped = _shipped_value(unpacked) or shipped
    if not shipped.startswith(ENCRYPTED_VALUE):
        sys.exit(f"demo: the artifact's base/{SECRET_FILE} value is {shipped}")
    everything = b"".join(found)
    return (
        f"registry: {story.repository}:1.1.0 pulled back ({len(blobs)} blobs, {len(everything)} bytes unpacked): "
        f"base/{SECRET_FILE}'s stringData.{SECRET_KEY} is {shipped}; {_count(everything, secret)}"
    )


def _shipped_value(tar_bytes: bytes) -> str | None:
    """What the artifact's copy of the Secret holds for its value: "ENC[AES256_GCM,…]" or "NOT ENCRYPTED"."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            if member.name.endswith(f"base/{SECRET_FILE}") and (file := tar.extractfile(member)) is not None:
                doc = yaml.safe_load(file.read(MAX_BLOB_BYTES)) or {}
                value = str((doc.get("stringData") or {}).get(SECRET_KEY, ""))
                return f"{ENCRYPTED_VALUE}…]" if value.startswith(ENCRYPTED_VALUE) else "NOT ENCRYPTED"
    return None


async def _in_histories(story: Story, secret: DemoSecret) -> str:
    """Every event of every run of env/staging and env/production so far, serialized as Temporal stores it."""
    from temporalio.client import Client

    temporal = story.info.components["temporal"]
    client = await Client.connect(temporal["address"], namespace=temporal["namespace"])
    runs = events = 0
    chunks: list[bytes] = []
    for environment in ENVIRONMENTS:
        async for listed in client.list_workflows(f'WorkflowId = "env/{environment}"'):
            history = await client.get_workflow_handle(listed.id, run_id=listed.run_id).fetch_history()
            runs, events = runs + 1, events + len(history.events)
            chunks.extend(event.SerializeToString() for event in history.events)
    everything = b"".join(chunks)
    hashed = everything.count(secret.hashed().encode())
    return (
        f"histories: env/staging and env/production ({runs} runs, {events} events, {len(everything)} bytes): "
        f"{_count(everything, secret)}; the keyed hash {hashed} times"
    )
