"""Bundle archives: the deterministic tar.gz and its safe extraction.

Contract:
- ``write_tarball`` is deterministic: the same files give the same bytes and digest on any machine (sorted
  entries, zero mtime/uid/gid, empty user/group names, normalized modes, fixed gzip header).
- ``safe_extract`` streams the archive once and enforces every bound before it reads what a header announces:
  tar header (PAX/GNU long name) size, member count, per-file and total size; absolute paths, '..', links,
  devices and sparse files are UnsafeArchive, name clashes are BadInput (both non-retryable); the staging
  directory is removed on every failure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from activities.errors import classified
from activities.manifests import MAX_BUNDLE_BYTES, MAX_MEMBERS, BundleFile
from ferry.errors import ErrorType
from ferry.release import MAX_BUNDLE_FILE_BYTES

# A PAX or GNU long-name header holds a path and a few attributes; tarfile reads it whole into memory.
MAX_TAR_HEADER_BYTES = 64 * 1024


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def write_tarball(root: Path, files: list[BundleFile], out: Path) -> str:
    """Deterministic tar.gz of files; returns its sha256 digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for f in files:
            parts = f.relpath.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755, 0))
            data = f.path.read_bytes()
            tar.addfile(
                _tarinfo(f.relpath, tarfile.REGTYPE, 0o755 if f.executable else 0o644, len(data)), io.BytesIO(data)
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        # NB: filename="" and mtime=0 keep the gzip header identical on every machine.
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz:
            gz.write(raw.getvalue())
    return _digest(out)


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header's whole body into memory before it returns the member it
    describes: refuse an oversized one (and sparse files) from the header alone, before a byte is read."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
            raise _ArchiveRefused(f"a tar extended header of {self.size} bytes (over {MAX_TAR_HEADER_BYTES})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _ArchiveRefused(f"bundle entry {self.name!r} is a sparse file")
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member


_EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class _ArchiveRefused(Exception):
    pass


def safe_extract(
    archive: Path,
    dest: Path,
    max_entry_bytes: int = MAX_BUNDLE_FILE_BYTES,
    max_total_bytes: int = MAX_BUNDLE_BYTES,
    max_members: int = MAX_MEMBERS,
) -> int:
    """Extract a bundle into dest (which must not exist yet), refusing anything that could escape dest or
    exhaust memory, inodes or disk; every bound is checked from the header, before the member's data is read.
    UnsafeArchive (non-retryable) for what is hostile or oversized, BadInput for name clashes and undecodable
    names; dest is removed on any failure. Returns the unpacked bytes."""
    dest.mkdir(parents=True)
    try:
        return _extract(archive, dest, max_entry_bytes, max_total_bytes, max_members)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(archive: Path, dest: Path, max_entry_bytes: int, max_total_bytes: int, max_members: int) -> int:
    total = members = 0
    seen: dict[str, bool] = {}  # normalized name -> is a directory
    try:
        # stream mode ("r|gz"): one forward pass, nothing seeks back, nothing is read twice.
        with tarfile.open(archive, "r|gz", tarinfo=_BoundedTarInfo, errors="strict") as tar:
            for member in tar:
                members += 1
                if members > max_members:
                    raise _ArchiveRefused(f"bundle has more than {max_members} entries")
                name = member.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise _ArchiveRefused(f"bundle entry {name!r} escapes the bundle directory")
                if member.issym() or member.islnk():
                    raise _ArchiveRefused(f"bundle entry {name!r} is a link; links are refused")
                if member.isdev() or member.isfifo() or member.issparse():
                    raise _ArchiveRefused(f"bundle entry {name!r} is a device file, FIFO or sparse file")
                if not (member.isfile() or member.isdir()):
                    raise _ArchiveRefused(f"bundle entry {name!r} has unsupported type {member.type!r}")
                if member.size > max_entry_bytes:
                    raise _ArchiveRefused(
                        f"bundle entry {name!r} is {member.size} bytes, over the {max_entry_bytes} limit"
                    )
                total += member.size
                if total > max_total_bytes:
                    raise _ArchiveRefused(f"bundle is over {max_total_bytes} bytes unpacked")
                _check_clash(seen, name, member.isdir())
                # The data filter re-checks paths and modes (no setuid, no links out); our caps came first.
                tar.extract(member, dest, set_attrs=False, filter="data")
    except _ArchiveRefused as err:
        raise classified(ErrorType.UNSAFE_ARCHIVE, str(err)) from None
    except _NameClash as err:
        raise classified(ErrorType.BAD_INPUT, str(err)) from None
    except UnicodeError as err:
        raise classified(ErrorType.BAD_INPUT, f"bundle entry name is not UTF-8: {err}") from None
    except tarfile.FilterError as err:
        raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle entry refused: {err}") from None
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle is not a valid tar.gz: {err}") from None
    return total


class _NameClash(Exception):
    pass


def _check_clash(seen: dict[str, bool], name: str, is_dir: bool) -> None:
    """Two entries for one path, or a file where a directory is needed: ambiguous content, refused."""
    path = os.path.normpath(name)
    parts = path.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if seen.get(parent) is False:
            raise _NameClash(f"bundle entry {name!r} lies under {parent!r}, which is a file (tar name clash)")
        seen.setdefault(parent, True)
    if path in seen and not (is_dir and seen[path]):
        raise _NameClash(f"bundle has two entries named {path!r} (tar name clash)")
    seen[path] = is_dir
