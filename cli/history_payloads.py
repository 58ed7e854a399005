"""Reading a history's payloads as hostile input: each decoded on its own; one that does not decode becomes an
`Undecodable` shown in its place, never an exception (`ferry audit`'s timeline)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.contrib.pydantic import pydantic_data_converter

from ferry.audit import MAX_SHOWN


@dataclass(frozen=True)
class Undecodable:
    """A payload the data converter could not read: shown in its place, never raised."""

    reason: str

    def __str__(self) -> str:
        return f"(undecodable payload: {self.reason[:MAX_SHOWN]})"


def from_payload(payload: Any) -> Any:
    try:
        return pydantic_data_converter.payload_converter.from_payload(payload)
    except Exception as err:  # any converter failure (bad JSON, unknown encoding, a codec's error) is data
        return Undecodable(f"{type(err).__name__}: {err}")


def decode(payloads: Any) -> Any:
    items = list(payloads.payloads) if payloads is not None else []
    return from_payload(items[0]) if items else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def memo_of(event: HistoryEvent, key: str) -> Any:
    fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
    return from_payload(fields[key]) if key in fields else None


def event_time(event: HistoryEvent) -> dt.datetime:
    return event.event_time.ToDatetime().replace(tzinfo=dt.UTC)


def event_stamp(event: HistoryEvent) -> str:
    return event_time(event).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def claimed(payload: Any) -> str:
    """Who the payload says sent it (a claim: `by`, or an approver's name)."""
    if isinstance(payload, Undecodable):
        return ""
    fields = as_dict(payload)
    return str(fields.get("by") or fields.get("approver") or "")[:MAX_SHOWN]
