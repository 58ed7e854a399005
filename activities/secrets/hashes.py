"""Naming the Secrets a reconcile wrote by their keys and keyed hashes of their values (ferry.sops.secret_hashes):
in its change set (`secrets`, and each drifted path of a Secret as `.data.KEY=hmac-sha256:…`) and, for a dry run
(`ferry diff`), in each plan entry (`secret`)."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets as random
from pathlib import Path
from typing import Any

from activities.secrets.decrypt import Decrypted
from ferry.plan import ObjectId
from ferry.reconcile import ReconcileResult
from ferry.sops import secret_hashes

HASH_KEY_FILE = "secret-hash.key"  # in the worker's cache: the key for Secrets that were not decrypted here


@functools.lru_cache(maxsize=8)
def worker_hash_key(cache_dir: Path) -> bytes:
    """This worker's own hash key (32 random bytes, 0600, made once), for plain Secrets: a release that decrypts
    uses the key derived from its identities instead, which every worker holding them shares. Read once per
    process."""
    path = cache_dir / HASH_KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        key = path.read_bytes()
        if len(key) == 32:
            return key
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{HASH_KEY_FILE}.{os.getpid()}.{random.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(random.token_bytes(32))
    try:
        os.link(tmp, path)  # NB: the first worker's key wins; a racing one reads it
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def named_by_hash(
    result: ReconcileResult, objects: list[dict[str, Any]], namespace: str, decrypted: Decrypted | None, cache_dir: Path
) -> ReconcileResult:
    """``result`` with every Secret it wrote (or a dry run would write) named by key and keyed hash."""
    found = [o for o in objects if o.get("kind") == "Secret" and isinstance(o.get("metadata"), dict)]
    if not found:
        return result
    key = decrypted.hash_key if decrypted is not None else worker_hash_key(cache_dir)
    hashes: dict[str, list[str]] = {}
    for obj in found:
        meta = obj["metadata"]
        oid = ObjectId.of({**obj, "metadata": {**meta, "namespace": meta.get("namespace") or namespace}})
        hashes[str(oid)] = secret_hashes(obj, key)
    written = set(result.changes.created) | set(result.changes.updated)
    result.changes.secrets = {name: listed for name, listed in hashes.items() if name in written}
    for name, paths in result.changes.drift.items():
        if name in hashes:  # a Secret's drift names the value put back by its hash: `.data.KEY=hmac-sha256:…`
            by_path = dict(f".{line}".split("=", 1) for line in hashes[name])
            result.changes.drift[name] = [f"{p}={by_path[p]}" if p in by_path else p for p in paths]
    for entry in result.plan:
        if entry.object in hashes and entry.action in ("create", "update"):
            entry.secret = hashes[entry.object]
    return result
