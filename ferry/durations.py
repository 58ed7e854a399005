"""Durations as people type them: 90s, 15m, 1h30m, 24h, 2d."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    value = text.strip()
    if not value:
        raise ValueError("duration is empty (e.g. 30s, 15m, 1h)")
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"duration {text!r} is not like 30s, 15m, 1h30m or 2d")
    return timedelta(seconds=total)
