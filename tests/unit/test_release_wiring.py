"""What workers.wiring gives each process: `ferry release` keeps what it packaged per release (no module-level
global), `ferry verify` its two activities, `ferry worker` its start-up check of the clusters file."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli.release
from cli.main import main
from ferry.release import PackageBundleResult
from ferry.settings import Settings
from workers.settings import SettingsInvalid
from workers.wiring import check_clusters, layer_digest, package_release, release_activities, verify_activities


def _packaged(digest: str) -> PackageBundleResult:
    return PackageBundleResult.model_construct(layer_digest=digest)


def test_no_module_level_packaged_state() -> None:
    assert not hasattr(cli.release, "PACKAGED")


def test_each_release_worker_owns_its_packaged_bundle() -> None:
    settings = Settings()
    first = release_activities(settings, "/a", _packaged("sha256:" + "1" * 64))
    second = release_activities(settings, "/b", _packaged("sha256:" + "2" * 64))
    owner_first, owner_second = first[0].__self__, second[0].__self__  # type: ignore[attr-defined]
    assert owner_first is not owner_second
    assert first[0].__name__ == "package_bundle"
    assert [a.__name__ for a in first] == ["package_bundle", "resolve_tag", "fetch_manifest", "push_artifact"]


def test_the_cli_gets_its_activities_from_the_wiring_module() -> None:
    signatures, registry = verify_activities(Settings())
    assert signatures._registries is registry._registries  # type: ignore[attr-defined]  # one connection pool


def test_release_packages_once_and_the_digest_is_the_tarballs(tmp_path: Path) -> None:
    app = Path(__file__).resolve().parents[2] / "examples" / "app"
    objects, packaged = package_release(app)
    assert objects > 0 and packaged.files > 0 and Path(packaged.path).is_file()
    assert packaged.layer_digest == layer_digest(app, tmp_path) == cli.release.local_layer_digest(app)


def test_a_bad_clusters_file_stops_the_worker_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text("clusters:\n  a: {kubeconfig: x, colour: blue}\n")
    with pytest.raises(SettingsInvalid, match="colour"):
        check_clusters(Settings(clusters=clusters))
    monkeypatch.setenv("FERRY_CLUSTERS", str(clusters))
    assert main(["worker", "--state-dir", str(tmp_path)]) == 1  # before any connection is tried
    err = capsys.readouterr().err
    assert err.startswith("ferry: ") and str(clusters) in err and "colour" in err and "Traceback" not in err
