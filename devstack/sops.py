"""The local stack's age identity (`ferry dev up`): one identity for every worker it starts, made once by the real
age-keygen at ``<state-dir>/sops/age.key`` (0600, in a 0700 directory) and kept across `dev down`/`dev up`, so
what was encrypted for the stack's recipient stays decryptable. devstack.json records the recipient and the
file's path, never the key."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from activities.manifests import BundleError
from activities.secrets.binaries import ToolMissing, age_keygen_path, sops_path
from activities.secrets.encrypt import EncryptFailed, new_identity
from activities.secrets.identities import IdentitiesUnusable, recipients_of
from devstack.procs import StackError

IDENTITY_FILE = Path("sops") / "age.key"
MAX_IDENTITY_BYTES = 64 * 1024  # the stack's file holds one identity (~190 bytes; a post-quantum one ~2.5 KB)


def binaries() -> dict[str, str]:
    """The built sops and age-keygen (`make sops`); StackError with the make hint when one is missing."""
    try:
        return {"sops": str(sops_path()), "age_keygen": str(age_keygen_path())}
    except ToolMissing as err:
        raise StackError(f"sops: {err}") from None


def identity_path(state_dir: Path) -> Path:
    return state_dir / IDENTITY_FILE


def prepare_identity(state_dir: Path) -> dict[str, Any]:
    """The stack's identity, made when missing and checked when kept: devstack.json's ``sops`` entry (the
    recipient, the identity file's path, the binaries'). StackError names the file and what is wrong."""
    tools = binaries()
    path = identity_path(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.is_symlink() or not path.parent.is_dir():
        raise StackError(f"sops: {path.parent} is not a directory")
    os.chmod(path.parent, 0o700)
    try:
        recipient = _kept_recipient(path) if os.path.lexists(path) else new_identity(path)
    except (BundleError, EncryptFailed, IdentitiesUnusable) as err:
        raise StackError(f"sops: {err}") from None
    return {"recipient": recipient, "identities": str(path), **tools}


def _kept_recipient(path: Path) -> str:
    """The recipient of the identity a previous `dev up` made, by `age-keygen -y`; refused when it is not a
    private regular file holding exactly one identity."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise StackError(f"sops: {path} is not a regular file; remove it and run `ferry dev up` again")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = f"{stat.S_IMODE(info.st_mode):o}"
        raise StackError(f"sops: {path} is readable by others (mode {mode}): chmod 600 it, or remove it for a new one")
    if info.st_size > MAX_IDENTITY_BYTES:
        raise StackError(f"sops: {path}: {info.st_size} bytes, more than one identity ({MAX_IDENTITY_BYTES})")
    recipients = recipients_of(path.read_bytes())
    if len(recipients) != 1:
        raise StackError(f"sops: {path} holds {len(recipients)} age identities, not one; remove it for a new one")
    return recipients[0]


def identity_ready(entry: dict[str, Any]) -> bool:
    """`ferry dev status`: the recorded identity file and both binaries are still there."""
    files = [entry.get("identities"), entry.get("sops"), entry.get("age_keygen")]
    return all(isinstance(f, str) and Path(f).is_file() for f in files)
