"""Bundle bounds, enforced while streaming: each reproduction from issue 11 ("Memory and disk", "smaller ones")."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.archive import MAX_TAR_HEADER_BYTES, safe_extract, write_tarball
from activities.bundle import render
from activities.manifests import MAX_MEMBERS, BundleError, parse_documents, scan
from activities.validate import validate

ROOT = Path(__file__).resolve().parents[2]

# The 459-byte alias bomb of issue 11: nine levels of nine aliases, ~195 MB once serialized for the apply body.
ALIAS_BOMB = """apiVersion: v1
kind: ConfigMap
metadata:
  name: lol
  annotations:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _refused(err: pytest.ExceptionInfo[ApplicationError], kind: str) -> str:
    assert err.value.type == kind and err.value.non_retryable, (err.value.type, str(err.value))
    return str(err.value)


def pax_bomb(path: Path, header_bytes: int = 1 << 30) -> Path:
    """A ~1 MB tar.gz whose first entry is a PAX extended header announcing 1 GiB of zeros. NB: a gzip file may
    hold several members, read as one stream: one compressed MiB of zeros, repeated, is made at once."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = header_bytes
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9)
    with path.open("wb") as out:
        out.write(gzip.compress(header.tobuf(format=tarfile.USTAR_FORMAT)))
        for _ in range(header_bytes >> 20):
            out.write(zeros)
    return path


def many_empty_files(path: Path, count: int) -> Path:
    """A tar.gz of ``count`` empty files, its USTAR headers written directly (tarfile takes a minute)."""
    template = bytearray(_file("f0000000.yaml").tobuf(format=tarfile.USTAR_FORMAT))
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for i in range(count):
            template[1:8] = b"%07d" % i
            template[148:156] = b" " * 8
            template[148:156] = b"%06o\0 " % sum(template)
            out.write(gz.compress(bytes(template)))
        out.write(gz.compress(bytes(1024)) + gz.flush())
    return path


def test_pax_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 11: a 1 MB gzip with a 1 GiB PAX header peaked the worker at 3.2 GB RSS. Measured in a fresh
    process: its peak RSS stays that of an idle interpreter with Ferry imported."""
    bomb = pax_bomb(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 2 * 1024 * 1024
    probe = f"""
import json, resource, sys, time
from pathlib import Path
from activities.archive import safe_extract
from temporalio.exceptions import ApplicationError
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
out = {{"type": None}}
try:
    safe_extract(Path({str(bomb)!r}), Path({str(tmp_path / "dest")!r}))
except ApplicationError as err:
    out = {{"type": err.type, "message": str(err)}}
out.update(base_kib=base, peak_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           seconds=time.monotonic() - started)
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("pax bomb:", result)
    assert result["type"] == "UnsafeArchive", result
    assert str(MAX_TAR_HEADER_BYTES) in result["message"]
    assert result["peak_kib"] - result["base_kib"] < 64 * 1024, result  # < 64 MiB over the idle process
    assert result["seconds"] < 5
    assert not (tmp_path / "dest").exists()


def test_gnu_long_name_header_over_the_bound_is_refused(tmp_path: Path) -> None:
    info = _file("x" * (MAX_TAR_HEADER_BYTES + 10) + ".yaml")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "long.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(ApplicationError) as err:
        safe_extract(tmp_path / "long.tar.gz", tmp_path / "dest")
    assert "extended header" in _refused(err, "UnsafeArchive")


def test_yaml_alias_bomb_is_refused_not_expanded() -> None:
    """Issue 11: a 459-byte YAML alias bomb expanded to 195 MB in the apply body."""
    assert len(ALIAS_BOMB.encode()) < 520
    started = time.monotonic()
    with pytest.raises(BundleError, match="aliases"):
        parse_documents(ALIAS_BOMB, "bomb.yaml")
    assert time.monotonic() - started < 1


def test_yaml_with_a_few_aliases_still_parses() -> None:
    text = """apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ok, labels: &labels {app: web, tier: front}}
  data: {a: "1"}
- apiVersion: v1
  kind: Service
  metadata: {name: ok, labels: *labels}
  spec: {selector: *labels, ports: [{port: 80}]}
"""
    objects = parse_documents(text, "ok.yaml")
    assert objects[1]["spec"]["selector"] == {"app": "web", "tier": "front"}


def test_too_many_aliases_are_refused() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  base: &v x\n" + "".join(
        f"  k{i}: *v\n" for i in range(1_001)
    )
    with pytest.raises(BundleError, match="more than 1000 YAML aliases"):
        parse_documents(text, "many.yaml")


def test_alias_bomb_in_an_artifact_fails_render(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    with pytest.raises(BundleError, match="aliases"):
        render(tmp_path)
    with pytest.raises(BundleError, match="aliases"):
        validate(tmp_path)


def test_two_hundred_thousand_empty_files_are_refused_early(tmp_path: Path) -> None:
    """Issue 11: 200,000 empty files extracted happily (an inode and time bomb)."""
    archive = many_empty_files(tmp_path / "many.tar.gz", 200_000)
    with tarfile.open(archive, "r|gz") as tar:  # the archive is what it claims: entries tarfile reads
        assert [m.name for m, _ in zip(tar, range(3), strict=False)] == [
            "f0000000.yaml",
            "f0000001.yaml",
            "f0000002.yaml",
        ]
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        safe_extract(archive, tmp_path / "dest")
    assert f"more than {MAX_MEMBERS} entries" in _refused(err, "UnsafeArchive")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "dest").exists(), "the staging directory must be removed on failure"


@pytest.mark.parametrize(
    "members, what",
    [
        ([(_file("a.yaml"), b"a: 1\n"), (_file("a.yaml"), b"a: 2\n")], "two entries named 'a.yaml'"),
        ([(_file("a"), b"x"), (_file("a/b.yaml"), b"a: 1\n")], "lies under 'a', which is a file"),
        ([(_file("a"), b"x"), (_dir("a"), b"")], "two entries named 'a'"),
        ([(_file("./a.yaml"), b"x"), (_file("a.yaml"), b"y")], "two entries named 'a.yaml'"),
    ],
)
def test_tar_name_clashes_are_bad_input(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], what: str
) -> None:
    """Issue 11: a tar name clash surfaced as a generic retryable error."""
    archive = _tar_gz(tmp_path / "clash.tar.gz", members)
    with pytest.raises(ApplicationError) as err:
        safe_extract(archive, tmp_path / "dest")
    message = _refused(err, "BadInput")
    assert what in message and "name clash" in message
    assert not (tmp_path / "dest").exists()


def test_non_utf8_entry_name_is_bad_input(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        tar.addfile(_file("caf\xe9.yaml"), io.BytesIO(b""))
    (tmp_path / "latin.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(ApplicationError) as err:
        safe_extract(tmp_path / "latin.tar.gz", tmp_path / "dest")
    assert "not UTF-8" in _refused(err, "BadInput")


def test_non_utf8_manifest_is_a_clear_bundle_error(tmp_path: Path) -> None:
    """Issue 11: a non-UTF-8 manifest surfaced as a generic retryable error at render (UnicodeDecodeError);
    at release it was silently mangled."""
    (tmp_path / "cm.yaml").write_bytes(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: caf\xe9}\n".encode("latin-1")
    )
    with pytest.raises(BundleError, match=r"cm.yaml: not UTF-8 \(byte 64"):
        render(tmp_path)
    with pytest.raises(BundleError, match="cm.yaml: not UTF-8"):
        validate(tmp_path)


@pytest.mark.parametrize(
    "member, what",
    [(_file("/etc/x.yaml"), "escapes"), (_file("../x.yaml"), "escapes"), (_file("a/../../x.yaml"), "escapes")],
)
def test_escaping_entries_refused_and_staging_removed(tmp_path: Path, member: tarfile.TarInfo, what: str) -> None:
    archive = _tar_gz(tmp_path / "bad.tar.gz", [(_file("ok.yaml"), b"a: 1\n"), (member, b"x")])
    with pytest.raises(ApplicationError) as err:
        safe_extract(archive, tmp_path / "dest")
    assert what in _refused(err, "UnsafeArchive")
    assert not (tmp_path / "dest").exists()


def test_links_devices_and_oversized_entries_refused(tmp_path: Path) -> None:
    link = _file("l.yaml")
    link.type, link.linkname = tarfile.SYMTYPE, "ok.yaml"
    fifo = _file("p")
    fifo.type = tarfile.FIFOTYPE
    for i, (member, data, what) in enumerate(
        [(link, b"", "is a link"), (fifo, b"", "device file"), (_file("big.yaml"), b"x" * 2048, "over the 1024 limit")]
    ):
        archive = _tar_gz(tmp_path / f"b{i}.tar.gz", [(member, data)])
        with pytest.raises(ApplicationError) as err:
            safe_extract(archive, tmp_path / f"dest{i}", max_entry_bytes=1024)
        assert what in _refused(err, "UnsafeArchive")
    archive = _tar_gz(tmp_path / "total.tar.gz", [(_file(f"{i}.yaml"), b"x" * 600) for i in range(3)])
    with pytest.raises(ApplicationError) as err:
        safe_extract(archive, tmp_path / "dest-total", max_entry_bytes=1024, max_total_bytes=1500)
    assert "over 1500 bytes unpacked" in _refused(err, "UnsafeArchive")


def test_hard_links_are_refused_and_setuid_is_not_extracted(tmp_path: Path) -> None:
    hard = _file("h.yaml")
    hard.type, hard.linkname = tarfile.LNKTYPE, "ok.yaml"
    archive = _tar_gz(tmp_path / "hard.tar.gz", [(_file("ok.yaml"), b"a: 1\n"), (hard, b"")])
    with pytest.raises(ApplicationError) as err:
        safe_extract(archive, tmp_path / "dest-hard")
    assert "is a link" in _refused(err, "UnsafeArchive")
    setuid = _file("run.sh")
    setuid.mode = 0o4755
    safe_extract(_tar_gz(tmp_path / "suid.tar.gz", [(setuid, b"#!/bin/sh\n")]), tmp_path / "dest-suid")
    assert not (tmp_path / "dest-suid" / "run.sh").stat().st_mode & 0o6000


def test_corrupt_gzip_is_unsafe_archive(tmp_path: Path) -> None:
    good = _tar_gz(tmp_path / "good.tar.gz", [(_file("a.yaml"), os.urandom(4096))])
    (tmp_path / "cut.tar.gz").write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ApplicationError) as err:
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "dest")
    _refused(err, "UnsafeArchive")
    assert not (tmp_path / "dest").exists()


def test_a_released_bundle_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "base").mkdir(parents=True)
    (src / "base" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    archive = tmp_path / "b.tar.gz"
    write_tarball(src, scan(src), archive)
    size = safe_extract(archive, tmp_path / "dest")
    assert size == (src / "base" / "cm.yaml").stat().st_size + (src / "run.sh").stat().st_size
    assert (tmp_path / "dest" / "base" / "cm.yaml").read_text() == (src / "base" / "cm.yaml").read_text()
    assert [o["kind"] for o in render(tmp_path / "dest")] == ["ConfigMap"]
