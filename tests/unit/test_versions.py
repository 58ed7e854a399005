"""Semver rules (ferry/versions.py): release tags, ranges as Flux writes them, selection with holds and prereleases."""

from __future__ import annotations

import pytest

from ferry.versions import SemverRange, VersionError, parse_release_version, select, try_parse_tag


def test_a_v_prefixed_tag_does_not_evade_a_hold() -> None:
    rng = SemverRange(">=1.0.0")
    assert select(["1.0.0", "v1.2.0"], rng, held=frozenset({"1.2.0"})) == "1.0.0"
    assert select(["1.0.0", "1.2.0"], rng, held=frozenset({"v1.2.0"})) == "1.0.0"
    assert select(["1.0.0", "v1.2.0", "1.3.0"], rng, held=frozenset({"1.2.0"})) == "1.3.0"


TAGS = ["0.9.0", "1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "1.3.0", "2.0.0", "v2.1.0", "latest", "main-abc123"]


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        (">=1.0.0", "v2.1.0"),
        (">=1.0.0 <2.0.0", "1.3.0"),
        (">=1.0.0, <2.0.0", "1.3.0"),
        (">= 1.0.0 < 1.3.0", "1.2.5"),
        ("^1.2.0", "1.3.0"),
        ("~1.2", "1.2.5"),
        ("~1.2.0", "1.2.5"),  # Flux (Masterminds): >=1.2.0 <1.3.0, not <1.2.1
        ("~1.2.5", "1.2.5"),
        ("~1", "1.3.0"),
        ("1.2.x", "1.2.5"),
        ("1.x", "1.3.0"),
        ("*", "v2.1.0"),
        ("=1.2.0", "1.2.0"),
        ("!=2.1.0 >=2.0.0", "2.0.0"),
        ("<1.0.0 || >=2.0.0 <2.1.0", "2.0.0"),
        ("^0.9.0", "0.9.0"),
        (">=3.0.0", None),
    ],
)
def test_select_picks_the_highest_release_in_the_range(constraint: str, expected: str | None) -> None:
    assert select(TAGS, SemverRange(constraint)) == expected


def test_prereleases_only_when_asked() -> None:
    rng = SemverRange(">=1.3.0-0 <1.4.0")
    assert select(["1.3.0-rc.1"], rng) is None
    assert select(["1.3.0-rc.1"], rng, prereleases=True) == "1.3.0-rc.1"
    assert select(["1.3.0-rc.1", "1.3.0"], rng, prereleases=True) == "1.3.0"


def test_a_held_version_is_skipped_for_the_next_highest() -> None:
    assert select(TAGS, SemverRange("^1.0.0"), held=frozenset({"1.3.0"})) == "1.2.5"


@pytest.mark.parametrize("text", ["", "   ", ">=one", "^1.a"])
def test_a_bad_range_is_refused(text: str) -> None:
    with pytest.raises(VersionError):
        SemverRange(text)


@pytest.mark.parametrize(
    ("tag", "why"), [("latest", "immutable"), ("1.2.3+build.5", "build metadata"), ("1.2", "not semver"), ("", "empty")]
)
def test_release_versions_refuse_with_a_reason(tag: str, why: str) -> None:
    with pytest.raises(VersionError, match=why):
        parse_release_version(tag)
    assert try_parse_tag(tag) is None


def test_a_v_prefix_is_allowed_on_a_release_tag() -> None:
    assert str(parse_release_version("v1.2.3")) == "1.2.3"
