"""Webhooks in: what `ferry receiver` accepts, verified and bounded before anything is signalled. Pure: the caller
passes the clock and the guard's memory.

- The CNCF distribution registry's notifications (`application/vnd.docker.distribution.events.v1+json`): an envelope
  `{"events": [{"id", "timestamp", "action": "push", "target": {"mediaType", "digest", "repository", "tag", ...},
  "request": {"host", ...}, ...}]}`, authenticated by a shared secret the registry sends as a header
  (`notifications.endpoints[].headers`).
- A generic webhook: `{"repository": "host/path", "tag": "1.2.0", "id": "...", "timestamp": "RFC 3339"}` signed with
  HMAC-SHA256 over the raw body (`X-Signature: sha256=<hex>`, as Flux's generic-hmac receiver).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

REGISTRY_EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
MAX_BODY = 256 * 1024  # a registry batches events; 100 events of ~1 KiB fit with room to spare
MAX_EVENTS = 100
MAX_REPOSITORIES = 20  # distinct repositories one request may name (each is one visibility query)
MAX_AGE = timedelta(minutes=10)  # older events are replays (the registry retries within seconds)
MAX_SKEW = timedelta(minutes=2)  # events from the future: a clock that is off, or a forged timestamp
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$")
_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Refused(Exception):
    """A request refused: the HTTP status, and a reason for the sender (never echoing its input)."""

    def __init__(self, status: int, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.outcome = status, reason, outcome


@dataclass(frozen=True)
class Push:
    repository: str  # host/path, as environments name it (FerryRepository)
    tag: str
    digest: str
    id: str


def _time(value: Any, now: datetime) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise Refused(400, "timestamp: missing or not a string", "malformed")
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))  # nanoseconds → microseconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(400, "timestamp: not RFC 3339", "malformed") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment < now - MAX_AGE:
        raise Refused(409, f"event older than {int(MAX_AGE.total_seconds() // 60)} minutes: a replay", "replayed")
    if moment > now + MAX_SKEW:
        raise Refused(400, "event timestamp is in the future", "malformed")
    return moment


def _json(body: bytes) -> Any:
    if len(body) > MAX_BODY:
        raise Refused(413, f"body larger than {MAX_BODY} bytes", "oversized")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "body is not JSON", "malformed") from None


def repository(host: Any, path: Any) -> str:
    if not isinstance(host, str) or not _HOST.match(host):
        raise Refused(400, "request.host: not a registry host", "malformed")
    if not isinstance(path, str) or len(path) > 255 or not _PATH.match(path):
        raise Refused(400, "target.repository: not a repository name", "malformed")
    return f"{host}/{path}"


def registry_pushes(body: bytes, now: datetime) -> list[Push]:
    """The manifest pushes in a registry notification envelope (blob pushes, pulls and deletes are skipped)."""
    data = _json(body)
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise Refused(400, 'not a registry notification envelope ({"events": [...]})', "malformed")
    if len(events) > MAX_EVENTS:
        raise Refused(413, f"more than {MAX_EVENTS} events", "oversized")
    pushes: list[Push] = []
    skipped: list[Refused] = []
    for event in events:
        try:
            push = _registry_push(event, now)
        except Refused as refused:  # one bad event never hides the good ones of its batch
            skipped.append(refused)
            continue
        if push is not None:
            pushes.append(push)
    if skipped and not pushes:
        raise skipped[0]
    return pushes


def _registry_push(event: Any, now: datetime) -> Push | None:
    if not isinstance(event, dict):
        raise Refused(400, "events[]: not an object", "malformed")
    target, request = event.get("target"), event.get("request")
    if event.get("action") != "push" or not isinstance(target, dict):
        return None
    if target.get("mediaType") not in MANIFEST_TYPES:
        return None  # layers and configs are pushed before the manifest; the manifest push is the release
    event_id = event.get("id")
    if not isinstance(event_id, str) or not _ID.match(event_id):
        raise Refused(400, "events[].id: missing or malformed", "malformed")
    _time(event.get("timestamp"), now)
    tag = target.get("tag") or ""
    if not isinstance(tag, str) or (tag and not _TAG.match(tag)):
        raise Refused(400, "target.tag: not a tag", "malformed")
    digest = target.get("digest") or ""
    if not isinstance(digest, str) or not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise Refused(400, "target.digest: not a sha256 digest", "malformed")
    host = request.get("host") if isinstance(request, dict) else None
    return Push(repository(host, target.get("repository")), tag, digest, event_id)


def generic_push(body: bytes, now: datetime) -> Push:
    data = _json(body)
    if not isinstance(data, dict):
        raise Refused(400, "body is not a JSON object", "malformed")
    full = data.get("repository")
    if not isinstance(full, str) or "/" not in full:
        raise Refused(400, "repository: host/path expected", "malformed")
    host, _, path = full.partition("/")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not _ID.match(event_id):
        raise Refused(400, "id: a unique id per request is required (replays are refused by it)", "malformed")
    _time(data.get("timestamp"), now)
    tag = data.get("tag") or ""
    if not isinstance(tag, str) or (tag and not _TAG.match(tag)):
        raise Refused(400, "tag: not a tag", "malformed")
    return Push(repository(host, path), tag, "", event_id)


class ReplayGuard:
    """Ids seen in the last MAX_AGE (older events are refused by their timestamp), at most `size` of them."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def forget(self, ids: list[str]) -> None:
        """Ids whose request failed on our side (Temporal unavailable): the sender's retry is not a replay."""
        for event_id in ids:
            self._seen.pop(event_id, None)

    def fresh(self, ids: list[str]) -> list[str]:
        """The ids not seen before (and now remembered)."""
        new = []
        for event_id in ids:
            if event_id in self._seen:
                continue
            new.append(event_id)
            self._seen[event_id] = None
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return new


def environments_query(repositories: list[str]) -> str:
    """Visibility: the running environments deploying from these repositories (each validated by `repository()`,
    so no quote can reach the query)."""
    names = ", ".join(f"'{r}'" for r in sorted(set(repositories)))
    return f"WorkflowType = 'EnvironmentWorkflow' AND ExecutionStatus = 'Running' AND FerryRepository IN ({names})"
