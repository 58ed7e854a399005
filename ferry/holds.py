"""Holds: versions a semver range must not move back onto (a release that failed its health, the version a rollback
left), who may add or lift one, and when a rollback pin on a range lets the range resume.

Pure: bounds are the caller's (workflows/policies.py), and so is every patch decision.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.environment import Pin, PinRequest
from ferry.reconcile import VersionRef
from ferry.spec import EnvironmentSpec
from ferry.versions import try_parse_version

ROLLBACK_KINDS = ("rollback", "auto-rollback")


def with_hold(holds: list[str], version: str, *, limit: int) -> list[str]:
    """`holds` with `version` held (the newest `limit` kept); `holds` itself when it is held already."""
    return holds if version in holds else [*holds, version][-limit:]


def without_hold(holds: list[str], version: str) -> list[str]:
    return [h for h in holds if h != version]


def takes_hold(
    holds: list[str], request: PinRequest, applied: VersionRef | None, *, of_applied: Callable[[], bool]
) -> bool:
    """Whether a pin's hold is taken: only the version it rolls back from, the applied one, so no sender can fill
    the holds. `of_applied()`: that rule is in force (asked only when it decides: a patch, HOLD_OF_APPLIED)."""
    return bool(
        request.hold
        and request.hold not in holds
        and (not of_applied() or (applied is not None and applied.version == request.hold))
    )


def lifts_hold(request: PinRequest, holds: list[str]) -> bool:
    """A promotion of a held version lifts its hold (when it is applied, if the pin waits for its confirmation)."""
    return request.kind == "promotion" and request.version in holds


def pin_on_range(spec: EnvironmentSpec, pin: Pin) -> bool:
    """A rollback pin on a semver range: the range still resolves, and resumes past the holds (newer_than_holds)."""
    return bool(spec.semver and pin.kind in ROLLBACK_KINDS)


def tracks(spec: EnvironmentSpec, pin: Pin | None) -> bool:
    """Whether an iteration resolves what the spec tracks: no pin, or a rollback pin on a range."""
    return pin is None or pin_on_range(spec, pin)


def newer_than_holds(version: str, holds: list[str]) -> bool:
    """A release newer than every held version that is a release: a range resumes at it."""
    candidate = try_parse_version(version)
    held = [v for v in (try_parse_version(h) for h in holds) if v is not None]
    return candidate is not None and all(candidate.compare(h) > 0 for h in held)
