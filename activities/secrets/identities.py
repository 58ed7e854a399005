"""The worker's age identities: read from the file or directory its settings name (never from a spec or
history), and the recipients they decrypt for (``age-keygen -y``), so a refusal can say which are missing."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from activities.manifests import BundleError, run_bounded
from activities.secrets.binaries import age_keygen_path

MAX_IDENTITY_FILE_BYTES = 256 * 1024  # a post-quantum identity is ~2.5 KB; a file of a hundred is far below this
MAX_IDENTITY_FILES = 64
KEYGEN_TIMEOUT = 10.0
MAX_SOURCES = 64  # identity sources (worker, clusters, environments) remembered


class IdentitiesUnusable(ValueError):
    """The configured identities cannot be read or hold no identity: the message names the path, never a key."""


@dataclass(frozen=True)
class Identities:
    """Identities as one age identity file's text (every file of a directory, in name order), where they came
    from, and the recipients they decrypt for."""

    text: bytes
    source: str
    recipients: tuple[str, ...]

    def __repr__(self) -> str:  # NB: never the key material, whatever prints this
        return f"Identities(source={self.source!r}, recipients={len(self.recipients)})"


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) > MAX_IDENTITY_FILES:
            raise IdentitiesUnusable(f"{source}: more than {MAX_IDENTITY_FILES} identity files")
        return files
    if source.is_file():
        return [source]
    raise IdentitiesUnusable(f"{source}: no such file or directory")


def _read(path: Path) -> bytes:
    info = path.stat()
    if info.st_size > MAX_IDENTITY_FILE_BYTES:
        raise IdentitiesUnusable(f"{path}: {info.st_size} bytes, more than {MAX_IDENTITY_FILE_BYTES}")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentitiesUnusable(f"{path}: readable by others (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it")
    return path.read_bytes()


def recipients_of(text: bytes) -> tuple[str, ...]:
    """The recipients of an identity file's text, by the real ``age-keygen -y`` (the identities go on stdin)."""
    run = run_bounded(
        [str(age_keygen_path()), "-y"],
        "age-keygen -y",
        {"PATH": ""},
        max_output=MAX_IDENTITY_FILE_BYTES,
        timeout=KEYGEN_TIMEOUT,
        stdin=text,
    )
    if run.code != 0:
        # NB: age-keygen's own message names a line, never the key; kept short all the same
        reason = run.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise IdentitiesUnusable(f"not an age identity file: {reason[0][:200]}")
    return tuple(line for line in run.stdout.decode().split() if line.startswith("age1"))


_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], Identities] = {}
_lock = threading.Lock()


def load(source: Path) -> Identities:
    """The identities at ``source`` (a file, or a directory of files), re-read when a file changes."""
    try:
        files = _files(source)
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        with _lock:
            if (str(source), stamp) in _cache:
                return _cache[(str(source), stamp)]
        text = b"\n".join(_read(p) for p in files)
        recipients = recipients_of(text) if text.strip() else ()
    except OSError as err:
        raise IdentitiesUnusable(f"{source}: {err.strerror or err}") from None
    except BundleError as err:
        raise IdentitiesUnusable(f"{source}: {err}") from None
    if not recipients:
        raise IdentitiesUnusable(f"{source}: holds no age identity")
    found = Identities(text, str(source), recipients)
    with _lock:
        for key in [k for k in _cache if k[0] == str(source)]:
            del _cache[key]  # an older reading of the same source
        while len(_cache) >= MAX_SOURCES:
            del _cache[next(iter(_cache))]
        _cache[(str(source), stamp)] = found
    return found


def private_dir(prefix: str, beside: Path | None = None) -> Path:
    """A directory only this user can enter (mode 0700): under ``beside`` when given, else in memory when the
    machine offers it (/dev/shm), else under the system's temporary directory; the caller removes it."""
    import tempfile

    shm = Path("/dev/shm")
    parent = beside or (shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
