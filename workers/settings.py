"""One settings object, read once per process.

Precedence, lowest first: documented defaults < the local stack's ``<state-dir>/devstack.json`` (when it
exists) < Temporal's own environment configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
``TEMPORAL_PROFILE`` and its TOML file, via ``temporalio.envconfig``) < ``FERRY_*`` environment variables
< command-line flags. The FERRY_* variables are one pydantic-settings model (``FerryEnvironment``): each is typed,
and a value that is not what its setting takes (``FERRY_TEMPORAL_TLS=ture``) is refused naming the variable.
Secrets (registry password, Temporal API key) are ``SecretStr``, read here by the process that needs them, and
never travel in a workflow or activity payload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars
from temporalio.envconfig import ClientConfigProfile

from ferry.settings import Settings, TelemetrySettings, TemporalSettings

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "FerryEnvironment",
    "Settings",
    "SettingsInvalid",
    "TelemetrySettings",
    "TemporalSettings",
    "load_settings",
]


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_NOT_A_BOOLEAN = "not_a_boolean"


def _boolean(raw: object) -> object:
    # refused, not read as false: FERRY_TEMPORAL_TLS=ture must not quietly connect without TLS. pydantic's own
    # bool would also take t/f/y/n; this keeps the words Ferry has always documented.
    if not isinstance(raw, str):
        return raw
    value = _BOOLEANS.get(raw.strip().lower())
    if value is None:
        raise PydanticCustomError(_NOT_A_BOOLEAN, "is not a boolean")
    return value


def _comma_list(raw: object) -> object:
    return [item.strip() for item in raw.split(",") if item.strip()] if isinstance(raw, str) else raw


@dataclass(frozen=True)
class Sets:
    """The settings path (dotted, into ``Settings``) a FERRY_* variable sets."""

    path: str


Boolean = Annotated[bool, BeforeValidator(_boolean)]
CommaList = Annotated[list[str], BeforeValidator(_comma_list)]


class FerryEnvironment(BaseSettings):
    """The FERRY_* environment variables, each named exactly (case-sensitive) and parsed by its type; unset or
    empty is None (the layers below decide). Ranges and cross-field rules are the models' (ferry/settings.py)."""

    model_config = SettingsConfigDict(
        env_prefix="FERRY_", case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True
    )

    STATE_DIR: Annotated[Path | None, Sets("state_dir")] = None
    TEMPORAL_ADDRESS: Annotated[str | None, Sets("temporal.address")] = None
    TEMPORAL_NAMESPACE: Annotated[str | None, Sets("temporal.namespace")] = None
    TEMPORAL_TLS: Annotated[Boolean | None, Sets("temporal.tls")] = None
    TEMPORAL_TLS_CERT: Annotated[Path | None, Sets("temporal.tls_cert")] = None
    TEMPORAL_TLS_KEY: Annotated[Path | None, Sets("temporal.tls_key")] = None
    TEMPORAL_TLS_CA: Annotated[Path | None, Sets("temporal.tls_ca")] = None
    TEMPORAL_TLS_SERVER_NAME: Annotated[str | None, Sets("temporal.tls_server_name")] = None
    TEMPORAL_API_KEY: Annotated[SecretStr | None, Sets("temporal.api_key")] = None
    TEMPORAL_UI_URL: Annotated[str | None, Sets("temporal.ui_url")] = None
    TASK_QUEUE: Annotated[str | None, Sets("temporal.task_queue")] = None
    REGISTRY: Annotated[str | None, Sets("registry.default")] = None
    REGISTRY_INSECURE: Annotated[CommaList | None, NoDecode, Sets("registry.insecure_hosts")] = None  # not JSON
    REGISTRY_USERNAME: Annotated[str | None, Sets("registry.username")] = None
    REGISTRY_PASSWORD: Annotated[SecretStr | None, Sets("registry.password")] = None
    REGISTRY_CREDENTIALS_HOST: Annotated[str | None, Sets("registry.credentials_host")] = None
    DOCKER_CONFIG: Annotated[Path | None, Sets("registry.docker_config")] = None
    REGISTRY_TIMEOUT: Annotated[float | None, Sets("registry.request_timeout_seconds")] = None
    REGISTRY_MAX_DOWNLOAD: Annotated[int | None, Sets("registry.max_download_bytes")] = None
    OTEL_EXPORTER: Annotated[Literal["none", "console", "otlp"] | None, Sets("telemetry.exporter")] = None
    OTEL_ENDPOINT: Annotated[str | None, Sets("telemetry.otlp_endpoint")] = None
    PROMETHEUS_BIND: Annotated[str | None, Sets("telemetry.prometheus_bind")] = None
    MAX_CONCURRENT_ACTIVITIES: Annotated[int | None, Sets("worker.max_concurrent_activities")] = None
    MAX_CACHED_WORKFLOWS: Annotated[int | None, Sets("worker.max_cached_workflows")] = None
    MAX_CONCURRENT_WORKFLOW_TASKS: Annotated[int | None, Sets("worker.max_concurrent_workflow_tasks")] = None
    MAX_CONCURRENT_LOCAL_ACTIVITIES: Annotated[int | None, Sets("worker.max_concurrent_local_activities")] = None
    MAX_TASK_POLLERS: Annotated[int | None, Sets("worker.max_task_pollers")] = None
    CACHE_DIR: Annotated[Path | None, Sets("worker.cache_dir")] = None
    DEPLOYMENT_NAME: Annotated[str | None, Sets("worker.deployment_name")] = None
    BUILD_ID: Annotated[str | None, Sets("worker.build_id")] = None
    ALERT_PROVIDERS: Annotated[Path | None, Sets("worker.alert_providers")] = None
    SOPS_AGE_KEYS: Annotated[Path | None, Sets("worker.sops_age_keys")] = None
    PROMETHEUS_URL: Annotated[str | None, Sets("worker.prometheus_url")] = None
    KUBECONFIG: Annotated[Path | None, Sets("kubeconfig")] = None
    CLUSTERS: Annotated[Path | None, Sets("clusters")] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)  # no .env file, no secrets directory: the process environment only

    @classmethod
    def read(cls, env: Mapping[str, str]) -> FerryEnvironment:
        """Parse ``env`` (the process environment, or a test's mapping) without reading anything else."""
        return cls(_build_sources=((_MappingSource(cls, env),), {}))

    def layer(self) -> dict[str, Any]:
        """What was set, as a tree of settings paths."""
        tree: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            _set_path(tree, ENVIRONMENT_VARIABLES[f"FERRY_{name}"], value)
        return tree


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    # NB: pydantic-settings' one hook for where variables come from (its dotenv source overrides it too); pinned in
    # constraints.txt, and tests/unit/test_settings.py reads a mapping through it.
    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _sets(field: FieldInfo) -> str:
    return next(item.path for item in field.metadata if isinstance(item, Sets))


# Every FERRY_* variable and the settings path it sets. docker-compose.yml is checked against this table by
# tests/unit/test_compose.py.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    f"FERRY_{name}": _sets(field) for name, field in FerryEnvironment.model_fields.items()
}


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class SettingsInvalid(ValueError):
    """A setting that cannot be what it says (a FERRY_* variable, a flag, devstack.json), named with its source."""


def _shown(variable: str, env: Mapping[str, str]) -> str:
    return repr(str(env[variable])[:40])


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
        # the worker's own least-privilege identity (examples/rbac/ferry-worker.yaml), not the admin's.
        layer["kubeconfig"] = kube.get("worker_kubeconfig") or kube["kubeconfig"]
    if kube.get("clusters"):
        layer["clusters"] = kube["clusters"]  # `ferry dev up` writes one: default = the worker's kubeconfig
    layer["worker"] = {"cache_dir": str(state_dir / "cache")}
    return layer


def temporal_envconfig_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """What Temporal's standard env vars / profile file say, if anything."""
    if not any(key.startswith("TEMPORAL_") for key in env):
        return {}
    # the profile, not load_client_connect_config: certificate files are read (and a wrong path reported,
    # naming the setting) when connecting, not while loading settings.
    profile = ClientConfigProfile.load(profile=env.get("TEMPORAL_PROFILE"), override_env_vars=dict(env))
    layer: dict[str, Any] = {}
    if profile.address:
        layer["address"] = profile.address
    if profile.namespace:
        layer["namespace"] = profile.namespace
    if profile.api_key:
        layer["api_key"] = profile.api_key
        layer["tls"] = True  # as temporalio.envconfig does: an API key implies TLS unless disabled
    tls = profile.tls
    if tls is not None and tls.disabled is not True:
        layer["tls"] = True
        if tls.server_name:
            layer["tls_server_name"] = tls.server_name
        for source, path_field, pem_field in (
            (tls.client_cert, "tls_cert", "tls_cert_pem"),
            (tls.client_private_key, "tls_key", "tls_key_pem"),
            (tls.server_root_ca_cert, "tls_ca", "tls_ca_pem"),
        ):
            if isinstance(source, Path):
                layer[path_field] = str(source)
            elif source is not None:
                layer[pem_field] = source.decode() if isinstance(source, bytes) else source
    elif tls is not None:
        layer["tls"] = False
    return {"temporal": layer} if layer else {}


def _environment(env: Mapping[str, str]) -> FerryEnvironment:
    try:
        return FerryEnvironment.read(env)
    except pydantic.ValidationError as err:
        problem = err.errors()[0]
        variable = f"FERRY_{problem['loc'][0]}"
        if problem["type"] == _NOT_A_BOOLEAN:
            raise SettingsInvalid(
                f"{variable}={_shown(variable, env)} is not a boolean (one of {', '.join(_BOOLEANS)})"
            ) from None
        raise SettingsInvalid(
            f"setting {ENVIRONMENT_VARIABLES[variable]} ({variable}={_shown(variable, env)}): {problem['msg']}"
        ) from None


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None, state_dir: Path | None = None
) -> Settings:
    """Build the settings from every layer. ``overrides`` are dotted paths from command-line flags."""
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    ferry_env = _environment(env)
    state = Path(overrides.get("state_dir") or state_dir or ferry_env.STATE_DIR or ".ferry")
    tree: dict[str, Any] = {"state_dir": str(state)}
    tree = _deep_merge(tree, devstack_layer(state))
    tree = _deep_merge(tree, temporal_envconfig_layer(env))
    tree = _deep_merge(tree, ferry_env.layer())
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
        named = [name for name, dotted in ENVIRONMENT_VARIABLES.items() if dotted == path and env.get(name)]
        source = f" ({named[0]}={_shown(named[0], env)})" if named else ""
        raise SettingsInvalid(f"setting {path}{source}: {problem['msg']}") from None
