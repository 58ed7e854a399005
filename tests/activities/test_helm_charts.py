"""activities/helm/charts.py: package_chart beside the real `helm package`; check_chart against hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.helm.charts import HelmIgnore, check_chart, package_chart
from activities.manifests import BundleError
from tests.kit.charts import helm_binary_path, write_chart


def _helm() -> Path:
    path = helm_binary_path()
    assert path.is_file(), f"helm v4.3.2 is missing at {path}: run `make helm` (make setup builds it)"
    return path


def _tgz(tmp: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in entries:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    out = tmp / "evil.tgz"
    out.write_bytes(gzip.compress(raw.getvalue()))
    return out


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"apiVersion: v2\nname: shop\nversion: 1.0.0\n"


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def test_package_matches_helm_package_file_list_and_is_deterministic(tmp_path: Path) -> None:
    chart = write_chart(
        tmp_path,
        files={
            ".helmignore": "# c\n*.bak\n/secret.txt\ndocs/\n",
            "x.bak": "a",
            "secret.txt": "s",
            "sub/secret.txt": "k",
            "docs/a.md": "d",
            "templates/.hidden": "h",
        },
    )
    ours = package_chart(chart, tmp_path / "a")
    again = package_chart(chart, tmp_path / "b")
    assert ours.path.read_bytes() == again.path.read_bytes() and ours.path.name == "shop-1.4.2.tgz"
    run = subprocess.run(
        [str(_helm()), "package", str(chart), "-d", str(tmp_path / "h")],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    with tarfile.open(tmp_path / "h" / "shop-1.4.2.tgz") as theirs, tarfile.open(ours.path) as mine:
        assert sorted(theirs.getnames()) == sorted(mine.getnames())
        assert {m.mode for m in mine.getmembers()} == {0o644} and {m.mtime for m in mine.getmembers()} == {0}
    assert "shop/sub/secret.txt" in tarfile.open(ours.path).getnames()


def test_helmignore_negation_is_helms() -> None:
    rules = HelmIgnore("!templates/\n")
    assert rules.ignored("values.yaml", False)  # Helm: a non-matching negated rule ignores the path
    assert not rules.ignored("templates", True)
    with pytest.raises(BundleError, match="double-star"):
        HelmIgnore("a/**/b\n")


def test_package_refuses_links_and_oversized_files(tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    os.symlink("/etc/passwd", chart / "templates" / "p.yaml")
    with pytest.raises(BundleError, match="symlink"):
        package_chart(chart, tmp_path / "out")
    chart = write_chart(tmp_path / "big")
    (chart / "values.yaml").write_bytes(b"a: " + b"x" * (50 * 1024 * 1024) + b"\n")
    with pytest.raises(BundleError, match="over the 5242880-byte limit"):
        package_chart(chart, tmp_path / "out")


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([_file("shop/Chart.yaml"), _link("shop/templates/x.yaml", tarfile.SYMTYPE, "/etc/passwd")], "link"),
        ([_file("shop/Chart.yaml"), _link("shop/templates/x.yaml", tarfile.LNKTYPE, "shop/Chart.yaml")], "link"),
        ([_file("shop/Chart.yaml"), _file("shop/../../escape.yaml")], "escapes"),
        ([_file("/shop/Chart.yaml")], "escapes"),
    ],
)
def test_hostile_archives_are_unsafe(tmp_path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], needle: str) -> None:
    with pytest.raises(ApplicationError, match=needle) as err:
        check_chart(_tgz(tmp_path, entries))
    assert err.value.type == "UnsafeArchive"


def test_top_level_chart_yaml_and_oversized_values_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="outside the chart's directory"):
        check_chart(_tgz(tmp_path, [_file("Chart.yaml")]))
    big = tarfile.TarInfo("shop/values.yaml"), b"a: " + b"x" * (50 * 1024 * 1024)
    with pytest.raises(ApplicationError, match="over the 5242880 limit"):
        check_chart(_tgz(tmp_path, [_file("shop/Chart.yaml"), big]))


def test_values_not_a_mapping_and_remote_dependency_refused(tmp_path: Path) -> None:
    chart = write_chart(tmp_path, values="- a\n- b\n")
    with pytest.raises(BundleError, match="not a mapping"):
        check_chart(chart)
    chart = write_chart(
        tmp_path / "d",
        chart={"dependencies": [{"name": "redis", "version": "18.0.0", "repository": "https://charts.example.com"}]},
    )
    with pytest.raises(BundleError, match="helm dependency build"):
        package_chart(chart, tmp_path / "out")
