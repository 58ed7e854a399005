"""Durations as people type them (ferry/durations.py): units, compounds, and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ferry.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1.5h", timedelta(minutes=90)),
        ("  30s ", timedelta(seconds=30)),
        ("0s", timedelta(0)),
    ],
)
def test_parses_units_and_compounds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_ms_is_milliseconds_not_minutes_then_seconds() -> None:
    assert parse_duration("5ms") == timedelta(milliseconds=5)
    assert parse_duration("5m5s") == timedelta(minutes=5, seconds=5)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30", "s", "1w", "10 m", "1h 30m", "-5s", "1h30", "abc", "30s!", "PT30S", "1.s"])
def test_anything_else_is_refused_whole(text: str) -> None:
    with pytest.raises(ValueError, match="is not like 30s"):
        parse_duration(text)
