"""Chart archives: `package_chart` (what `ferry release --chart DIR` pushes) and `check_chart` (what is refused
before a chart archive or directory is used).

Contract:
- ``package_chart(chart_dir, out_dir)`` is deterministic: the same files give the same bytes on any machine. Like
  `helm package` (helm v4.3.2 pkg/chart/v2/util/save.go) the archive is ``NAME-VERSION.tgz`` with every file under
  one top directory named after the chart, mode 0644, no directory entries; unlike it, entries are sorted, mtimes,
  uids and gids are 0, the gzip header is fixed, and Chart.yaml is kept byte for byte (helm re-marshals it).
  ``.helmignore`` is honoured with Helm's rules (pkg/ignore/rules.go: Go's filepath.Match globs, a rule without a
  slash matches the base name, a leading ``/`` roots it, a trailing ``/`` matches directories only, ``**`` is an
  error, and Helm's own reading of ``!``: a negated rule ignores every path it does *not* match), plus Helm's
  default ``templates/.?*``. Refused (BundleError, naming the file): links, devices, a file over the bundles'
  per-file bound (ferry.release.MAX_BUNDLE_FILE_BYTES), more than the bundles' file count or total size, a
  Chart.yaml that ChartMetadata refuses. The archive is then checked with ``check_chart``.
- ``check_chart(source)`` takes a chart archive or directory. An archive goes through activities.archive's
  ``safe_extract`` first (links, ``..``, absolute paths, devices and oversized entries are UnsafeArchive, before a
  byte of them is written), and must hold exactly one top directory (a top-level Chart.yaml is refused, as Helm's
  loader refuses it). Then: Chart.yaml parsed by ferry.helm_oci.ChartMetadata (apiVersion v2, strict semver),
  values.yaml a mapping, and activities.helm.render's checks (every dependency vendored under charts/, else the
  ``helm dependency build`` fix; schemas with no remote ``$ref``). BundleError otherwise. Side-effect free.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from activities.archive import safe_extract
from activities.helm.render import _yaml_mapping
from activities.helm.render import check_chart as check_chart_dir
from activities.manifests import MAX_BUNDLE_BYTES, MAX_MEMBERS, BundleError
from ferry.helm_oci import ChartError, ChartMetadata, chart_archive_name, parse_chart_yaml
from ferry.release import MAX_BUNDLE_FILE_BYTES

HELMIGNORE = ".helmignore"
MAX_HELMIGNORE_BYTES = 64 * 1024


# ------------------------------------------------------------------------------------------------ .helmignore


def go_glob(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match pattern as a regex over a whole name: ``*`` and ``?`` never match ``/``, ``[^…]``
    negates a class, ``\\`` escapes. ValueError for what Go calls ErrBadPattern."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 >= len(pattern):
                raise ValueError("syntax error in pattern (trailing backslash)")
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end, klass = _go_class(pattern, i + 1)
            out.append(klass)
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _go_class(pattern: str, i: int) -> tuple[int, str]:
    """The character class starting after ``[`` at ``i``: (index of its ``]``, the regex class)."""
    negate = i < len(pattern) and pattern[i] == "^"
    i += negate
    parts: list[str] = []
    while True:
        if i >= len(pattern):
            raise ValueError("syntax error in pattern (unterminated [)")
        if pattern[i] == "]" and parts:
            break
        lo, i = _go_class_char(pattern, i)
        if i < len(pattern) and pattern[i] == "-" and i + 1 < len(pattern) and pattern[i + 1] != "]":
            hi, i = _go_class_char(pattern, i + 1)
            if hi < lo:
                raise ValueError("syntax error in pattern (bad range)")
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            parts.append(re.escape(lo))
    body = "".join(parts)
    return i, (f"[^/{body}]" if negate else f"[{body}]")


def _go_class_char(pattern: str, i: int) -> tuple[str, int]:
    if pattern[i] == "\\":
        if i + 1 >= len(pattern):
            raise ValueError("syntax error in pattern (trailing backslash)")
        return pattern[i + 1], i + 2
    return pattern[i], i + 1


@dataclass(frozen=True)
class _Rule:
    negate: bool
    must_dir: bool
    match: Callable[[str], bool]


class HelmIgnore:
    """Helm's ignore rules (pkg/ignore/rules.go), evaluated in order; the first decision wins."""

    def __init__(self, text: str = "") -> None:
        self._rules: list[_Rule] = []
        for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
            try:
                self._add(line)
            except ValueError as err:
                raise BundleError(f"{HELMIGNORE} line {number}: {err}") from None
        self._add("templates/.?*")  # Helm's AddDefaults: dotfiles in templates/

    def _add(self, line: str) -> None:
        rule = line.strip()
        if not rule or rule.startswith("#"):
            return
        if "**" in rule:
            raise ValueError("double-star (**) syntax is not supported")
        go_glob(rule)  # Helm compiles the raw rule first: a bad pattern fails the whole chart
        negate = rule.startswith("!")
        rule = rule[1:] if negate else rule
        must_dir = rule.endswith("/")
        rule = rule.removesuffix("/")
        if rule.startswith("/"):
            glob = go_glob(rule[1:])
            match: Callable[[str], bool] = lambda n: bool(glob.match(n))  # noqa: E731
        elif "/" in rule:
            glob = go_glob(rule)
            match = lambda n: bool(glob.match(n))  # noqa: E731
        else:
            glob = go_glob(rule)
            match = lambda n: bool(glob.match(n.rsplit("/", 1)[-1]))  # noqa: E731
        self._rules.append(_Rule(negate, must_dir, match))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether the chart-relative ``path`` (``/``-separated) is left out of the package."""
        if path in ("", ".", "./"):
            return False
        for rule in self._rules:
            if rule.negate:
                # NB: Helm's own semantics, not .gitignore's: a negated rule that does not match ignores the path.
                if (rule.must_dir and not is_dir) or not rule.match(path):
                    return True
                continue
            if rule.must_dir and not is_dir:
                continue
            if rule.match(path):
                return True
        return False


# ------------------------------------------------------------------------------------------------ packaging


@dataclass(frozen=True)
class PackagedChart:
    path: Path
    metadata: ChartMetadata
    files: int
    size: int


def chart_files(chart_dir: Path) -> list[str]:
    """The chart-relative paths `helm package` would include, sorted; BundleError for links, devices and the
    bundles' bounds."""
    root = chart_dir.resolve()
    rules = HelmIgnore(_helmignore_text(root))
    files: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames):
            rel = (base / name).relative_to(root).as_posix()
            if rules.ignored(rel, True):
                dirnames.remove(name)
            elif (base / name).is_symlink():
                raise BundleError(f"{rel}: a symlink; links are refused in charts (copy what it points to)")
        dirnames.sort()
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if rules.ignored(rel, stat.S_ISDIR(info.st_mode)):
                continue
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(f"{rel}: a symlink; links are refused in charts (copy what it points to)")
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{rel}: not a regular file (device, FIFO or socket): refused")
            if info.st_size > MAX_BUNDLE_FILE_BYTES:
                raise BundleError(
                    f"{rel}: {info.st_size} bytes is over the {MAX_BUNDLE_FILE_BYTES}-byte limit per file"
                )
            total += info.st_size
            files.append(rel)
            if len(files) > MAX_MEMBERS or total > MAX_BUNDLE_BYTES:
                raise BundleError(f"{chart_dir.name}: more than {MAX_MEMBERS} files or {MAX_BUNDLE_BYTES} bytes")
    return sorted(files)


def _helmignore_text(root: Path) -> str:
    path = root / HELMIGNORE
    if not path.exists():
        return ""
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{HELMIGNORE}: not a regular file")
    if path.stat().st_size > MAX_HELMIGNORE_BYTES:
        raise BundleError(f"{HELMIGNORE}: over {MAX_HELMIGNORE_BYTES} bytes")
    return path.read_text(errors="replace")


def read_metadata(chart_dir: Path, where: str) -> ChartMetadata:
    """Chart.yaml of a chart directory as ChartMetadata; BundleError names the problem."""
    chart_yaml = chart_dir / "Chart.yaml"
    if chart_yaml.is_symlink() or not chart_yaml.is_file():
        raise BundleError(f"{where}: no Chart.yaml: not a Helm chart directory")
    try:
        return parse_chart_yaml(_yaml_mapping(chart_yaml, f"{where}/Chart.yaml") or {}, f"{where}/Chart.yaml")
    except ChartError as err:
        raise BundleError(str(err)) from None


def package_chart(chart_dir: Path, out_dir: Path) -> PackagedChart:
    """Package ``chart_dir`` into ``out_dir/NAME-VERSION.tgz`` (see the module's contract) and check the archive.
    Idempotent: the same directory writes the same bytes."""
    if not chart_dir.is_dir():
        raise BundleError(f"{chart_dir}: chart directory does not exist")
    meta = read_metadata(chart_dir, chart_dir.name)
    files = chart_files(chart_dir)
    raw = io.BytesIO()
    size = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            data = (chart_dir / rel).read_bytes()
            size += len(data)
            info = tarfile.TarInfo(f"{meta.name}/{rel}")
            info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, len(data)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / chart_archive_name(meta)
    with out.open("wb") as handle:
        # NB: filename="" and mtime=0 keep the gzip header identical on every machine.
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=9) as gz:
            gz.write(raw.getvalue())
    check_chart(out)
    return PackagedChart(path=out, metadata=meta, files=len(files), size=size)


# ------------------------------------------------------------------------------------------------ checks


def check_chart(source: Path) -> ChartMetadata:
    """Check a chart archive (``.tgz``) or directory (see the module's contract); its ChartMetadata."""
    if source.is_dir():
        return _check_dir(source, source.name)
    with tempfile.TemporaryDirectory(prefix="ferry-chart-") as tmp:
        dest = Path(tmp) / "chart"
        safe_extract(source, dest)  # UnsafeArchive for links, traversal, devices and oversized entries
        tops = sorted(dest.iterdir())
        loose = [p.name for p in tops if not p.is_dir()]
        if loose:
            raise BundleError(
                f"{source.name}: {loose[0]!r} lies outside the chart's directory (a chart archive "
                "holds one directory named after the chart)"
            )
        if len(tops) != 1:
            raise BundleError(f"{source.name}: {len(tops)} top-level directories; a chart archive holds exactly one")
        return _check_dir(tops[0], f"{source.name}:{tops[0].name}")


def _check_dir(chart_dir: Path, where: str) -> ChartMetadata:
    meta = read_metadata(chart_dir, where)
    values = [chart_dir / "values.yaml"]
    charts = chart_dir / "charts"
    values += sorted(charts.glob("*/values.yaml")) if charts.is_dir() else []
    for path in values:
        if path.is_file() and not path.is_symlink():
            _yaml_mapping(path, f"{where}/{path.relative_to(chart_dir).as_posix()}")
    check_chart_dir(chart_dir)
    return meta
