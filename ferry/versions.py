"""Semver rules for release tags and for what environments track."""

from __future__ import annotations

import semver


class VersionError(ValueError):
    pass


def parse_release_version(tag: str) -> semver.Version:
    """A release tag: semver, optionally with a leading ``v`` (kept as the tag). Refuses ``latest``, build
    metadata (``+`` is not allowed in OCI tags) and anything unparsable, saying why."""
    if not tag:
        raise VersionError("version is empty; give a semver version such as 1.2.3")
    if tag.lower() == "latest":
        raise VersionError("version 'latest' is refused: releases are immutable semver tags (e.g. 1.2.3)")
    if "+" in tag:
        raise VersionError(f"version {tag!r} has build metadata ('+'), which OCI tags cannot carry; "
                           "drop the '+…' part or use a prerelease (-rc.1)")
    core = tag[1:] if tag.startswith("v") else tag
    try:
        return semver.Version.parse(core)
    except ValueError as err:
        raise VersionError(f"version {tag!r} is not semver (MAJOR.MINOR.PATCH[-PRERELEASE]): {err}") from None


def try_parse_tag(tag: str) -> semver.Version | None:
    """A registry tag as semver, or None for tags that are not releases (ignored when tracking a range)."""
    try:
        return parse_release_version(tag)
    except VersionError:
        return None
