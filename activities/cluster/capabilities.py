"""A cluster's `.Capabilities` for `helm template`: its version and the API versions it serves, read from discovery.

Helm's own install reads them from live discovery (helm v4.3.2 pkg/action/action.go:540-575 and GetVersionSet,
:604-640): every group-version, and every group-version/Kind of the resources it serves (subresources left out).
Ferry reads the same through aggregated discovery (apidiscovery.k8s.io/v2: two requests, ``/api`` and ``/apis``) and
falls back to the plain group lists (group-versions only) when a server does not aggregate. Cached per cluster for
CAPABILITIES_TTL seconds: a chart's own CRD changes them at most one render late (the render key names them, so a
change re-renders).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ferry.helm_render import Capabilities, api_versions_of

CAPABILITIES_TTL = 60.0
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


class CapabilitiesCache:
    """One cluster's capabilities, read at most once per CAPABILITIES_TTL (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Capabilities | None = None
        self._at = 0.0

    def get(self, dyn: Any, timeout: float, now: float | None = None) -> Capabilities:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._value is not None and now - self._at < CAPABILITIES_TTL:
                return self._value

        def get(path: str, **params: Any) -> dict[str, Any]:
            answer = dyn.request("get", path, serialize=False, _request_timeout=timeout, **params)
            body: dict[str, Any] = json.loads(answer.data)
            return body

        version = get("/version")
        documents = [get(path, header_params={"Accept": _AGGREGATED}) for path in ("/api", "/apis")]
        value = Capabilities(str(version.get("gitVersion") or ""), tuple(api_versions_of(documents)))
        with self._lock:
            self._value, self._at = value, now
        return value
