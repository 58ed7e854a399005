"""What `ferry secrets` needs from activities/secrets (the CLI reaches activities/ only through workers/, the
``cli-through-workers`` contract): encryption with the real sops, the worker's identities and their recipients,
the error types it reports in one line."""

from __future__ import annotations

from pathlib import Path

from activities.secrets.binaries import ToolMissing
from activities.secrets.encrypt import EncryptFailed, encrypt
from activities.secrets.identities import Identities, IdentitiesUnusable, load
from ferry.settings import Settings

__all__ = ["EncryptFailed", "IdentitiesUnusable", "ToolMissing", "encrypt_file", "identities_source", "recipients"]


def encrypt_file(path: Path, recipients: list[str]) -> bytes:
    """``path`` encrypted by sops for ``recipients`` (a Secret manifest's data and stringData only)."""
    return encrypt(path, recipients)


def identities_source(settings: Settings, override: str | None = None) -> Path | None:
    """Where the worker reads its age identities: ``override``, else FERRY_SOPS_AGE_KEYS (None: not configured)."""
    if override:
        return Path(override).expanduser()
    return settings.worker.sops_age_keys


def recipients(source: Path) -> Identities:
    """The identities at ``source`` with their recipients (``age-keygen -y``); IdentitiesUnusable names the path.
    NB: the caller prints ``.recipients`` and ``.source`` only; the text is the private key."""
    return load(source)
