"""One settings object, read once per process.

Precedence, lowest first: documented defaults < the local stack's ``<state-dir>/devstack.json`` (when it
exists) < Temporal's own environment configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
``TEMPORAL_PROFILE`` and its TOML file, via ``temporalio.envconfig``) < ``FERRY_*`` environment variables
< command-line flags. Secrets (registry password, Temporal API key) are read here by the process that
needs them and never travel in a workflow or activity payload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
from temporalio.envconfig import ClientConfigProfile

from ferry.settings import (
    DEFAULT_TASK_QUEUE,
    RegistrySettings,
    Settings,
    TelemetrySettings,
    TemporalSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "ENVIRONMENT_VARIABLES",
    "RegistrySettings",
    "Settings",
    "SettingsInvalid",
    "TelemetrySettings",
    "TemporalSettings",
    "WorkerSettings",
    "load_settings",
]


# Every FERRY_* variable, the settings path it sets, and how to parse it. docker-compose.yml is checked
# against this table by tests/unit/test_compose.py.
ENVIRONMENT_VARIABLES: dict[str, tuple[str, str]] = {
    "FERRY_STATE_DIR": ("state_dir", "str"),
    "FERRY_TEMPORAL_ADDRESS": ("temporal.address", "str"),
    "FERRY_TEMPORAL_NAMESPACE": ("temporal.namespace", "str"),
    "FERRY_TEMPORAL_TLS": ("temporal.tls", "bool"),
    "FERRY_TEMPORAL_TLS_CERT": ("temporal.tls_cert", "str"),
    "FERRY_TEMPORAL_TLS_KEY": ("temporal.tls_key", "str"),
    "FERRY_TEMPORAL_TLS_CA": ("temporal.tls_ca", "str"),
    "FERRY_TEMPORAL_TLS_SERVER_NAME": ("temporal.tls_server_name", "str"),
    "FERRY_TEMPORAL_API_KEY": ("temporal.api_key", "str"),
    "FERRY_TEMPORAL_UI_URL": ("temporal.ui_url", "str"),
    "FERRY_TASK_QUEUE": ("temporal.task_queue", "str"),
    "FERRY_REGISTRY": ("registry.default", "str"),
    "FERRY_REGISTRY_INSECURE": ("registry.insecure_hosts", "list"),
    "FERRY_REGISTRY_USERNAME": ("registry.username", "str"),
    "FERRY_REGISTRY_PASSWORD": ("registry.password", "str"),
    "FERRY_REGISTRY_CREDENTIALS_HOST": ("registry.credentials_host", "str"),
    "FERRY_DOCKER_CONFIG": ("registry.docker_config", "str"),
    "FERRY_REGISTRY_TIMEOUT": ("registry.request_timeout_seconds", "str"),
    "FERRY_REGISTRY_MAX_DOWNLOAD": ("registry.max_download_bytes", "str"),
    "FERRY_OTEL_EXPORTER": ("telemetry.exporter", "str"),
    "FERRY_OTEL_ENDPOINT": ("telemetry.otlp_endpoint", "str"),
    "FERRY_PROMETHEUS_BIND": ("telemetry.prometheus_bind", "str"),
    "FERRY_MAX_CONCURRENT_ACTIVITIES": ("worker.max_concurrent_activities", "str"),
    "FERRY_MAX_CACHED_WORKFLOWS": ("worker.max_cached_workflows", "str"),
    "FERRY_MAX_CONCURRENT_WORKFLOW_TASKS": ("worker.max_concurrent_workflow_tasks", "str"),
    "FERRY_MAX_CONCURRENT_LOCAL_ACTIVITIES": ("worker.max_concurrent_local_activities", "str"),
    "FERRY_MAX_TASK_POLLERS": ("worker.max_task_pollers", "str"),
    "FERRY_CACHE_DIR": ("worker.cache_dir", "str"),
    "FERRY_DEPLOYMENT_NAME": ("worker.deployment_name", "str"),
    "FERRY_BUILD_ID": ("worker.build_id", "str"),
    "FERRY_ALERT_PROVIDERS": ("worker.alert_providers", "str"),
    "FERRY_KUBECONFIG": ("kubeconfig", "str"),
    "FERRY_CLUSTERS": ("clusters", "str"),
}


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class SettingsInvalid(ValueError):
    """A setting that cannot be what it says (a FERRY_* variable, a flag, devstack.json), named with its source."""


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(kind: str, raw: str, name: str = "") -> Any:
    if kind == "bool":
        # NB: refused, not read as false: FERRY_TEMPORAL_TLS=ture must not quietly connect without TLS
        value = _BOOLEANS.get(raw.strip().lower())
        if value is None:
            raise SettingsInvalid(f"{name or 'a boolean setting'}={raw[:40]!r} is not a boolean "
                                  f"(one of {', '.join(_BOOLEANS)})")
        return value
    if kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        elif value is not None:
            out[key] = value
    return out


def devstack_layer(state_dir: Path) -> dict[str, Any]:
    """Settings implied by a running local stack (``ferry dev up`` writes devstack.json)."""
    path = state_dir / "devstack.json"
    if not path.is_file():
        return {}
    info = json.loads(path.read_text())
    layer: dict[str, Any] = {"temporal": {}, "registry": {}}
    temporal = info.get("temporal") or {}
    if temporal.get("address"):
        layer["temporal"]["address"] = temporal["address"]
        layer["temporal"]["namespace"] = temporal.get("namespace", "default")
    if temporal.get("ui_url"):
        layer["temporal"]["ui_url"] = temporal["ui_url"]
    registry = info.get("registry") or {}
    if registry.get("host"):
        layer["registry"]["default"] = registry["host"]
        layer["registry"]["insecure_hosts"] = [registry["host"]]
    kube = info.get("kube") or {}
    if kube.get("worker_kubeconfig") or kube.get("kubeconfig"):
        # NB: the worker's own least-privilege identity (examples/rbac/ferry-worker.yaml), not the admin's.
        layer["kubeconfig"] = kube.get("worker_kubeconfig") or kube["kubeconfig"]
    if kube.get("clusters"):
        layer["clusters"] = kube["clusters"]  # `ferry dev up` writes one: default = the worker's kubeconfig
    layer["worker"] = {"cache_dir": str(state_dir / "cache")}
    return layer


def temporal_envconfig_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """What Temporal's standard env vars / profile file say, if anything."""
    if not any(key.startswith("TEMPORAL_") for key in env):
        return {}
    # NB: the profile, not load_client_connect_config: certificate files are read (and a wrong path reported,
    # naming the setting) when connecting, not while loading settings.
    profile = ClientConfigProfile.load(profile=env.get("TEMPORAL_PROFILE"), override_env_vars=dict(env))
    layer: dict[str, Any] = {}
    if profile.address:
        layer["address"] = profile.address
    if profile.namespace:
        layer["namespace"] = profile.namespace
    if profile.api_key:
        layer["api_key"] = profile.api_key
        layer["tls"] = True  # NB: as temporalio.envconfig does: an API key implies TLS unless disabled
    tls = profile.tls
    if tls is not None and tls.disabled is not True:
        layer["tls"] = True
        if tls.server_name:
            layer["tls_server_name"] = tls.server_name
        for source, path_field, pem_field in ((tls.client_cert, "tls_cert", "tls_cert_pem"),
                                              (tls.client_private_key, "tls_key", "tls_key_pem"),
                                              (tls.server_root_ca_cert, "tls_ca", "tls_ca_pem")):
            if isinstance(source, Path):
                layer[path_field] = str(source)
            elif source is not None:
                layer[pem_field] = source.decode() if isinstance(source, bytes) else source
    elif tls is not None:
        layer["tls"] = False
    return {"temporal": layer} if layer else {}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> Settings:
    """Build the settings from every layer. ``overrides`` are dotted paths from command-line flags."""
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    state = Path(
        overrides.get("state_dir") or (str(state_dir) if state_dir else None) or env.get("FERRY_STATE_DIR", ".ferry")
    )
    tree: dict[str, Any] = {"state_dir": str(state)}
    tree = _deep_merge(tree, devstack_layer(state))
    tree = _deep_merge(tree, temporal_envconfig_layer(env))
    env_layer: dict[str, Any] = {}
    for name, (dotted, kind) in ENVIRONMENT_VARIABLES.items():
        if name in env and env[name] != "":
            _set_path(env_layer, dotted, _parse(kind, env[name], name))
    tree = _deep_merge(tree, env_layer)
    flag_layer: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is not None:
            _set_path(flag_layer, dotted, value)
    tree = _deep_merge(tree, flag_layer)
    try:
        return Settings.model_validate(tree)
    except pydantic.ValidationError as err:
        problem = err.errors()[0]
        path = ".".join(str(p) for p in problem["loc"])
        named = [name for name, (dotted, _) in ENVIRONMENT_VARIABLES.items() if dotted == path and env.get(name)]
        source = f" ({named[0]}={str(env[named[0]])[:40]!r})" if named else ""
        raise SettingsInvalid(f"setting {path}{source}: {problem['msg']}") from None
