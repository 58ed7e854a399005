"""`ferry release` keeps what it packaged per release, not in a module-level global."""

from __future__ import annotations

import cli.release
from ferry.release import PackageBundleResult
from ferry.settings import Settings
from workers.worker import release_activities


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
