"""Decrypting a release's SOPS files on the worker, at apply time, with the real ``sops`` binary.

Contract of ``decrypted``: given an extracted (and, when the spec lists keys, verified) release in the worker's
cache, it finds every SOPS-encrypted file (ferry.sops), and

- with none, yields None: the release is rendered from the cache as before;
- with some and no ``decryption: {provider: sops}`` in the spec, refuses (DecryptionFailed): ciphertext is
  never applied;
- otherwise copies the release into a private directory (0700, in /dev/shm when the machine has it), decrypts
  each file there in place with ``sops decrypt`` under the worker's age identities, yields that copy and a
  Redactor of every plaintext value, and removes the copy afterwards, whatever happens.

``sops`` runs with a scrubbed environment: no PATH (so no gpg), HOME an empty directory (no ~/.aws, ~/.ssh,
~/.config/sops), ``SOPS_DECRYPTION_ORDER=age`` and the identities in ``SOPS_AGE_KEY_FILE`` only, so a file that
also lists KMS, Vault or PGP keys is decrypted with age and no credential of the worker's is sent anywhere.
A file for which the worker holds none of its recipients' identities is refused before sops runs, naming the file
and the recipients (never a key); a tampered, truncated or oversized file is refused with sops's reason.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from activities.manifests import BundleError, run_bounded
from activities.secrets.binaries import ToolMissing, sops_path
from activities.secrets.identities import Identities, IdentitiesUnusable, load, private_dir
from ferry.redact import Redactor
from ferry.sops import (
    MAX_SOPS_FILE_BYTES,
    MAX_SOPS_FILES,
    SopsFile,
    SopsRefused,
    hash_key,
    inspect,
    misnamed,
    missing_recipients,
    secret_values,
    short_recipient,
    store_of,
)

SOPS_TIMEOUT = 30.0  # one file; the activity's own timeout bounds the whole reconcile
MAX_PLAINTEXT_BYTES = 2 * MAX_SOPS_FILE_BYTES
PRIVATE_PREFIX = "ferry-sops-"
STALE_AFTER = 3600.0  # seconds: longer than any reconcile activity runs
_PEEK = 64 * 1024  # of a file past the bounds: its head and its tail are read, to name it
# A release copied into memory (/dev/shm) at most; a larger one is linked into a private directory beside the cache.
MAX_IN_MEMORY_RELEASE = 16 * 1024 * 1024


class DecryptionFailed(ValueError):
    """What stops a release's decryption, naming the file and the reason; never a value or a key."""


@dataclass(frozen=True)
class Decrypted:
    """A decrypted copy of a release: its root, what to redact, and the hash key history names secret values by
    (ferry.sops.keyed_hash)."""

    root: Path
    redactor: Redactor
    hash_key: bytes


def find_sops_files(root: Path) -> list[SopsFile]:
    """Every SOPS-encrypted file under ``root``, by path; SopsRefused past the bounds (ferry.sops). Remembered by
    root: the worker's cache entries are content-addressed, so each release is read once."""
    return list(_scanned(str(root))[0])


@functools.lru_cache(maxsize=1024)
def _scanned(directory: str) -> tuple[tuple[SopsFile, ...], int]:
    """(the release's SOPS files, the bytes of all its files)."""
    root = Path(directory)
    found: list[SopsFile] = []
    total = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        where, size = path.relative_to(root).as_posix(), path.stat().st_size
        total += size
        if size > MAX_SOPS_FILE_BYTES:  # NB: its head and tail tell a SOPS file; the whole is never read
            with path.open("rb") as big:
                head = big.read(_PEEK)
                big.seek(size - _PEEK)
                ends = (head + big.read(_PEEK)).decode(errors="replace")
            if store_of(where, ends) is not None or misnamed(where, ends):
                raise SopsRefused(f"{where}: SOPS file of {size} bytes, more than {MAX_SOPS_FILE_BYTES}: refused")
            continue
        try:
            text = path.read_bytes().decode()
        except UnicodeDecodeError:
            continue  # NB: every SOPS store is text (binary files are stored as JSON)
        sops_file = inspect(where, text)
        if sops_file is not None:
            found.append(sops_file)
            if len(found) > MAX_SOPS_FILES:
                raise SopsRefused(f"more than {MAX_SOPS_FILES} SOPS-encrypted files in one release: refused")
    return tuple(found), total


def _sops_reason(stderr: bytes) -> str:
    """sops's reason, short: its last meaningful line (a MAC mismatch, no metadata, a value that does not
    decrypt), without anything that looks like an encrypted value."""
    lines = [line.strip(" |") for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and "ENC[" not in line and "AGE-SECRET-KEY" not in line.upper()]
    for line in reversed(lines):
        lower = line.lower()
        if any(word in lower for word in ("mac", "metadata", "could not", "error", "failed")):
            return line[:300]
    return (lines[-1] if lines else "sops exited without a message")[:300]


def _decrypt(file: SopsFile, source: Path, keys: Path, home: Path) -> bytes:
    env = {
        "PATH": "",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "SOPS_AGE_KEY_FILE": str(keys),
        "SOPS_DECRYPTION_ORDER": "age",
        # NB: a file may also list KMS keys (tried only if age fails): no ambient cloud credential is reachable
        "AWS_EC2_METADATA_DISABLED": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }
    argv = [str(sops_path()), "decrypt", "--input-type", file.store, "--output-type", file.store, str(source)]
    try:
        run = run_bounded(argv, f"sops decrypt {file.path}", env, MAX_PLAINTEXT_BYTES, SOPS_TIMEOUT, cwd=home)
    except BundleError as err:
        raise DecryptionFailed(f"{file.path}: {err}") from None
    if run.code != 0:
        raise DecryptionFailed(f"{file.path}: sops refused it (exit {run.code}): {_sops_reason(run.stderr)}")
    return run.stdout


def _values(file: SopsFile, plaintext: bytes) -> list[str]:
    """Every plaintext value of a decrypted file (for the Redactor)."""
    try:
        text = plaintext.decode()
    except UnicodeDecodeError:
        return []
    if file.store == "dotenv":
        return [line.split("=", 1)[1] for line in text.splitlines() if "=" in line and not line.startswith("#")]
    if file.store == "binary":
        return [line for line in text.splitlines() if line.strip()]
    try:
        docs = list(yaml.safe_load_all(text)) if file.store == "yaml" else [json.loads(text)]
    except (yaml.YAMLError, ValueError):
        return [line for line in text.splitlines() if line.strip()]
    values: list[str] = []
    for doc in docs:
        if isinstance(doc, dict):
            values += secret_values(doc)
        elif isinstance(doc, list | str | int | float):
            values += secret_values({"value": doc})
    return values


def _identities(source: Path | None, files: list[SopsFile], environment: str) -> Identities:
    names = ", ".join(f.path for f in files[:5])
    if source is None:
        raise DecryptionFailed(
            f"{environment} decrypts SOPS files ({names}) but this worker has no age identities configured for it "
            "(FERRY_SOPS_AGE_KEYS, or sops-age-keys in its clusters file entry)"
        )
    try:
        return load(source)
    except (IdentitiesUnusable, ToolMissing) as err:
        raise DecryptionFailed(f"the worker's age identities: {err}") from None


def sweep(parent: Path, older_than: float = STALE_AFTER) -> None:
    """Remove private copies a killed worker left behind (its `finally` never ran): this user's, older than the
    longest a reconcile may hold one."""
    cutoff = time.time() - older_than
    for stale in parent.glob(f"{PRIVATE_PREFIX}*"):
        with contextlib.suppress(OSError):
            info = stale.lstat()
            if stale.is_dir() and info.st_uid == os.getuid() and info.st_mtime < cutoff:
                shutil.rmtree(stale, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _decrypt_all(files: list[SopsFile], root: Path, keys: Path, home: Path) -> tuple[dict[str, bytes], list[str]]:
    plaintexts: dict[str, bytes] = {}
    values: list[str] = []
    for file in files:
        plaintexts[file.path] = _decrypt(file, root / file.path, keys, home)
        values += _values(file, plaintexts[file.path])
    return plaintexts, values


class Plaintexts:
    """The worker's memory of what it decrypted, so an iteration's check of an unchanged release runs no sops:
    by release (its cache entry: content-addressed, never changed in place) and identities (other identities
    decrypt anew). Memory only, never a file; at most MAX_REMEMBERED releases (least recently used leaves)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: OrderedDict[tuple[str, str], tuple[dict[str, bytes], list[str]]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(root: Path, identities: Identities) -> tuple[str, str]:
        return str(root), hashlib.sha256(identities.text).hexdigest()

    def get(self, root: Path, identities: Identities) -> tuple[dict[str, bytes], list[str]] | None:
        with self._lock:
            found = self._held.get(self._key(root, identities))
            if found is not None:
                self._held.move_to_end(self._key(root, identities))
            return found

    def put(self, root: Path, identities: Identities, plaintexts: dict[str, bytes], values: list[str]) -> None:
        with self._lock:
            self._held[self._key(root, identities)] = (plaintexts, values)
            self._held.move_to_end(self._key(root, identities))
            while len(self._held) > self._limit:
                self._held.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


MAX_REMEMBERED = 256
_PLAINTEXTS = Plaintexts(MAX_REMEMBERED)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _check_recipients(files: list[SopsFile], identities: Identities) -> None:
    for file in files:
        missing = missing_recipients(file, identities.recipients)
        if missing:
            raise DecryptionFailed(
                f"{file.path}: encrypted for {', '.join(short_recipient(r) for r in missing[:5])}; the worker holds "
                f"identities for {', '.join(short_recipient(r) for r in identities.recipients[:5])} only"
            )


def _plaintexts(
    files: list[SopsFile], root: Path, identities: Identities, work: Path
) -> tuple[dict[str, bytes], list[str]]:
    """What the files decrypt to: remembered, or by sops (the identities in a 0600 file only while it runs)."""
    found = _PLAINTEXTS.get(root, identities)
    if found is None:
        home, keys_file = work / "home", work / "age.keys"
        home.mkdir(mode=0o700)
        _write_private(keys_file, identities.text)
        try:
            found = _decrypt_all(files, root, keys_file, home)
        finally:
            keys_file.unlink()
    _PLAINTEXTS.put(root, identities, *found)
    return found


@contextlib.contextmanager
def decrypted(root: Path, enabled: bool, keys: Path | None, environment: str) -> Iterator[Decrypted | None]:
    """See the module's contract. DecryptionFailed for every refusal."""
    try:
        files = find_sops_files(root)
    except SopsRefused as err:
        raise DecryptionFailed(str(err)) from None
    if not files:
        yield None
        return
    if not enabled:
        raise DecryptionFailed(
            f"the release holds SOPS-encrypted files ({', '.join(f.path for f in files[:5])}) and {environment}'s "
            "spec does not decrypt (decryption: {provider: sops}): ciphertext is never applied"
        )
    identities = _identities(keys, files, environment)
    _check_recipients(files, identities)
    in_memory = _scanned(str(root))[1] <= MAX_IN_MEMORY_RELEASE
    work = private_dir(PRIVATE_PREFIX, None if in_memory else root.parent.parent)
    sweep(work.parent)
    try:
        copy = work / "release"
        # NB: a large release is hard-linked (the cache's own files, read-only to the render); a decrypted file
        # replaces its link, never the cached file
        shutil.copytree(root, copy, symlinks=True, copy_function=shutil.copy2 if in_memory else _link_or_copy)
        plaintexts, values = _plaintexts(files, root, identities, work)
        for file in files:
            (copy / file.path).unlink()
            _write_private(copy / file.path, plaintexts[file.path])
        yield Decrypted(root=copy, redactor=Redactor.of(values), hash_key=hash_key(identities.text))
    finally:
        shutil.rmtree(work, ignore_errors=True)
