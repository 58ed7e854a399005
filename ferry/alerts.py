"""Alerts: which events go to whom (specs people write), the notification a workflow sends, and how each provider
renders it. Pure: no I/O, no clock. Provider addresses and secrets are NOT here: they live in the worker's providers
file (``FERRY_ALERT_PROVIDERS``, :class:`ProvidersFile`); specs name providers only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import shlex
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator

from ferry.durations import parse_duration
from ferry.model import PEOPLE
from ferry.model import Model as _Model
from ferry.names import (
    ENV_PREFIX,
    ENVIRONMENT_WORKFLOW,
    PROMOTE_PREFIX,
    PROMOTION_WORKFLOW,
    RELEASE_PREFIX,
    RELEASE_WORKFLOW,
    ROLLBACK_PREFIX,
    ROLLBACK_WORKFLOW,
)

__all__ = ["PEOPLE"]

Severity = Literal["info", "warning", "error"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}

# Every event type a workflow notifies, with its severity. Types not listed are `info`.
EVENT_SEVERITY: dict[str, Severity] = {
    # releases
    "ReleasePublished": "info",
    # environments (the Event types EnvironmentWorkflow records)
    "Applied": "info", "Healthy": "info", "Recovered": "info", "Pinned": "info", "PinReleased": "info",
    "SpecUpdated": "info", "Resumed": "info", "SpecChangeRejected": "info", "RecordRecovered": "info",
    "DriftCorrected": "warning", "Suspended": "warning", "SpecChangePending": "warning", "PinRefused": "warning",
    "SpecDecisionRefused": "warning",
    "HealthFailed": "error", "AutoRollback": "error", "ReconcileFailed": "error", "TagMoved": "error",
    "VerificationFailed": "error",
    # promotions
    "AwaitingApproval": "warning", "Approved": "info", "Rejected": "warning", "Refused": "warning",
    "PromotionSucceeded": "info", "PromotionSuperseded": "info", "PromotionRejected": "warning",
    "PromotionExpired": "warning", "PromotionRefused": "warning", "PromotionFailed": "error",
    # rollbacks
    "RollbackSucceeded": "info", "RollbackSuperseded": "info", "RollbackRefused": "warning", "RollbackFailed": "error",
}
# What an environment becoming healthy again resolves (Alertmanager: endsAt; chat providers: a "resolved" line).
RESOLVED_BY_RECOVERY = ("HealthFailed", "AutoRollback", "ReconcileFailed", "VerificationFailed", "TagMoved")
# Problems that stay firing in Alertmanager until resolved (or this long at most: a lost resolution cannot page
# forever). Other events are informational: Alertmanager's resolve_timeout ends them.
FIRING_FOR = timedelta(hours=24)

MAX_ALERTS = 100
MAX_PATTERNS = 64
MAX_MESSAGE = 1000
MAX_DETAILS = 16
MAX_DETAIL = 512
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_EVENT = r"^(\*|[A-Z][A-Za-z]{1,63})$"


def severity_of(event_type: str) -> Severity:
    return EVENT_SEVERITY.get(event_type, "info")


# ------------------------------------------------------------------------------------------- specs

class AlertSpec(_Model):
    """One alert: which environments' events, of which types and minimum severity, go to which provider."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    provider: str = Field(min_length=1, max_length=63, pattern=_NAME, description="a provider in the worker's "
                          "providers file (FERRY_ALERT_PROVIDERS); its URL and secrets never leave the worker")
    environments: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[-a-z0-9*?\[\]!]+$")]] = Field(
        default_factory=lambda: ["*"], max_length=MAX_PATTERNS, description="names or globs (staging, prod-*, *)")
    events: list[Annotated[str, Field(pattern=_EVENT)]] = Field(
        default_factory=lambda: ["*"], max_length=MAX_PATTERNS, description="event types, or * for all")
    severity: Severity = Field("info", description="minimum severity")
    summary: str = Field("", max_length=256, description="a line prefixed to every message of this alert")
    deadline: str = Field("1h", max_length=32, description="how long delivery is retried before it is recorded "
                          "as undelivered")
    suspend: bool = False

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e != "*" and e not in EVENT_SEVERITY]
        if unknown:
            raise ValueError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_SEVERITY))}")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str) -> str:
        try:
            seconds = parse_duration(value).total_seconds()
        except ValueError as err:
            raise ValueError(f"deadline: {err}") from None
        if not 1 <= seconds <= 7 * 86400:
            raise ValueError("deadline must be between 1s and 7d")
        return value

    @property
    def deadline_seconds(self) -> float:
        return parse_duration(self.deadline).total_seconds()

    def matches(self, note: Notification) -> bool:
        """Environment glob, then the event type (or a recovery resolving a type this alert sends), then severity.
        A recovery is not filtered by severity: it resolves what this alert fired."""
        if self.suspend:
            return False
        if note.environment and not any(fnmatch.fnmatchcase(note.environment, p) for p in self.environments):
            return False
        if not note.environment and "*" not in self.environments:
            return False  # releases belong to no environment: only catch-all alerts get them
        if note.resolves and any(self._sends(t) for t in note.resolves):
            return True
        return self._sends(note.type) and SEVERITY_RANK[note.severity] >= SEVERITY_RANK[self.severity]

    def _sends(self, event_type: str) -> bool:
        return ("*" in self.events or event_type in self.events) and \
            SEVERITY_RANK[severity_of(event_type)] >= SEVERITY_RANK[self.severity]


class AlertsFile(_Model):
    """`alerts:` in environments.yaml or a file of its own (`ferry alerts apply -f FILE`)."""

    alerts: list[AlertSpec] = Field(default_factory=list, max_length=MAX_ALERTS)

    @model_validator(mode="after")
    def _unique(self) -> AlertsFile:
        names = [a.name for a in self.alerts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert names must be unique: {', '.join(dupes)}")
        return self


# ------------------------------------------------------------------------------------ notification

class Notification(_Model):
    """What a workflow tells the alert router about one event: bounded (it enters two histories), no secrets.
    `key` is the idempotency key: the same event always has the same key, every retry of its delivery carries it."""

    key: str = Field(min_length=8, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: str = Field(max_length=64)
    severity: Severity = "info"
    environment: str = Field("", max_length=64)
    message: str = Field("", max_length=MAX_MESSAGE)
    at: str = Field(max_length=32)
    source: str = Field("", max_length=300, description="the workflow that recorded the event (id)")
    run_id: str = Field("", max_length=64)
    version: str = Field("", max_length=128)
    digest: str = Field("", max_length=128)
    by: str = Field("", max_length=256)
    details: dict[str, str] = Field(default_factory=dict, description="publisher, approvers, deadline, "
                                    "repository, ... (at most 16, each at most 512 characters)")
    resolves: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=16,
                                                                description="event types this one resolves")

    @field_validator("at")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
            raise ValueError("at must be a UTC timestamp YYYY-MM-DDTHH:MM:SSZ")
        return value

    @model_validator(mode="after")
    def _severity_from_type(self) -> Notification:
        # NB: a sender's claim of severity is not trusted: it follows from the event type (alerts filter on it)
        self.severity = severity_of(self.type)
        return self

    @field_validator("details", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())[:MAX_DETAILS]
            return {str(k)[:64]: str(v)[:MAX_DETAIL] for k, v in items}
        return value


def notification_key(workflow_id: str, run_id: str, position: int, event_type: str, message: str) -> str:
    """The idempotency key of one event: the recording run and where in its history the event was recorded (the
    history length is the same when the workflow replays), plus the event itself. 40 hex characters."""
    identity = f"{workflow_id}\n{run_id}\n{position}\n{event_type}\n{message}"
    return "ferry-" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def make_notification(*, workflow_id: str, run_id: str, position: int, type_: str, environment: str, message: str,
                      at: str, version: str = "", digest: str = "", by: str = "",
                      details: dict[str, str] | None = None, resolves: list[str] | None = None) -> Notification:
    message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."
    return Notification(key=notification_key(workflow_id, run_id, position, type_, message), type=type_,
                        severity=severity_of(type_), environment=environment, message=message, at=at,
                        source=workflow_id[:300], run_id=run_id, version=version[:128], digest=digest[:128],
                        by=by[:256], details=details or {}, resolves=resolves or [])


# --------------------------------------------------------------------------------------- providers

ProviderType = Literal["generic", "generic-hmac", "slack", "msteams", "discord", "alertmanager", "cloudevents"]


class ProviderSpec(_Model):
    """A provider as the worker knows it (its providers file): where to send and with which secret."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    type: ProviderType
    url: SecretStr = Field(description="webhook URL (Slack/Teams/Discord URLs are secrets themselves); for "
                           "alertmanager its base URL")
    secret: SecretStr | None = Field(None, description="generic-hmac: the HMAC-SHA256 key")
    token: SecretStr | None = Field(None, description="sent as `Authorization: Bearer TOKEN`")
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    mode: Literal["binary", "structured"] = Field("binary", description="cloudevents: content mode")
    timeout: float = Field(10.0, gt=0, le=60, description="seconds per HTTP request")

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
            raise ValueError("url must be an http(s) URL")
        if re.search(r"[\x00-\x20\x7f]", value.get_secret_value()):
            raise ValueError("url must not contain spaces or control characters")  # NB: never echo the value
        return value

    @field_validator("token", "secret")
    @classmethod
    def _clean_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """A token file's trailing newline is stripped; anything else a header cannot carry is refused (the HTTP
        library would quote it, token included, in its error)."""
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text or re.search(r"[\x00-\x1f\x7f]", text):
            raise ValueError("must be one line of printable characters")
        return SecretStr(text)

    @field_validator("headers")
    @classmethod
    def _clean_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if (not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name) or re.search(r"[\x00-\x1f\x7f]", text)
                    or len(text) > 1024):
                raise ValueError(f"header {name[:64]!r}: a token name and one line of at most 1024 printable "
                                 "characters")
        return value

    @model_validator(mode="after")
    def _hmac_key(self) -> ProviderSpec:
        if self.type == "generic-hmac" and not self.secret:
            raise ValueError(f"provider {self.name}: generic-hmac needs `secret` (the HMAC key)")
        return self


class ProvidersFile(_Model):
    providers: list[ProviderSpec] = Field(default_factory=list, max_length=MAX_ALERTS)

    def get(self, name: str) -> ProviderSpec | None:
        return next((p for p in self.providers if p.name == name), None)


# ------------------------------------------------------------------------------------------- links

class Links(_Model):
    """Worker-side settings that turn a notification into something an SRE can act on."""

    ui_url: str = "http://127.0.0.1:8233"
    address: str = "127.0.0.1:7233"
    namespace: str = "default"

    def workflow(self, workflow_id: str, run_id: str = "") -> str:
        from urllib.parse import quote

        base = f"{self.ui_url.rstrip('/')}/namespaces/{quote(self.namespace, safe='')}/workflows/" \
               f"{quote(workflow_id, safe='')}"
        return f"{base}/{run_id}/history" if run_id else base


def actions(note: Notification, links: Links) -> dict[str, str]:
    """For what waits for a person (a promotion's AwaitingApproval, a protected SpecChangePending): every way to act
    on it, ready to paste."""
    if note.type == "SpecChangePending" and note.environment:
        return {"approve": f"ferry env approve {shlex.quote(note.environment)} --key ~/.ssh/id_ed25519",
                "reject": f"ferry env reject {shlex.quote(note.environment)} --key ~/.ssh/id_ed25519"}
    if note.type != "AwaitingApproval":
        return {}
    # NB: every value a notification carries is quoted for the shell: a forged `notify` signal must not turn a
    # ready-to-paste command into another command
    q = shlex.quote
    env, version, wid = q(note.environment), q(note.version), q(note.source)
    publisher = note.details.get("publisher", "")
    names = [n.strip() for n in note.details.get("approvers", "").split(",") if n.strip()]
    approver = q(next((n for n in names if n != publisher), "NAME"))  # NB: the publisher may not approve
    target = f"--address {q(links.address)} --namespace {q(links.namespace)} --workflow-id {wid}"
    return {
        "approve": f"ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519",
        "update": f"temporal workflow update execute {target} --name approve_update "
                  f"--input \"$(ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --print)\"",
        "signal": f"temporal workflow signal {target} --name approve "
                  f"--input \"$(ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --print)\"",
        "reject": f"ferry reject {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --comment WHY",
    }


def title(note: Notification, summary: str = "") -> str:
    where = f" {note.environment}" if note.environment else ""
    version = f" {note.version}" if note.version else ""
    text = f"{note.type}{where}{version}"
    return f"{summary}: {text}" if summary else text


def facts(note: Notification) -> dict[str, str]:
    out = {"event": note.type, "severity": note.severity}
    for key, value in (("environment", note.environment), ("version", note.version), ("digest", note.digest),
                       ("by", note.by)):
        if value:
            out[key] = value
    out.update(note.details)
    return out


# ------------------------------------------------------------------------------------ rendering

class Rendered(_Model):
    """One HTTP request to send: path appended to the provider URL, headers (no secrets), JSON body bytes as text."""

    path: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: str


SIGNATURE_HEADER = "X-Signature"  # Flux's generic-hmac: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(body: bytes, key: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, key: bytes, header: str | None) -> bool:
    """A `sha256=<hex>` signature of `body`, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(body, key).encode(), header.strip().encode("utf-8", "surrogateescape"))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(kind: ProviderType, note: Notification, links: Links, alert: str, summary: str = "",
           mode: str = "binary") -> Rendered:
    """The request body (and non-secret headers) each provider documents."""
    link = links.workflow(note.source, note.run_id) if note.source else ""
    acts = actions(note, links)
    renderer = {"generic": _generic, "generic-hmac": _generic, "slack": _slack, "msteams": _teams,
                "discord": _discord, "alertmanager": _alertmanager, "cloudevents": _cloudevents}[kind]
    rendered = renderer(note, link, acts, alert, summary, mode)
    rendered.headers[IDEMPOTENCY_HEADER] = note.key
    return rendered


def _generic(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str,
             mode: str) -> Rendered:
    # NB: Flux's event shape (involvedObject, severity, timestamp, message, reason, metadata, reportingController),
    # so receivers written for Flux's generic provider read Ferry's too.
    metadata = {k: v for k, v in {**facts(note), "alert": alert, "summary": summary, "url": link,
                                  "idempotencyKey": note.key, **acts}.items() if v}
    body = {"involvedObject": {"kind": "Environment" if note.environment else "Release",
                               "name": note.environment or note.details.get("repository", "")},
            "severity": note.severity, "timestamp": note.at, "message": note.message, "reason": note.type,
            "metadata": metadata, "reportingController": "ferry", "reportingInstance": note.source}
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


_EMOJI = {"info": ":large_blue_circle:", "warning": ":warning:", "error": ":red_circle:"}
_COLOR = {"info": 0x2E86DE, "warning": 0xF5A623, "error": 0xD0021B}


def _slack_text(text: str) -> str:
    """Slack's mrkdwn control characters escaped (its documented &amp; &lt; &gt;): text people typed (a reason, a
    requester) never becomes a <!channel> ping or a <https://…|link>."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _teams_text(text: str) -> str:
    """Adaptive Card TextBlocks render markdown: brackets and parentheses escaped, so no [text](url) link."""
    return re.sub(r"([\\\[\]()*_`])", r"\\\1", text)


def _slack(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    # Slack's limits: header text 150, section text 3000, at most 10 fields of 2000, 50 blocks.
    head = title(note, summary)
    fields = [{"type": "mrkdwn", "text": _cut(f"*{_slack_text(k)}*\n{_slack_text(v)}", 2000)}
              for k, v in facts(note).items()][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(head, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            f"{_EMOJI[note.severity]} {_slack_text(note.message)}", 3000)}},
        {"type": "section", "fields": fields},
    ]
    if acts:
        text = "\n".join(f"*{k}*: `{_slack_text(v)}`" for k, v in acts.items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 3000)}})
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in Temporal UI> · "
                                                        f"alert {alert} · {note.key}"}]})
    body = {"text": _cut(_slack_text(f"{head}: {note.message}"), 3000), "blocks": blocks}
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _teams(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    # A Teams incoming webhook (Workflows) takes a message with an Adaptive Card attachment.
    card_body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": True,
         "text": _teams_text(title(note, summary)),
         "color": {"info": "Default", "warning": "Warning", "error": "Attention"}[note.severity]},
        {"type": "TextBlock", "wrap": True, "text": _teams_text(note.message)},
        {"type": "FactSet", "facts": [{"title": k, "value": _teams_text(v)} for k, v in facts(note).items()]},
    ]
    for name, command in acts.items():
        card_body.append({"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": f"{name}: {command}"})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": card_body}
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Temporal UI", "url": link}]
    body = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "contentUrl": None, "content": card}]}
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _discord(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str,
             mode: str) -> Rendered:
    # Discord's limits: content 2000, embed title 256, description 4096, 25 fields (name 256, value 1024).
    fields = [{"name": _cut(k, 256), "value": _cut(v, 1024), "inline": len(v) < 40} for k, v in facts(note).items()]
    fields += [{"name": k, "value": _cut(f"`{v}`", 1024), "inline": False} for k, v in acts.items()]
    embed: dict[str, Any] = {"title": _cut(title(note, summary), 256), "description": _cut(note.message, 4096),
                             "color": _COLOR[note.severity], "fields": fields[:25], "timestamp": note.at,
                             "footer": {"text": _cut(f"ferry · alert {alert} · {note.key}", 2048)}}
    if link:
        embed["url"] = link
    body = {"username": "ferry", "content": _cut(f"{title(note, summary)}: {note.message}", 2000),
            "embeds": [embed], "allowed_mentions": {"parse": []}}
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _alertmanager(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str,
                  mode: str) -> Rendered:
    """Alertmanager's v2 API: POST /api/v2/alerts with a list of alerts. Each event type is its own alert (labels
    alertname, environment, event, severity, ferry_alert); a recovery posts the resolved types with endsAt."""
    at = _parse_time(note.at)

    def labels(event_type: str) -> dict[str, str]:
        out = {"alertname": f"Ferry{event_type}", "event": event_type, "severity": severity_of(event_type),
               "ferry_alert": alert}
        if note.environment:
            out["environment"] = note.environment
        return out

    annotations = {k: v for k, v in {"summary": title(note, summary), "description": note.message,
                                     "version": note.version, "digest": note.digest, "by": note.by,
                                     "idempotency_key": note.key, **note.details, **acts}.items() if v}
    alerts: list[dict[str, Any]] = []
    for resolved in note.resolves:
        alerts.append({"labels": labels(resolved), "annotations": {**annotations, "resolved_by": note.type},
                       "startsAt": _fmt(at), "endsAt": _fmt(at), "generatorURL": link or None})
    if not note.resolves or note.type not in ("Recovered",):
        entry: dict[str, Any] = {"labels": labels(note.type), "annotations": annotations, "startsAt": _fmt(at),
                                 "generatorURL": link or None}
        if note.type in RESOLVED_BY_RECOVERY:
            entry["endsAt"] = _fmt(at + FIRING_FOR)
        alerts.append(entry)
    for item in alerts:
        if item["generatorURL"] is None:
            del item["generatorURL"]
    return Rendered(path="/api/v2/alerts", headers={"Content-Type": "application/json"}, body=_dumps(alerts))


def _cloudevents(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str,
                 mode: str) -> Rendered:
    """CloudEvents 1.0 over HTTP: binary mode (attributes as ce-* headers, data as the body) or structured mode
    (application/cloudevents+json)."""
    data = {"environment": note.environment, "message": note.message, "severity": note.severity,
            "version": note.version, "digest": note.digest, "by": note.by, "alert": alert, "summary": summary,
            "details": note.details, "actions": acts, "url": link, "resolves": note.resolves}
    attributes = {"specversion": "1.0", "id": note.key, "source": f"/ferry/{note.source or 'ferry'}",
                  "type": f"dev.ferry.{note.type}", "time": note.at, "subject": note.environment or note.version}
    if mode == "structured":
        envelope = {**attributes, "datacontenttype": "application/json", "data": data}
        return Rendered(headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
                        body=_dumps(envelope))
    headers = {f"ce-{k}": v for k, v in attributes.items() if v}
    headers["Content-Type"] = "application/json"
    return Rendered(headers=headers, body=_dumps(data))


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ workflows

ALERT_ROUTER_ID = "alerts/router"  # one per namespace: environments, promotions and rollbacks signal it
MAX_SEEN = 2000  # idempotency keys the router remembers across continue-as-new (a duplicate is dropped)
MAX_UNDELIVERED = 50
MAX_RECENT = 100  # outcomes of recent deliveries kept in the router's status
MAX_PENDING = 1000  # deliveries in flight (retrying) at once; more are recorded as undelivered, never dropped


class DeliveryInput(_Model):
    alert: str = Field(max_length=63)
    provider: str = Field(max_length=63)
    summary: str = Field("", max_length=256)
    deadline_seconds: float = Field(3600, gt=0)
    notification: Notification


class DeliveryResult(_Model):
    delivered: bool
    status: int = 0
    provider_type: str = ""
    attempts: int = 0
    reason: str = Field("", max_length=MAX_MESSAGE)


class Undelivered(_Model):
    alert: str
    provider: str
    key: str
    type: str
    environment: str = ""
    at: str
    reason: str = Field("", max_length=MAX_MESSAGE)


class Delivered(_Model):
    alert: str
    key: str
    type: str
    environment: str = ""
    at: str
    status: int = 0
    attempts: int = 0


class PendingDelivery(_Model):
    """A delivery in flight: carried through continue-as-new and resumed with what is left of its deadline."""

    alert: str
    provider: str
    summary: str = ""
    deadline_at: str = Field(description="absolute: the alert's deadline from when the event was routed")
    notification: Notification


Carried = TypeVar("Carried", PendingDelivery, Notification)

# NB: the deliveries in flight that move to the next run at continue-as-new, by their encoded size: 1,000 of the
# largest notifications are ~10 MB, past the server's payload limit. What does not fit is given up on the record.
MAX_CARRIED_BYTES = 96 * 1024
MAX_QUEUED_BYTES = 32 * 1024  # ... and the notifications received while it continued as new
# ... and the declared alerts (100 of 64 patterns each could be ~850 KB): what `ferry alerts apply` may declare
MAX_ALERTS_BYTES = 96 * 1024


def carry(pending: list[Carried], budget: int = MAX_CARRIED_BYTES) -> tuple[list[Carried], list[Carried]]:
    """(carried, not carried): the oldest first (deliveries in flight, notifications queued), while their JSON
    fits `budget`."""
    used, carried = 0, list[Carried]()
    for index, item in enumerate(pending):
        size = len(item.model_dump_json())
        if used + size > budget:
            return carried, pending[index:]
        used += size
        carried.append(item)
    return carried, []


# ------------------------------------------------------------------------------------ senders

# Who may notify the router: a run of one of Ferry's workflows, on Ferry's task queue, about its own environment.
SENDER_TYPES = {ENV_PREFIX: ENVIRONMENT_WORKFLOW, PROMOTE_PREFIX: PROMOTION_WORKFLOW,
                ROLLBACK_PREFIX: ROLLBACK_WORKFLOW, RELEASE_PREFIX: RELEASE_WORKFLOW}


class SenderInput(_Model):
    source: str = Field(max_length=300)
    run_id: str = Field(max_length=64)
    environment: str = Field("", max_length=64)
    key: str = Field("", max_length=80, description="the notification's key: the run named must say it sent it")
    digest: str = Field("", max_length=80, description="notification_digest of what arrived: ... with this content")


# `ferry upgrade drain` wakes the router with this notification (a client's: not delivered when senders are checked)
WORKER_BUILD_CHANGED = "WorkerBuildChanged"
WAKE_SOURCE = "ferry upgrade drain"
MAX_HELD = 3  # notifications with a key whose sender is being checked, waiting for its verdict (the newest)
MAX_QUEUED_CARRIED = 200  # notifications received while continuing as new, carried to the next run

def notification_digest(note: Notification) -> str:
    """What the router asks a sender to confirm: the notification's whole content as sent (canonical JSON), so a
    real key replayed with another message, type or `resolves` is refused."""
    canonical = json.dumps(note.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# The query every Ferry workflow answers: did this run send the notification with this key (workflows/outbox.py)?
NOTIFIED_QUERY = "ferry_notified"


class SenderResult(_Model):
    refusal: str = Field("", description="why the notification is not Ferry's; empty: it is")
    sender: str = Field("", description="what each alert says of its sender")
    unverified: str = Field("", description="the sender could not be asked: given up on the record, not delivered")


def sender_refusal(note: SenderInput, workflow_type: str, task_queue: str, ferry_queue: str) -> str:
    """'' when the run `note` names (as Temporal describes it) is one of Ferry's workflows on Ferry's task queue,
    of the kind its id says, about the environment the notification names."""
    kind = next((t for prefix, t in SENDER_TYPES.items() if note.source.startswith(prefix)), None)
    if kind is None:
        return f"{note.source[:100]!r} is not the id of one of Ferry's workflows"
    if workflow_type != kind:
        return f"{note.source[:100]} run {note.run_id} is of type {workflow_type[:100]}, not {kind}"
    if task_queue != ferry_queue:
        return f"{note.source[:100]} runs on task queue {task_queue[:100]!r}, not Ferry's"
    parts = note.source.split("/")
    if kind != RELEASE_WORKFLOW and note.environment and parts[1] != note.environment:
        return f"{note.source[:100]} is about {parts[1][:64]}, not {note.environment}"
    return ""


class AlertRouterState(_Model):
    alerts: list[AlertSpec] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list, description="recent idempotency keys (bounded)")
    pending: list[PendingDelivery] = Field(default_factory=list, description="deliveries in flight when the "
                                           "previous run continued as new")
    delivered: list[Delivered] = Field(default_factory=list, description="recent deliveries (bounded)")
    undelivered: list[Undelivered] = Field(default_factory=list, description="deliveries given up (bounded)")
    counts: dict[str, int] = Field(default_factory=dict, description="received, duplicate, malformed, matched, "
                                   "delivered, undelivered")


class AlertRouterInput(_Model):
    state: AlertRouterState = Field(default_factory=AlertRouterState)
    queued: list[Notification] = Field(default_factory=list, max_length=200, description="received by the "
                                       "previous run while it continued as new, not yet routed")
    verify_senders: bool = Field(True, description="deliver only what a run of Ferry's own workflows sent (false: "
                                 "a router fed by something else, such as the delivery benchmark's synthetic events)")
    max_per_run: int = Field(1000, ge=1, le=10_000, description="notifications routed per run before "
                             "continue-as-new (each costs a signal, and an activity per matching alert)")


class AlertsUpdate(_Model):
    alerts: list[AlertSpec] = Field(max_length=MAX_ALERTS)
    by: str = Field("", max_length=128)

    @model_validator(mode="after")
    def _small(self) -> AlertsUpdate:
        size = len(AlertRouterState(alerts=self.alerts).model_dump_json())
        if size > MAX_ALERTS_BYTES:
            raise ValueError(f"the declared alerts are {size} bytes encoded, more than {MAX_ALERTS_BYTES}: they live "
                             "in the router's state from run to run (fewer patterns, or globs)")
        return self


class AlertsUpdateResult(_Model):
    alerts: list[str]
    changes: list[str] = Field(default_factory=list)


def alerts_diff(old: list[AlertSpec], new: list[AlertSpec]) -> list[str]:
    before = {a.name: a for a in old}
    after = {a.name: a for a in new}
    lines = [f"added {n}" for n in after if n not in before]
    lines += [f"removed {n}" for n in before if n not in after]
    lines += [f"changed {n}" for n in after if n in before and before[n] != after[n]]
    return lines
