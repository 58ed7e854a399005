"""How each alert provider renders a notification (generic, generic-hmac, Slack, Teams, Discord, Alertmanager,
CloudEvents), the providers file the worker reads, links and actions, and the HMAC signature. Pure: no I/O,
no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shlex
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ferry.alerts import _NAME, FIRING_FOR, MAX_ALERTS, RESOLVED_BY_RECOVERY, Notification, severity_of
from ferry.model import Model

# --------------------------------------------------------------------------------------- providers

ProviderType = Literal["generic", "generic-hmac", "slack", "msteams", "discord", "alertmanager", "cloudevents"]


class ProviderSpec(Model):
    """A provider as the worker knows it (its providers file): where to send and with which secret."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME)
    type: ProviderType
    url: SecretStr = Field(
        description="webhook URL (Slack/Teams/Discord URLs are secrets themselves); for alertmanager its base URL"
    )
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
            raise ValueError("url must not contain spaces or control characters")  # never echo the value
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
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name) or re.search(r"[\x00-\x1f\x7f]", text) or len(text) > 1024:
                raise ValueError(
                    f"header {name[:64]!r}: a token name and one line of at most 1024 printable characters"
                )
        return value

    @model_validator(mode="after")
    def _hmac_key(self) -> ProviderSpec:
        if self.type == "generic-hmac" and not self.secret:
            raise ValueError(f"provider {self.name}: generic-hmac needs `secret` (the HMAC key)")
        return self


class ProvidersFile(Model):
    providers: list[ProviderSpec] = Field(default_factory=list, max_length=MAX_ALERTS)

    def get(self, name: str) -> ProviderSpec | None:
        return next((p for p in self.providers if p.name == name), None)


# ------------------------------------------------------------------------------------------- links


class Links(Model):
    """Worker-side settings that turn a notification into something an SRE can act on."""

    ui_url: str = "http://127.0.0.1:8233"
    address: str = "127.0.0.1:7233"
    namespace: str = "default"

    def workflow(self, workflow_id: str, run_id: str = "") -> str:
        from urllib.parse import quote

        base = (
            f"{self.ui_url.rstrip('/')}/namespaces/{quote(self.namespace, safe='')}/workflows/"
            f"{quote(workflow_id, safe='')}"
        )
        return f"{base}/{run_id}/history" if run_id else base


def actions(note: Notification, links: Links) -> dict[str, str]:
    """For what waits for a person (a promotion's AwaitingApproval, a protected SpecChangePending): every way to act
    on it, ready to paste."""
    if note.type == "SpecChangePending" and note.environment:
        return {
            "approve": f"ferry env approve {shlex.quote(note.environment)} --key ~/.ssh/id_ed25519",
            "reject": f"ferry env reject {shlex.quote(note.environment)} --key ~/.ssh/id_ed25519",
        }
    if note.type != "AwaitingApproval":
        return {}
    # NB: every value a notification carries is quoted for the shell: a forged `notify` signal must not turn a
    # ready-to-paste command into another command
    q = shlex.quote
    env, version, wid = q(note.environment), q(note.version), q(note.source)
    publisher = note.details.get("publisher", "")
    names = [n.strip() for n in note.details.get("approvers", "").split(",") if n.strip()]
    approver = q(next((n for n in names if n != publisher), "NAME"))  # the publisher may not approve
    target = f"--address {q(links.address)} --namespace {q(links.namespace)} --workflow-id {wid}"
    return {
        "approve": f"ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519",
        "update": f"temporal workflow update execute {target} --name approve_update "
        f'--input "$(ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --print)"',
        "signal": f"temporal workflow signal {target} --name approve "
        f'--input "$(ferry approve {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --print)"',
        "reject": f"ferry reject {env} {version} --as {approver} --key ~/.ssh/id_ed25519 --comment WHY",
    }


def title(note: Notification, summary: str = "") -> str:
    where = f" {note.environment}" if note.environment else ""
    version = f" {note.version}" if note.version else ""
    text = f"{note.type}{where}{version}"
    return f"{summary}: {text}" if summary else text


def facts(note: Notification) -> dict[str, str]:
    out = {"event": note.type, "severity": note.severity}
    for key, value in (
        ("environment", note.environment),
        ("version", note.version),
        ("digest", note.digest),
        ("by", note.by),
    ):
        if value:
            out[key] = value
    out.update(note.details)
    return out


# ------------------------------------------------------------------------------------ rendering


class Rendered(Model):
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


def render(
    kind: ProviderType, note: Notification, links: Links, alert: str, summary: str = "", mode: str = "binary"
) -> Rendered:
    """The request body (and non-secret headers) each provider documents."""
    link = links.workflow(note.source, note.run_id) if note.source else ""
    acts = actions(note, links)
    renderer = {
        "generic": _generic,
        "generic-hmac": _generic,
        "slack": _slack,
        "msteams": _teams,
        "discord": _discord,
        "alertmanager": _alertmanager,
        "cloudevents": _cloudevents,
    }[kind]
    rendered = renderer(note, link, acts, alert, summary, mode)
    rendered.headers[IDEMPOTENCY_HEADER] = note.key
    return rendered


def _generic(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    # NB: Flux's event shape (involvedObject, severity, timestamp, message, reason, metadata, reportingController),
    # so receivers written for Flux's generic provider read Ferry's too.
    metadata = {
        k: v
        for k, v in {
            **facts(note),
            "alert": alert,
            "summary": summary,
            "url": link,
            "idempotencyKey": note.key,
            **acts,
        }.items()
        if v
    }
    body = {
        "involvedObject": {
            "kind": "Environment" if note.environment else "Release",
            "name": note.environment or note.details.get("repository", ""),
        },
        "severity": note.severity,
        "timestamp": note.at,
        "message": note.message,
        "reason": note.type,
        "metadata": metadata,
        "reportingController": "ferry",
        "reportingInstance": note.source,
    }
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
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_slack_text(k)}*\n{_slack_text(v)}", 2000)} for k, v in facts(note).items()
    ][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(head, 150)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(f"{_EMOJI[note.severity]} {_slack_text(note.message)}", 3000)},
        },
        {"type": "section", "fields": fields},
    ]
    if acts:
        text = "\n".join(f"*{k}*: `{_slack_text(v)}`" for k, v in acts.items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 3000)}})
    if link:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{link}|Open in Temporal UI> · alert {alert} · {note.key}"}],
            }
        )
    body = {"text": _cut(_slack_text(f"{head}: {note.message}"), 3000), "blocks": blocks}
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _teams(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    # A Teams incoming webhook (Workflows) takes a message with an Adaptive Card attachment.
    card_body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "text": _teams_text(title(note, summary)),
            "color": {"info": "Default", "warning": "Warning", "error": "Attention"}[note.severity],
        },
        {"type": "TextBlock", "wrap": True, "text": _teams_text(note.message)},
        {"type": "FactSet", "facts": [{"title": k, "value": _teams_text(v)} for k, v in facts(note).items()]},
    ]
    for name, command in acts.items():
        card_body.append({"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": f"{name}: {command}"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": card_body,
    }
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Temporal UI", "url": link}]
    body = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _discord(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    # Discord's limits: content 2000, embed title 256, description 4096, 25 fields (name 256, value 1024).
    fields = [{"name": _cut(k, 256), "value": _cut(v, 1024), "inline": len(v) < 40} for k, v in facts(note).items()]
    fields += [{"name": k, "value": _cut(f"`{v}`", 1024), "inline": False} for k, v in acts.items()]
    embed: dict[str, Any] = {
        "title": _cut(title(note, summary), 256),
        "description": _cut(note.message, 4096),
        "color": _COLOR[note.severity],
        "fields": fields[:25],
        "timestamp": note.at,
        "footer": {"text": _cut(f"ferry · alert {alert} · {note.key}", 2048)},
    }
    if link:
        embed["url"] = link
    body = {
        "username": "ferry",
        "content": _cut(f"{title(note, summary)}: {note.message}", 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }
    return Rendered(headers={"Content-Type": "application/json"}, body=_dumps(body))


def _alertmanager(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    """Alertmanager's v2 API: POST /api/v2/alerts with a list of alerts. Each event type is its own alert (labels
    alertname, environment, event, severity, ferry_alert); a recovery posts the resolved types with endsAt."""
    at = _parse_time(note.at)
    annotations = _am_annotations(note, acts, summary)
    alerts: list[dict[str, Any]] = []
    for resolved in note.resolves:
        alerts.append(
            {
                "labels": _am_labels(note, alert, resolved),
                "annotations": {**annotations, "resolved_by": note.type},
                "startsAt": _fmt(at),
                "endsAt": _fmt(at),
                "generatorURL": link or None,
            }
        )
    if not note.resolves or note.type not in ("Recovered",):
        entry: dict[str, Any] = {
            "labels": _am_labels(note, alert, note.type),
            "annotations": annotations,
            "startsAt": _fmt(at),
            "generatorURL": link or None,
        }
        if note.type in RESOLVED_BY_RECOVERY:
            entry["endsAt"] = _fmt(at + FIRING_FOR)
        alerts.append(entry)
    for item in alerts:
        if item["generatorURL"] is None:
            del item["generatorURL"]
    return Rendered(path="/api/v2/alerts", headers={"Content-Type": "application/json"}, body=_dumps(alerts))


def _am_labels(note: Notification, alert: str, event_type: str) -> dict[str, str]:
    """An Alertmanager alert's labels: one alert per event type."""
    out = {
        "alertname": f"Ferry{event_type}",
        "event": event_type,
        "severity": severity_of(event_type),
        "ferry_alert": alert,
    }
    if note.environment:
        out["environment"] = note.environment
    return out


def _am_annotations(note: Notification, acts: dict[str, str], summary: str) -> dict[str, str]:
    """An Alertmanager alert's annotations: the notification's text, details and actions (the empty ones left out)."""
    return {
        k: v
        for k, v in {
            "summary": title(note, summary),
            "description": note.message,
            "version": note.version,
            "digest": note.digest,
            "by": note.by,
            "idempotency_key": note.key,
            **note.details,
            **acts,
        }.items()
        if v
    }


def _cloudevents(note: Notification, link: str, acts: dict[str, str], alert: str, summary: str, mode: str) -> Rendered:
    """CloudEvents 1.0 over HTTP: binary mode (attributes as ce-* headers, data as the body) or structured mode
    (application/cloudevents+json)."""
    data = {
        "environment": note.environment,
        "message": note.message,
        "severity": note.severity,
        "version": note.version,
        "digest": note.digest,
        "by": note.by,
        "alert": alert,
        "summary": summary,
        "details": note.details,
        "actions": acts,
        "url": link,
        "resolves": note.resolves,
    }
    attributes = {
        "specversion": "1.0",
        "id": note.key,
        "source": f"/ferry/{note.source or 'ferry'}",
        "type": f"dev.ferry.{note.type}",
        "time": note.at,
        "subject": note.environment or note.version,
    }
    if mode == "structured":
        envelope = {**attributes, "datacontenttype": "application/json", "data": data}
        return Rendered(headers={"Content-Type": "application/cloudevents+json; charset=utf-8"}, body=_dumps(envelope))
    headers = {f"ce-{k}": v for k, v in attributes.items() if v}
    headers["Content-Type"] = "application/json"
    return Rendered(headers=headers, body=_dumps(data))


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
