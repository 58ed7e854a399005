"""Delivering one notification to one provider: the only place alert URLs, tokens and HMAC keys are read.

``deliver_notification`` is one HTTP POST; Temporal's retry policy (workflows/policies.py DELIVERY_RETRY, bounded by
the alert's deadline) owns retries. Every attempt carries the same ``Idempotency-Key`` header (the notification's key)
so a receiver can recognise a retry. Errors, classified once here:

- ``ReceiverUnavailable`` (retryable): connection refused or reset, timeouts, 408, 425, 429, 5xx.
- ``DeliveryRefused`` (non-retryable): any other 4xx: the receiver understood and said no (bad URL, bad token).
- ``ProviderUnknown`` (non-retryable): the alert names a provider the worker's providers file does not define.
- ``ProvidersFileInvalid`` (non-retryable): the worker's providers file does not parse.
Idempotent as far as the receiver honours the key; does not heartbeat (one request, `timeout` seconds at most).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pydantic
import yaml
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ferry.alert_render import SIGNATURE_HEADER, Links, ProvidersFile, ProviderSpec, render, sign
from ferry.alert_router import DeliveryInput, DeliveryResult
from ferry.errors import ErrorType

log = logging.getLogger("ferry.notify")

MAX_PROVIDERS_FILE = 1024 * 1024
MAX_RESPONSE = 4096  # bytes of a receiver's answer read (for the error message)
USER_AGENT = "ferry-notifier/1"


def load_providers(path: Path | None) -> ProvidersFile:
    """The worker's providers file (YAML or JSON, `providers: [...]`), read at each delivery (edits apply without a
    restart); none configured, or not written yet, = no providers."""
    if path is None or not path.exists():
        return ProvidersFile()
    try:
        if path.stat().st_size > MAX_PROVIDERS_FILE:
            raise ValueError(f"larger than {MAX_PROVIDERS_FILE} bytes")
        raw = yaml.safe_load(path.read_text())
        return ProvidersFile.model_validate(raw or {}, context={"typed-by-people": True})
    except (OSError, ValueError, yaml.YAMLError, pydantic.ValidationError) as err:
        # NB: never echo the file: it holds secrets. The validation error names the field, not its value.
        reason = err.errors()[0] if isinstance(err, pydantic.ValidationError) else None
        text = f"{'.'.join(map(str, reason['loc']))}: {reason['msg']}" if reason else type(err).__name__
        raise ApplicationError(
            f"providers file {path}: {text}", type=str(ErrorType.PROVIDERS_FILE_INVALID), non_retryable=True
        ) from None


def redact(url: str) -> str:
    """scheme://host only: webhook paths and queries are credentials (Slack, Teams, Discord)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


class NotifyActivities:
    def __init__(self, providers_file: Path | None, links: Links) -> None:
        self._providers_file = providers_file
        self._links = links

    def provider(self, name: str) -> ProviderSpec:
        provider = load_providers(self._providers_file).get(name)
        if provider is None:
            raise ApplicationError(
                f"provider {name!r} is not defined in the worker's providers file "
                f"({self._providers_file or 'FERRY_ALERT_PROVIDERS is not set'})",
                type=str(ErrorType.PROVIDER_UNKNOWN),
                non_retryable=True,
            )
        return provider

    @activity.defn(name="deliver_notification")
    def deliver_notification(self, input: DeliveryInput) -> DeliveryResult:
        provider = self.provider(input.provider)
        rendered = render(provider.type, input.notification, self._links, input.alert, input.summary, provider.mode)
        body = rendered.body.encode()
        headers = {"User-Agent": USER_AGENT, **provider.headers, **rendered.headers}
        if provider.type == "generic-hmac" and provider.secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, provider.secret.get_secret_value().encode())
        if provider.token is not None:
            headers["Authorization"] = f"Bearer {provider.token.get_secret_value()}"
        url = (
            provider.url.get_secret_value().rstrip("/") + rendered.path
            if rendered.path
            else provider.url.get_secret_value()
        )
        attempt = activity.info().attempt
        status = _post(url, body, headers, provider.timeout, input.provider)
        log.info(
            "delivered %s (%s) to %s via %s: HTTP %s, attempt %s",
            input.notification.key,
            input.notification.type,
            input.provider,
            provider.type,
            status,
            attempt,
        )
        return DeliveryResult(delivered=True, status=status, provider_type=provider.type, attempts=attempt)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, provider: str) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    where = f"provider {provider} ({redact(url)})"
    try:
        # a plain opener without redirects to other hosts: a webhook answering 3xx is refused below.
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(MAX_RESPONSE)
            return int(response.status)
    except urllib.error.HTTPError as err:
        # NB: never the receiver's body: error pages echo the request path, which is the credential of a Slack,
        # Teams or Discord webhook; the status and its standard phrase only
        retryable = err.code in (408, 425, 429) or err.code >= 500
        raise ApplicationError(
            f"{where} answered HTTP {err.code} {_phrase(err.code)}",
            {"status": err.code},
            type=str(ErrorType.RECEIVER_UNAVAILABLE if retryable else ErrorType.DELIVERY_REFUSED),
            non_retryable=not retryable,
        ) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        kind = type(reason).__name__ if not isinstance(reason, str) else "unreachable"
        raise ApplicationError(f"{where} unreachable ({kind})", type=str(ErrorType.RECEIVER_UNAVAILABLE)) from None
    except Exception as err:
        # a malformed URL or header (a token ending in a newline, a space in a webhook path) never heals:
        # refused at once, by the exception's type only
        raise ApplicationError(
            f"{where} cannot be sent ({type(err).__name__}: the provider's URL or headers are "
            "malformed; fix the providers file)",
            type=str(ErrorType.DELIVERY_REFUSED),
            non_retryable=True,
        ) from None


def _phrase(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # NB: a redirect would carry the signature and token to wherever it points


_OPENER = urllib.request.build_opener(_NoRedirect)
