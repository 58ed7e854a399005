"""Durations as people type them: 90s, 15m, 1h30m, 24h, 2d."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_TEXT = 32  # durations live in specs, in every environment's state: bounded like every string
MAX_DURATION = timedelta(days=3650)  # longer is a typo (and past ~270 years timedelta itself overflows)


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
    if total > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION.days}d")
    return timedelta(seconds=total)


class Duration(str):
    """A duration as people type it ('90s', '1h30m'), parsed once when the model is validated: `.delta`.

    NB: it stays the text that was typed (a `str`): specs are stored in histories and hashed for approvals
    (spec_digest), so '90s' must never come back as '1m30s' or 'PT1M30S'. Serialized as that text."""

    delta: timedelta

    def __new__(cls, text: str) -> Duration:
        if isinstance(text, Duration):
            return text
        self = super().__new__(cls, text)
        self.delta = parse_duration(text)
        return self

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(max_length=MAX_DURATION_TEXT), serialization=core_schema.to_string_ser_schema()
        )
