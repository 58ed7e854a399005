"""Timestamps as Ferry records them: RFC 3339 UTC to the second, '2026-01-31T12:00:00Z', one format everywhere.

NB: strings, not datetimes, in the models: states, events and statuses already in histories carry this text, and
pydantic would serialize a datetime differently ('+00:00', microseconds)."""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


def timestamp(moment: datetime) -> str:
    """`moment` (UTC: the workflow clock, or datetime.now(UTC)) as recorded."""
    return moment.strftime(TIMESTAMP)


def parse_timestamp(text: str) -> datetime:
    """A recorded timestamp back as an aware UTC datetime."""
    return datetime.strptime(text, TIMESTAMP).replace(tzinfo=UTC)
