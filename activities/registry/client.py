"""The one-shot oras client: no retry loops, a timeout on every request, failures classified into the taxonomy.

The registry package is the only code that imports oras (import-linter: one-registry-adapter).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

import oras.provider
import requests
from requests.adapters import HTTPAdapter
from temporalio import activity

from activities.errors import classified
from ferry.artifacts import Layer
from ferry.errors import ErrorType, classify_http_status
from ferry.oci import OCI_MANIFEST_MEDIA_TYPE

MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHUNK = 1 << 20

# The undecorated request method: oras wraps it in @retry(attempts=5) whose sleeps total ~131 s.
_DO_REQUEST_ONCE = oras.provider.Registry.do_request.__wrapped__


class _RegistryHTTPError(Exception):
    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status


class _TimeoutAdapter(HTTPAdapter):
    """Every request gets a timeout (requests has none by default) and urllib3 retries stay at zero."""

    def __init__(self, timeout: float, connections: int) -> None:
        super().__init__(max_retries=0, pool_maxsize=connections)
        self._timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class _OneShotRegistry(oras.provider.Registry):  # type: ignore[misc]
    """oras Registry with its retry decorator removed and the last HTTP status remembered.

    NB: oras turns non-2xx answers into a bare ValueError; remembering the status lets us classify it.
    """

    last_status: int | None = None
    bare_session: requests.Session

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: Any = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        self.last_status = None
        _heartbeat(method, urlsplit(url).path[-80:])  # per request: a push (blob, config, manifest) is 3+
        if urlsplit(url).netloc.lower() != str(self.hostname).lower():
            # NB: a Location or Link header may name another host; it gets no credential, token or 401 answer.
            bare = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
            foreign = self.bare_session.request(
                method, url, data=data, headers=bare, json=json, stream=stream, verify=self._tls_verify
            )
            self.last_status = foreign.status_code
            if foreign.status_code == 429 or foreign.status_code >= 500:
                raise _RegistryHTTPError(foreign.status_code, url, foreign.text[:300])
            return foreign
        try:
            response: requests.Response = _DO_REQUEST_ONCE(self, url, method, data, headers, json, stream)
        except ValueError as err:
            # oras raises a bare ValueError when it cannot answer a 401/403 challenge (no credentials).
            raise _RegistryHTTPError(401, url, str(err)) from err
        self.last_status = response.status_code
        if response.status_code == 429 or response.status_code >= 500:
            raise _RegistryHTTPError(response.status_code, url, response.text)
        return response


@contextlib.contextmanager
def _classified(reg: _OneShotRegistry | None, what: str) -> Iterator[None]:
    """Translate whatever oras/requests raise into the taxonomy."""
    try:
        yield
    except _RegistryHTTPError as err:
        raise classified(
            classify_http_status(err.status, unavailable=ErrorType.REGISTRY_UNAVAILABLE), f"{what}: {err}"
        ) from err
    except (requests.ConnectionError, requests.Timeout) as err:
        raise classified(ErrorType.REGISTRY_UNAVAILABLE, f"{what}: registry unreachable: {err}") from err
    except ValueError as err:
        status = reg.last_status if reg is not None else None
        if status is not None and status >= 400:
            raise classified(
                classify_http_status(status, unavailable=ErrorType.REGISTRY_UNAVAILABLE),
                f"{what}: HTTP {status}: {err}",
            ) from err
        raise classified(ErrorType.BAD_INPUT, f"{what}: {err}") from err


def _heartbeat(*details: Any) -> None:
    if activity.in_activity() and not activity.info().is_local:  # local activities cannot heartbeat
        activity.heartbeat(*details)


class _Oversized(Exception):
    pass


def _read_bounded(reg: _OneShotRegistry, url: str, limit: int, headers: dict[str, str] | None = None) -> bytes | None:
    """GET ``url`` reading at most ``limit`` bytes while streaming: the body, None for 404, _Oversized when
    the body is larger; any other answer is raised as _RegistryHTTPError (classified by ``_classified``)."""
    response = reg.do_request(url, "GET", headers=dict(headers or {}), stream=True)
    with contextlib.closing(response):
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            snippet = next(response.iter_content(1024), b"").decode(errors="replace")
            raise _RegistryHTTPError(response.status_code, url, snippet)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _Oversized(f"{declared} bytes")
        body = bytearray()
        for chunk in response.iter_content(8192):
            body.extend(chunk)
            if len(body) > limit:
                raise _Oversized(f"more than {limit} bytes")
        return bytes(body)


def _stream(response: requests.Response, out: IO[bytes], layer: Layer) -> tuple[int, str]:
    """Copy the response body to ``out`` while hashing it: (bytes written, "sha256:..."). Heartbeats per chunk."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > layer.size:
            # checked before writing: never more than the declared (and capped) size on disk
            raise classified(
                ErrorType.DIGEST_MISMATCH,
                f"blob {layer.digest} is longer than the {layer.size} bytes its manifest declares",
            )
        hasher.update(chunk)
        out.write(chunk)
        _heartbeat(size)
    return size, "sha256:" + hasher.hexdigest()
