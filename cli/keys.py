"""Reading an SRE's signing key and building expiry times: shared by `ferry approve|reject` and
`ferry env approve|reject`. Key bytes stay in this process: they are never printed, logged or sent."""

from __future__ import annotations

import getpass
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cli.common import KEY_PASSWORD_VARIABLE, MAX_EXPIRES, CommandError
from ferry.approvals import TIMESTAMP_FORMAT
from ferry.durations import parse_duration
from ferry.sshsig import MAX_PRIVATE_KEY, ApprovalError, key_fingerprint, public_key_line

__all__ = ["KEY_PASSWORD_VARIABLE", "MAX_EXPIRES", "expiry", "private_key", "read_bounded", "read_text"]


def read_bounded(path: str, limit: int, what: str) -> bytes:
    try:
        with Path(path).expanduser().open("rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise CommandError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > limit:
        raise CommandError(f"{what} {path} is larger than {limit} bytes")
    return data


def read_text(path: str, limit: int, what: str) -> str:
    try:
        return read_bounded(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path} is not UTF-8 text") from None


def private_key(path: str) -> tuple[bytes, bytes | None, str]:
    """(key file bytes, its password or None, its fingerprint). The password comes from FERRY_KEY_PASSWORD, else
    from a prompt on the terminal; with no terminal an encrypted key is an error, never a hang."""
    data = read_bounded(path, MAX_PRIVATE_KEY, "private key")
    password = os.environ.get(KEY_PASSWORD_VARIABLE, "").encode() or None
    try:
        return data, password, key_fingerprint(public_key_line(data, password))
    except ApprovalError as err:
        if err.kind != "encrypted":
            raise CommandError(f"--key {path}: {err.reason}") from None
    if not sys.stdin.isatty():
        raise CommandError(f"--key {path} is encrypted: set {KEY_PASSWORD_VARIABLE} (no terminal to ask on)")
    password = getpass.getpass(f"password for {path}: ").encode()
    try:
        return data, password, key_fingerprint(public_key_line(data, password))
    except ApprovalError as err:
        raise CommandError(f"--key {path}: {err.reason}") from None


def expiry(text: str) -> str:
    try:
        delta = parse_duration(text)
    except ValueError as err:
        raise CommandError(f"--expires: {err}") from None
    if not timedelta(0) < delta <= MAX_EXPIRES:
        raise CommandError(f"--expires {text}: must be more than 0 and at most {MAX_EXPIRES.days}d")
    return (datetime.now(UTC) + delta).strftime(TIMESTAMP_FORMAT)
