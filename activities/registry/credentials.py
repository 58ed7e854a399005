"""Registry credentials: docker config, credential helpers, host-bound token auth, and a client per host."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import oras.auth
import requests

from activities.registry.client import _OneShotRegistry, _TimeoutAdapter
from ferry.settings import RegistrySettings

MAX_DOCKER_CONFIG = 1024 * 1024
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def normalize_auth_key(key: str) -> str:
    """A docker config ``auths`` key as the host it is for (docker's own rule: scheme and path dropped;
    ``https://index.docker.io/v1/`` is Docker Hub)."""
    host = key.strip()
    for prefix in ("https://", "http://"):
        if host.lower().startswith(prefix):
            host = host[len(prefix) :]
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB else host


def _load_docker_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCKER_CONFIG + 1)
        if len(raw) > MAX_DOCKER_CONFIG:
            return {}
        config = json.loads(raw)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _credential_helper(helper: str, host: str, timeout: float) -> tuple[str, str] | None:
    """``docker-credential-<helper> get`` for host (docker's credential-helper protocol), or None."""
    if not _HELPER_NAME.fullmatch(helper):
        return None
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        return None
    try:
        proc = subprocess.run([binary, "get"], input=host.encode(), capture_output=True, timeout=timeout, check=False)
        payload = json.loads(proc.stdout[:MAX_DOCKER_CONFIG]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if isinstance(payload, dict) and payload.get("Username") and payload.get("Secret"):
        return str(payload["Username"]), str(payload["Secret"])
    return None


def _docker_config_credentials(path: Path, host: str, timeout: float = 10.0) -> tuple[str, str] | None:
    """username/password for exactly ``host`` from a docker config.json: its ``auths`` entry (keys compared as
    docker does), else its ``credHelpers`` entry, else its ``credsStore``. Never another host's."""
    config = _load_docker_config(path)
    want = normalize_auth_key(host)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key, entry in (auths or {}).items():
        if normalize_auth_key(str(key)) != want or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except ValueError:
                continue
            if user:
                return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    helper = next((str(v) for k, v in (helpers or {}).items() if normalize_auth_key(str(k)) == want), None)
    if helper is not None:
        return _credential_helper(helper, host, timeout)
    if isinstance(config.get("credsStore"), str):
        return _credential_helper(config["credsStore"], host, timeout)
    return None


class _HostBoundTokenAuth(oras.auth.TokenAuth):  # type: ignore[misc]
    """oras's token auth, except that the registry's credentials go to a token realm only on the registry's own
    host (or Docker Hub's auth.docker.io): a challenge naming any other realm gets an anonymous token request."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self._host = host

    def request_token(self, h: Any) -> Any:
        realm = str(h.realm or "")
        realm_host = urlsplit(realm if "://" in realm else f"{self.prefix}://{realm}").netloc.lower()
        if realm_host == self._host.lower() or (
            normalize_auth_key(self._host) == "docker.io" and realm_host == "auth.docker.io"
        ):
            return super().request_token(h)
        saved = getattr(self, "_basic_auth", None)
        self._basic_auth = None
        try:
            return super().request_token(h)
        finally:
            self._basic_auth = saved


class Registries:
    """A client per registry host, configured from worker settings; thread-safe.

    `connections`: kept-alive connections per host, one per caller that may run at once (the worker's activity and
    local-activity slots). requests keeps 10; more concurrent callers discard a connection after each request.
    """

    def __init__(self, settings: RegistrySettings, connections: int = 10) -> None:
        self._settings = settings
        self._connections = connections
        self._clients: dict[str, _OneShotRegistry] = {}
        self._lock = threading.Lock()

    def credentials(self, host: str) -> tuple[str, str] | None:
        """The credentials given for exactly this host, or None: FERRY_REGISTRY_USERNAME/PASSWORD only for
        their credentials host, else the docker config's entry for this host."""
        s = self._settings
        if s.username and s.password and s.credentials_for is not None:
            if normalize_auth_key(host) == normalize_auth_key(s.credentials_for):
                return s.username, s.password.get_secret_value()
        config = s.docker_config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
        if config.is_dir():
            config = config / "config.json"
        return _docker_config_credentials(config, host, s.request_timeout_seconds)

    @property
    def max_download_bytes(self) -> int:
        return self._settings.max_download_bytes

    def client(self, host: str) -> _OneShotRegistry:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = self._build(host)
            return self._clients[host]

    def _build(self, host: str) -> _OneShotRegistry:
        insecure = host in self._settings.insecure_hosts
        creds = self.credentials(host)
        # NB: an htpasswd registry answers 401 with `WWW-Authenticate: Basic`; oras's default token backend
        # would treat that realm as a token server. Ask the registry which scheme it speaks.
        backend = "token"
        if creds:
            scheme = "http" if insecure else "https"
            with contextlib.suppress(requests.RequestException):
                probe = requests.get(f"{scheme}://{host}/v2/", timeout=self._settings.request_timeout_seconds)
                if probe.headers.get("WWW-Authenticate", "").lower().startswith("basic"):
                    backend = "basic"
        reg = _OneShotRegistry(hostname=host, insecure=insecure, auth_backend=backend)
        if backend == "token":
            auth = _HostBoundTokenAuth(host)
            auth.session, auth.prefix, auth._tls_verify = reg.session, reg.prefix, reg._tls_verify
            reg.auth = auth
        adapter = _TimeoutAdapter(self._settings.request_timeout_seconds, self._connections)
        reg.session.mount("http://", adapter)
        reg.session.mount("https://", adapter)
        reg.bare_session = requests.Session()
        reg.bare_session.mount("http://", adapter)
        reg.bare_session.mount("https://", adapter)
        if creds:
            reg.auth.set_basic_auth(*creds)
        return reg
