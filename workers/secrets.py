"""What `ferry secrets` needs from activities/secrets (the CLI reaches activities/ only through workers/, the
``cli-through-workers`` contract): encryption with the real sops, the worker's identity sources with their
recipients (workers.decryption names the sources), the error types it reports in one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activities.secrets.binaries import ToolMissing
from activities.secrets.encrypt import EncryptFailed, encrypt
from activities.secrets.identities import IdentitiesUnusable, load
from ferry.settings import Settings
from workers.decryption import identity_sources

__all__ = ["EncryptFailed", "IdentitiesUnusable", "IdentitySource", "ToolMissing", "encrypt_file", "worker_sources"]


def encrypt_file(path: Path, recipients: list[str]) -> bytes:
    """``path`` encrypted by sops for ``recipients`` (a Secret manifest's data and stringData only)."""
    return encrypt(path, recipients)


@dataclass(frozen=True)
class IdentitySource:
    """One place the worker reads age identities from: which (``worker``, ``cluster NAME``, …), the path, and
    the recipients it decrypts for, or why it is unusable. Never the key."""

    where: str
    path: str
    recipients: tuple[str, ...] = ()
    error: str | None = None


def worker_sources(settings: Settings, override: str | None = None) -> list[IdentitySource]:
    """The worker's identity sources (FERRY_SOPS_AGE_KEYS and the clusters file's `sops-age-keys`), or only
    ``override``; each read with ``age-keygen -y``. IdentitiesUnusable when the clusters file cannot be read."""
    from activities.cluster import ClustersFileError

    if override:
        paths = {"--identities": Path(override).expanduser()}
    else:
        try:
            paths = identity_sources(settings)
        except ClustersFileError as err:
            raise IdentitiesUnusable(str(err)) from None
    out: list[IdentitySource] = []
    for where, path in paths.items():
        try:
            found = load(path)
        except (IdentitiesUnusable, ToolMissing) as err:
            out.append(IdentitySource(where, str(path), error=str(err)))
            continue
        out.append(IdentitySource(where, found.source, found.recipients))
    return out
