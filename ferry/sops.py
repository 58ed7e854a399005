"""SOPS files in a release, as rules: which files are SOPS-encrypted, in which of SOPS's stores, for which age
recipients, within which bounds; and the keyed hash that names a secret value in history instead of the value.

SOPS's file format (getsops/sops v3.13.3: stores/yaml, stores/json, stores/dotenv; checked in the module):
- YAML and JSON keep the document with every value replaced by ``ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`` and
  add a top-level ``sops`` mapping: ``mac``, ``lastmodified``, ``version`` and one list per key kind (``age``:
  ``[{recipient, enc}]``, ``kms``, ``gcp_kms``, ``azure_kv``, ``hc_vault``, ``pgp``).
- dotenv flattens that mapping into lines ``sops_mac=…``, ``sops_age__list_0__map_recipient=age1…``.
- binary files (any other name) are stored as JSON ``{"data": "ENC[…]", "sops": {…}}``.
Decryption itself is the ``sops`` binary's (activities/secrets); nothing here touches a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

SOPS_KEY = "sops"  # the metadata's top-level key (YAML, JSON, binary)
Store = Literal["yaml", "json", "dotenv", "binary"]  # sops --input-type / --output-type
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
DOTENV_SUFFIXES = (".env",)
# Bounds, checked before sops runs: a Secret holds at most 1 MiB, which SOPS's base64 and metadata grow by ~1/3.
MAX_SOPS_FILE_BYTES = 2 * 1024 * 1024
MAX_SOPS_ENTRIES = 4096  # lines of a dotenv, values of a YAML/JSON file
MAX_SOPS_FILES = 256  # encrypted files in one release
MAX_RECIPIENT = 4096  # an age recipient (post-quantum ones are ~2,000 characters)
# Key kinds SOPS knows besides age: the worker decrypts with age identities only (docs/secrets.md).
OTHER_KEY_KINDS = ("kms", "gcp_kms", "azure_kv", "hc_vault", "pgp", "hckms")
# ... of which these name their own server (a Vault address, a Key Vault URL, a regional endpoint): sops would
# contact a host the file chose if age failed, so a file that lists one is refused (docs/secrets.md).
HOST_NAMING_KEY_KINDS = ("azure_kv", "hc_vault", "hckms")
HASH_PREFIX = "hmac-sha256:"
ENCRYPTED_VALUE = "ENC[AES256_GCM,"  # how SOPS writes every encrypted value

_YAML_MARK = re.compile(r"^[\"']?sops[\"']?:[ \t]*(#.*)?\r?$", re.MULTILINE)
_JSON_MARK = re.compile(r'"sops"\s*:\s*\{')
_JSON_MAC = re.compile(r'"mac"\s*:')
_DOTENV_MARK = re.compile(r"^sops_mac=", re.MULTILINE)
_DOTENV_AGE = re.compile(r"^sops_age__list_\d+__map_recipient=(.*)$", re.MULTILINE)
_AGE_RECIPIENT = re.compile(r"^age1[0-9a-z]{20,}$")


class SopsRefused(ValueError):
    """A SOPS file the worker will not decrypt (too large, too many entries, no age recipient), naming the file."""


def store_of(name: str, text: str) -> Store | None:
    """The SOPS store of a file (by its name, as sops picks it), or None when the file is not SOPS-encrypted."""
    lower = name.lower()
    encrypted = ENCRYPTED_VALUE in text  # NB: a file cut before its metadata still holds SOPS values: refused
    if lower.endswith(YAML_SUFFIXES):
        return "yaml" if _YAML_MARK.search(text) or encrypted else None
    if lower.endswith(DOTENV_SUFFIXES):
        return "dotenv" if _DOTENV_MARK.search(text) or encrypted else None
    if (_JSON_MARK.search(text) and _JSON_MAC.search(text)) or (encrypted and text.lstrip("\ufeff \t\r\n")[:1] == "{"):
        return "json" if lower.endswith(JSON_SUFFIXES) else "binary"
    return None


def misnamed(name: str, text: str) -> bool:
    """SOPS-encrypted YAML or dotenv under a name sops would read as binary (not .yaml/.yml/.json/.env): its
    ciphertext would be applied as it is, so it is refused, never passed over."""
    lower = name.lower()
    if lower.endswith(YAML_SUFFIXES + JSON_SUFFIXES + DOTENV_SUFFIXES) or store_of(name, text) is not None:
        return False
    return ENCRYPTED_VALUE in text or bool(_DOTENV_MARK.search(text))


@dataclass(frozen=True)
class SopsFile:
    """One encrypted file of a release: where, which store, the age recipients its data key is encrypted for,
    and the other key kinds it lists (never used by the worker)."""

    path: str
    store: Store
    recipients: tuple[str, ...]
    other_keys: tuple[str, ...] = ()


def _metadata(store: Store, text: str, where: str) -> Mapping[str, Any]:
    if store == "yaml":
        import yaml  # NB: only the metadata is read here; the manifests' own loader bounds aliases

        metadata: Any = None
        try:
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and isinstance(doc.get(SOPS_KEY), dict):
                    metadata = doc[SOPS_KEY]
                    break
        except yaml.YAMLError as err:
            raise SopsRefused(f"{where}: SOPS YAML does not parse: {getattr(err, 'problem', err)}") from None
    else:
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise SopsRefused(f"{where}: SOPS JSON does not parse: {err}") from None
        metadata = doc.get(SOPS_KEY) if isinstance(doc, dict) else None
    if not isinstance(metadata, dict):
        raise SopsRefused(f"{where}: no SOPS metadata mapping (`sops:`): truncated or not a SOPS file")
    return metadata


def _entries(store: Store, text: str) -> int:
    if store == "dotenv":
        return sum(1 for line in text.splitlines() if line.strip() and not line.startswith(("#", "sops_")))
    return text.count("ENC[")


def inspect(path: str, text: str) -> SopsFile | None:
    """The SOPS file at ``path`` (its text), None when it is not one; SopsRefused past the bounds or with no age
    recipient the worker could hold."""
    size = len(text.encode())
    if size > MAX_SOPS_FILE_BYTES:
        kind = store_of(path, text[:65536] + text[-65536:])
        if kind is not None:
            raise SopsRefused(f"{path}: SOPS file of {size} bytes, more than {MAX_SOPS_FILE_BYTES}: refused")
        return None
    store = store_of(path, text)
    if store is None and misnamed(path, text):
        raise SopsRefused(
            f"{path}: SOPS-encrypted YAML or dotenv under a name sops reads as binary: name it .yaml, .json or .env"
        )
    if store is None:
        return None
    entries = _entries(store, text)
    if entries > MAX_SOPS_ENTRIES:
        raise SopsRefused(f"{path}: {entries} encrypted entries, more than {MAX_SOPS_ENTRIES}: refused")
    if store == "dotenv":
        if not _DOTENV_MARK.search(text):
            raise SopsRefused(f"{path}: SOPS values without SOPS metadata (sops_mac=…): truncated or tampered")
        recipients = [r.strip() for r in _DOTENV_AGE.findall(text)]
        other = sorted({k for k in OTHER_KEY_KINDS if re.search(rf"^sops_{k}__list_", text, re.MULTILINE)})
    else:
        metadata = _metadata(store, text, path)
        if "mac" not in metadata:
            raise SopsRefused(f"{path}: SOPS metadata has no mac: truncated or tampered")
        ages = metadata.get("age") or []
        ages = ages if isinstance(ages, list) else []
        recipients = [str(a.get("recipient", "")) for a in ages if isinstance(a, dict)]
        other = sorted(k for k in OTHER_KEY_KINDS if metadata.get(k))
    bad = [r for r in recipients if len(r) > MAX_RECIPIENT or not _AGE_RECIPIENT.match(r)]
    if bad:
        raise SopsRefused(f"{path}: not an age recipient: {bad[0][:80]!r}")
    chosen_hosts = [k for k in other if k in HOST_NAMING_KEY_KINDS]
    if chosen_hosts:
        raise SopsRefused(
            f"{path}: lists {', '.join(chosen_hosts)} keys, which name their own server: the worker decrypts with "
            "age only and never lets a file choose a host to contact; re-encrypt it without them"
        )
    if not recipients:
        listed = f" (it lists {', '.join(other)} keys only)" if other else ""
        raise SopsRefused(f"{path}: encrypted for no age recipient{listed}: the worker decrypts with age identities")
    return SopsFile(path=path, store=store, recipients=tuple(recipients), other_keys=tuple(other))


def short_recipient(recipient: str) -> str:
    """A recipient as messages name it: whole when short, else its head and tail (post-quantum ones are long)."""
    return recipient if len(recipient) <= 80 else f"{recipient[:24]}…{recipient[-12:]}"


def missing_recipients(file: SopsFile, held: Iterable[str]) -> list[str]:
    """The file's recipients the worker holds no identity for (all of them: it cannot decrypt the file)."""
    have = set(held)
    return [] if have & set(file.recipients) else list(file.recipients)


def keyed_hash(key: bytes, value: str | bytes) -> str:
    """What history names a secret value by: HMAC-SHA256 under the worker's hash key, 16 hex digits. Equal values
    hash equal (a change and a drift show), and without the key a guess cannot be checked."""
    data = value.encode() if isinstance(value, str) else value
    return HASH_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()[:16]


def hash_key(identities: bytes) -> bytes:
    """The hash key of a worker that decrypts with ``identities``: derived from them, so every worker holding the
    same identities names a value alike, and nobody without them can test a guess."""
    return hmac.new(b"ferry secret value hash v1", identities, hashlib.sha256).digest()


def is_plain_secret(doc: Mapping[str, Any]) -> bool:
    """A Kubernetes Secret carrying data in the clear: ``kind: Secret`` (core v1) with a non-empty ``data`` or
    ``stringData`` and no SOPS metadata."""
    return (
        doc.get("kind") == "Secret"
        and doc.get("apiVersion") == "v1"
        and SOPS_KEY not in doc
        and bool(doc.get("data") or doc.get("stringData"))
    )


def secret_values(doc: Mapping[str, Any]) -> list[str]:
    """A decrypted document's leaf strings (what must never be shown): every scalar under every key but the
    metadata's, as text."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key not in ("apiVersion", "kind", "metadata", SOPS_KEY):
                    walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif node is not None and not isinstance(node, bool):
            out.append(str(node))

    walk(doc)
    return out


def secret_hashes(obj: Mapping[str, Any], key: bytes) -> list[str]:
    """A Secret's keys, each with the keyed hash of its value: ``data.KEY=hmac-sha256:…`` (stringData is folded
    into data as the API server does, so both name a value alike), sorted; [] for anything but a Secret."""
    if obj.get("kind") != "Secret":
        return []
    values: dict[str, bytes] = {}
    for name, value in (obj.get("data") or {}).items():
        try:
            values[str(name)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            values[str(name)] = str(value).encode()
    for name, value in (obj.get("stringData") or {}).items():
        values[str(name)] = str(value).encode()
    return [f"data.{name}={keyed_hash(key, value)}" for name, value in sorted(values.items())]
