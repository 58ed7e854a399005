"""What `make demo` needs from activities/secrets (the CLI reaches activities/ only through workers/, the
``cli-through-workers`` contract): a file encrypted for age recipients by the real sops, and the error types."""

from __future__ import annotations

from pathlib import Path

from activities.secrets.binaries import ToolMissing
from activities.secrets.encrypt import EncryptFailed, encrypt

__all__ = ["EncryptFailed", "ToolMissing", "encrypt_file"]


def encrypt_file(path: Path, recipients: list[str]) -> bytes:
    """``path`` encrypted by sops for ``recipients`` (of a Secret manifest, its data and stringData only)."""
    return encrypt(path, recipients)
