"""Semver selection: holds compare by semver identity, not by tag spelling."""

from __future__ import annotations

from ferry.versions import SemverRange, select


def test_a_v_prefixed_tag_does_not_evade_a_hold() -> None:
    rng = SemverRange(">=1.0.0")
    assert select(["1.0.0", "v1.2.0"], rng, held=frozenset({"1.2.0"})) == "1.0.0"
    assert select(["1.0.0", "1.2.0"], rng, held=frozenset({"v1.2.0"})) == "1.0.0"
    assert select(["1.0.0", "v1.2.0", "1.3.0"], rng, held=frozenset({"1.2.0"})) == "1.3.0"
