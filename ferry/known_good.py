"""Known-good history and the rollbacks it allows: a release applied and healthy is known-good; a rollback goes
only to an earlier released version, never forward, and without an approval only to a known-good one; a release
that fails its health rolls back to the last known-good when the spec says so.

Pure: bounds and the clock are the caller's.
"""

from __future__ import annotations

import semver

from ferry.environment import EnvironmentState, Pin
from ferry.reconcile import HealthState, VersionRef
from ferry.spec import EnvironmentSpec
from ferry.versions import try_parse_version

AUTO_ROLLBACK_BY = "ferry (auto-rollback)"


def with_known_good(history: list[VersionRef], healthy: VersionRef, *, limit: int) -> list[VersionRef]:
    """`history` with `healthy` as its newest entry (once: an earlier entry of its digest moves), bounded."""
    return [*(r for r in history if r.digest != healthy.digest), healthy][-limit:]


def is_known_good(history: list[VersionRef], digest: str) -> bool:
    return any(r.digest == digest for r in history)


def earlier_known_good(history: list[VersionRef], current: VersionRef | None) -> VersionRef | None:
    """What a rollback without a target goes to: the newest known-good version other than the applied one."""
    earlier = [r for r in history if current is None or r.digest != current.digest]
    return earlier[-1] if earlier else None


def newer_than_applied(version: str, applied: VersionRef | None) -> semver.Version | None:
    """The applied version (parsed) when `version` is newer than it: a rollback never goes forward. None otherwise,
    and when either is not a release version."""
    target, now = try_parse_version(version), try_parse_version(applied.version) if applied else None
    return now if target is not None and now is not None and target.compare(now) > 0 else None


def rollback_pin_refusal(state: EnvironmentState, version: str, digest: str) -> str:
    """Why an approval-required environment refuses a rollback pin that carries no approval, or ''."""
    if not is_known_good(state.good_history, digest):
        return (
            f"{version} ({digest}) was never applied and healthy in {state.spec.name}; "
            "without an approval a rollback may only go to a known-good version"
        )
    now = newer_than_applied(version, state.last_applied)
    if now is not None:
        return f"{version} is newer than the applied {now}: a rollback never goes forward"
    return ""


def requester_refusal(spec: EnvironmentSpec, environment: str, requested_by: str) -> str:
    """Only an environment's approvers may roll it back (when it lists any), or ''."""
    if spec.approval.approvers and requested_by not in spec.approval.names:
        return f"{requested_by} is not an approver of {environment} ({', '.join(spec.approval.names)})"
    return ""


def auto_rollback_pin(
    spec: EnvironmentSpec, good: VersionRef | None, failed: VersionRef, health: HealthState, at: str
) -> Pin | None:
    """The pin a failed release rolls back with: to the last known-good, when the spec rolls back automatically and
    that is another digest. None: the failure is recorded, nothing moves."""
    if not spec.auto_rollback or good is None or good.digest == failed.digest:
        return None
    return Pin(
        version=good.version,
        digest=good.digest,
        by=AUTO_ROLLBACK_BY,
        kind="auto-rollback",
        reason=f"{failed.version} failed health: {health.reason}",
        at=at,
    )
