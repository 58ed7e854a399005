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
        raise VersionError(
            f"version {tag!r} has build metadata ('+'), which OCI tags cannot carry; "
            "drop the '+…' part or use a prerelease (-rc.1)"
        )
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


def try_parse_version(version: str) -> semver.Version | None:
    """A tracked version as semver: a release tag (try_parse_tag), or an OCI Helm chart's version with build
    metadata (``1.0.0+b1``, read back from its tag ``1.0.0_b1``; strict semver). None otherwise. OCI tags cannot
    carry ``+``, so no registry tag parses differently here than in try_parse_tag."""
    parsed = try_parse_tag(version)
    if parsed is not None or "+" not in version:
        return parsed
    try:
        return semver.Version.parse(version)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------- ranges
# Constraint syntax as Flux's OCIRepository `semver` (Masterminds): terms joined by spaces or commas are
# ANDed, `||` separates alternatives; operators = != > >= < <= ~ ^; x/X/* wildcards.


def _partial(text: str) -> tuple[list[int], int]:
    """'1.2' -> ([1, 2, 0], 2): the version and how many parts were given (wildcards stop counting)."""
    parts = text.split("-", 1)[0].split(".")
    numbers: list[int] = []
    for part in parts[:3]:
        if part in ("x", "X", "*", ""):
            break
        if not part.isdigit():
            raise VersionError(f"{text!r} is not a version in a semver range")
        numbers.append(int(part))
    given = len(numbers)
    return numbers + [0] * (3 - given), given


def _term(term: str) -> list[tuple[str, semver.Version]]:
    """One constraint -> a list of (op, version) bounds, all of which must hold."""
    for op in (">=", "<=", "!=", "==", ">", "<", "=", "~", "^"):
        if term.startswith(op):
            rest = term[len(op) :].strip().lstrip("v")
            break
    else:
        op, rest = "=", term.lstrip("v")
    nums, given = _partial(rest)
    pre = rest.split("-", 1)[1] if "-" in rest else None
    base = semver.Version(major=nums[0], minor=nums[1], patch=nums[2], prerelease=pre)
    if op in ("=", "==") and given < 3:
        return [(">=", base), ("<", _bump(nums, given))] if given else []
    if op == "~":
        return [(">=", base), ("<", _bump(nums, 2 if given >= 2 else 1))]  # ~1.2.3: <1.3.0 (Masterminds)
    if op == "^":
        first_nonzero = next((i for i, n in enumerate(nums[:given]) if n), given - 1 if given else 0)
        return [(">=", base), ("<", _bump(nums, first_nonzero + 1))]
    if op == "==":
        op = "="
    return [(op, base)]


def _bump(nums: list[int], position: int) -> semver.Version:
    """Next version at `position` parts: (1,2,3) at 1 -> 2.0.0-0; at 2 -> 1.3.0-0."""
    position = max(1, min(position, 3))
    bumped = nums[:position]
    bumped[-1] += 1
    bumped += [0] * (3 - position)
    return semver.Version(major=bumped[0], minor=bumped[1], patch=bumped[2], prerelease="0")


class SemverRange:
    """A parsed range; ``matches`` honours the prerelease policy."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        if not self.text:
            raise VersionError("semver range is empty (e.g. '>=1.0.0 <2.0.0')")
        self._alternatives: list[list[tuple[str, semver.Version]]] = []
        for alternative in self.text.split("||"):
            bounds: list[tuple[str, semver.Version]] = []
            tokens = alternative.replace(",", " ").split()
            # join an operator written apart from its version: ">= 1.2.0"
            merged: list[str] = []
            for token in tokens:
                if merged and merged[-1] in (">=", "<=", "!=", "==", ">", "<", "=", "~", "^"):
                    merged[-1] += token
                else:
                    merged.append(token)
            for term in merged:
                try:
                    bounds.extend(_term(term))
                except ValueError as err:
                    raise VersionError(f"semver range {text!r}: {err}") from None
            self._alternatives.append(bounds)

    def matches(self, version: semver.Version, prereleases: bool = False) -> bool:
        if version.prerelease and not prereleases:
            return False
        return any(all(_holds(version, op, bound) for op, bound in alt) for alt in self._alternatives)

    def __str__(self) -> str:
        return self.text


def _holds(version: semver.Version, op: str, bound: semver.Version) -> bool:
    c = version.compare(bound)
    return {"=": c == 0, "!=": c != 0, ">": c > 0, ">=": c >= 0, "<": c < 0, "<=": c <= 0}[op]


def select(
    tags: list[str], rng: SemverRange, prereleases: bool = False, held: frozenset[str] = frozenset()
) -> str | None:
    """The highest tag (or chart version, try_parse_version) in the range that is not held; unparsable tags are
    ignored. Holds compare by semver identity, so `v1.2.0` cannot slip past a hold on `1.2.0`."""
    held_versions = {v for v in (try_parse_version(h) for h in held) if v is not None}
    best: tuple[semver.Version, str] | None = None
    for tag in tags:
        version = try_parse_version(tag)
        if version is None or tag in held or version in held_versions or not rng.matches(version, prereleases):
            continue
        if best is None or version.compare(best[0]) > 0:
            best = (version, tag)
    return best[1] if best else None
