"""`ferry receiver`: webhooks in. An HTTP endpoint (its own process) that turns a registry push into `reconcile_now`
signals to the environments deploying from the pushed repository (found through the FerryRepository search
attribute), so a release reaches them in about a second instead of an interval.

    POST /hooks/registry   CNCF distribution notifications; `Authorization: Bearer $FERRY_RECEIVER_TOKEN`
    POST /hooks/generic    {"repository", "tag", "id", "timestamp"}; `X-Signature: sha256=<hex HMAC-SHA256>` keyed
                           with $FERRY_RECEIVER_HMAC_KEY
    GET  /healthz, /metrics (Prometheus text: ferry_receiver_requests_total{endpoint,outcome}, ..._signals_total)

Refused with a status and counted: 401 unauthenticated or bad signature, 411/413 no length or oversized, 415 wrong
content type, 400 malformed, 409 replayed (an id seen before, or older than 10 minutes), 404 unknown repository
(generic webhook; for the registry a 200 that names it, since a registry retries non-2xx answers forever), 503 when
Temporal cannot be reached (the sender retries).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.client import Client

from cli.common import CommandError, settings_from
from ferry.alert_render import verify_signature
from ferry.names import Signal
from ferry.receiver import (
    MAX_BODY,
    MAX_REPOSITORIES,
    REGISTRY_EVENTS_TYPE,
    Push,
    Refused,
    ReplayGuard,
    environments_query,
    generic_push,
    registry_pushes,
)

log = logging.getLogger("ferry.receiver")
MAX_ENVIRONMENTS = 200  # signalled per request at most (one repository rarely feeds more)
TEMPORAL_TIMEOUT = 10.0
MAX_CONCURRENT = 32  # requests handled at once; more get 503 (the registry retries), so threads stay bounded
SOCKET_TIMEOUT = 10.0  # a client that stops sending (headers or body) is dropped after this


DROPPED_FOR_REGISTRY = (400, 409, 413)  # after authentication: answered 200 to the registry (see handle)


class Receiver:
    """The request logic, independent of the HTTP server: verify, bound, dedupe, look up, signal."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, token: str | None, hmac_key: str | None
    ) -> None:
        self._client, self._loop = client, loop
        self._token, self._hmac_key = token, hmac_key
        self._guard = ReplayGuard()
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.signals = 0

    def authorized(self, header: str | None) -> bool:
        """The registry's shared secret, compared in constant time (no secret configured: the endpoint answers
        404 itself)."""
        if not self._token:
            return True
        return hmac.compare_digest((header or "").encode("utf-8", "surrogateescape"), f"Bearer {self._token}".encode())

    def count(self, endpoint: str, outcome: str) -> None:
        with self._lock:
            self.requests[(endpoint, outcome)] += 1

    def handle(self, endpoint: str, headers: Callable[[str], str | None], body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            status, answer = self._handle(endpoint, headers, body)
            self.count(endpoint, answer.pop("outcome"))
            return status, answer
        except Refused as refused:
            self.count(endpoint, refused.outcome)
            log.warning("%s refused (%s): %s", endpoint, refused.status, refused.reason)
            if endpoint == "registry" and refused.status in DROPPED_FOR_REGISTRY:
                # NB: the registry retries a non-2xx answer forever, in order, holding every later push behind it:
                # an authenticated request whose events are refused (stale, replayed, malformed, an odd Host
                # header any pusher can send) is answered 200 and dropped, counted under its outcome
                return 200, {"refused": refused.reason, "dropped": True}
            return refused.status, {"refused": refused.reason}
        except (ValueError, TypeError, RecursionError) as err:  # what no check above foresaw: refused, counted
            self.count(endpoint, "malformed")
            log.warning("%s refused (400): %s", endpoint, type(err).__name__)
            return 400, {"refused": f"malformed request ({type(err).__name__})"}

    def _handle(self, endpoint: str, headers: Callable[[str], str | None], body: bytes) -> tuple[int, dict[str, Any]]:
        now = datetime.now(UTC)
        if endpoint == "registry":
            if not self._token:
                raise Refused(404, "the registry endpoint is not enabled (FERRY_RECEIVER_TOKEN)", "disabled")
            given = headers("Authorization") or ""
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                raise Refused(401, "missing or wrong Authorization header", "unauthorized")
            kind = (headers("Content-Type") or "").split(";")[0].strip()
            if kind not in (REGISTRY_EVENTS_TYPE, "application/json"):
                raise Refused(415, f"content type must be {REGISTRY_EVENTS_TYPE}", "unsupported_media_type")
            pushes = registry_pushes(body, now)
        else:
            if not self._hmac_key:
                raise Refused(404, "the generic endpoint is not enabled (FERRY_RECEIVER_HMAC_KEY)", "disabled")
            if not verify_signature(body, self._hmac_key.encode(), headers("X-Signature")):
                raise Refused(
                    401, "missing or wrong X-Signature (sha256=<hex HMAC-SHA256 of the body>)", "bad_signature"
                )
            pushes = [generic_push(body, now)]
        if not pushes:
            return 200, {"outcome": "ignored", "signalled": [], "reason": "no manifest push in these events"}
        with self._lock:
            fresh = set(self._guard.fresh([p.id for p in pushes]))
        pushes = [p for p in pushes if p.id in fresh]
        if not pushes:
            raise Refused(409, "every event in this request was received before: a replay", "replayed")
        repositories = sorted({p.repository for p in pushes})
        if len(repositories) > MAX_REPOSITORIES:
            raise Refused(413, f"more than {MAX_REPOSITORIES} repositories in one request", "oversized")
        try:
            signalled = self._run(self._signal(repositories, pushes))
        except Exception as err:  # Temporal unreachable: the sender retries (a registry does, with backoff)
            log.error("signalling environments for %s failed: %s", repositories, err)
            with self._lock:  # let the retry through the replay guard
                self._guard.forget([p.id for p in pushes])
            raise Refused(503, "Temporal is unavailable; retry", "unavailable") from None
        if not signalled:
            status = 200 if endpoint == "registry" else 404
            return status, {
                "outcome": "unknown_repository",
                "signalled": [],
                "unknown": repositories,
                "reason": "no running environment deploys from " + ", ".join(repositories),
            }
        return 202, {"outcome": "accepted", "signalled": signalled, "repositories": repositories}

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=TEMPORAL_TIMEOUT)

    async def _signal(self, repositories: list[str], pushes: list[Push]) -> list[str]:
        ids = []
        async for execution in self._client.list_workflows(environments_query(repositories), limit=MAX_ENVIRONMENTS):
            ids.append(execution.id)
        what = ", ".join(f"{p.repository}:{p.tag or p.digest[:19]}" for p in pushes)[:500]
        await asyncio.gather(
            *(
                self._client.get_workflow_handle(i).signal(
                    Signal.RECONCILE_NOW, {"by": "ferry-receiver", "reason": f"pushed {what}"}
                )
                for i in ids
            )
        )
        with self._lock:
            self.signals += len(ids)
        log.info("push of %s: reconcile_now to %s", what, ", ".join(ids) or "nobody")
        return ids

    def metrics(self) -> str:
        lines = [
            "# HELP ferry_receiver_requests_total webhook requests by endpoint and outcome",
            "# TYPE ferry_receiver_requests_total counter",
        ]
        with self._lock:
            for (endpoint, outcome), n in sorted(self.requests.items()):
                lines.append(f'ferry_receiver_requests_total{{endpoint="{endpoint}",outcome="{outcome}"}} {n}')
            lines += [
                "# HELP ferry_receiver_signals_total reconcile_now signals sent",
                "# TYPE ferry_receiver_signals_total counter",
                f"ferry_receiver_signals_total {self.signals}",
            ]
        return "\n".join(lines) + "\n"


class ReceiverServer(ThreadingHTTPServer):
    """The receiver's HTTP server: one thread per request, at most MAX_CONCURRENT of them past the door."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        self.receiver = receiver
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        super().__init__(address, ReceiverHandler)


class ReceiverHandler(BaseHTTPRequestHandler):
    server: ReceiverServer
    server_version = "ferry-receiver"
    timeout = SOCKET_TIMEOUT

    def _answer(self, status: int, data: dict[str, Any] | str) -> None:
        body = (data if isinstance(data, str) else json.dumps(data)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4" if isinstance(data, str) else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, endpoint: str, outcome: str, status: int, why: str, *, close: bool = True) -> None:
        self.server.receiver.count(endpoint, outcome)
        if close:
            self.close_connection = True
        self._answer(status, {"refused": why})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"ok": True})
        elif self.path == "/metrics":
            self._answer(200, self.server.receiver.metrics())
        else:
            self._answer(404, {"refused": "not found"})

    def do_POST(self) -> None:
        endpoint = {"/hooks/registry": "registry", "/hooks/generic": "generic"}.get(self.path)
        if endpoint is None:
            self._answer(404, {"refused": "not found (POST /hooks/registry or /hooks/generic)"})
            return
        if not self.server.slots.acquire(blocking=False):
            self._refuse(endpoint, "busy", 503, f"more than {MAX_CONCURRENT} requests at once; retry")
            return
        try:
            self._post(endpoint)
        finally:
            self.server.slots.release()

    def _post(self, endpoint: str) -> None:
        receiver = self.server.receiver
        if endpoint == "registry" and not receiver.authorized(self.headers.get("Authorization")):
            # before the body is read: an unauthenticated client cannot hold a slot while it trickles one
            self._refuse(endpoint, "unauthorized", 401, "missing or wrong Authorization header")
            return
        length = self.headers.get("Content-Length")
        if length is None or not re.fullmatch(r"[0-9]{1,9}", length):  # NB: str.isdigit() takes "²"
            self._refuse(endpoint, "malformed", 411, "Content-Length required", close=False)
            return
        if int(length) > MAX_BODY:
            self._refuse(endpoint, "oversized", 413, f"body larger than {MAX_BODY} bytes")
            return
        body = self.rfile.read(int(length))
        status, answer = receiver.handle(endpoint, self.headers.get, body)
        self._answer(status, answer)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_server(receiver: Receiver, bind: str) -> ThreadingHTTPServer:
    host, _, port = bind.rpartition(":")
    return ReceiverServer((host or "127.0.0.1", int(port)), receiver)


def _secret(env: str, file_flag: str | None) -> str | None:
    if file_flag:
        try:
            return Path(file_flag).read_text().strip() or None
        except OSError as err:
            raise CommandError(f"{file_flag}: {err.strerror}") from None
    return os.environ.get(env) or None


def cmd_receiver(args: argparse.Namespace) -> int:
    from workers.client import connect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = _secret("FERRY_RECEIVER_TOKEN", args.token_file)
    hmac_key = _secret("FERRY_RECEIVER_HMAC_KEY", args.hmac_key_file)
    if not token and not hmac_key:
        raise CommandError(
            "receiver: set FERRY_RECEIVER_TOKEN (registry notifications) and/or "
            "FERRY_RECEIVER_HMAC_KEY (generic webhook): an unauthenticated endpoint is refused"
        )
    settings = settings_from(args)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="temporal").start()
    client = asyncio.run_coroutine_threadsafe(connect(settings.temporal, identity="ferry-receiver"), loop).result(60)
    server = make_server(Receiver(client, loop, token, hmac_key), args.bind)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info(
        "receiver on http://%s (registry %s, generic %s)",
        args.bind,
        "on" if token else "off",
        "on" if hmac_key else "off",
    )
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0
