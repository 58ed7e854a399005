"""Settings models: what a Ferry process can be configured with, and the documented defaults.

Loading (files, environment, flags) lives in workers/settings.py; this module only describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_TASK_QUEUE = "ferry"
MAX_URL = 2048


def http_url(value: str, what: str) -> str:
    """An http(s) URL with a host, no credentials, no query or fragment (a base URL Ferry appends paths to), without
    its trailing slash; ValueError naming `what` otherwise."""
    shown = repr(value[:80])
    if len(value) > MAX_URL:
        raise ValueError(f"{what} is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as err:
        raise ValueError(f"{what} {shown} is not a URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {shown} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not carry credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} {shown} must have no query or fragment")
    return value.rstrip("/")


# The worker's FERRY_PROMETHEUS_URL and a clusters-file entry's `prometheus`
PrometheusUrl = Annotated[str, AfterValidator(lambda value: http_url(value, "the Prometheus URL"))]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TemporalSettings(_Settings):
    address: str = Field("127.0.0.1:7233", description="host:port of the Temporal frontend")
    namespace: str = "default"
    tls: bool = Field(False, description="TLS to the frontend (implied by any tls_* setting below)")
    tls_cert: Path | None = Field(None, description="client certificate (PEM) for mTLS")
    tls_key: Path | None = Field(None, description="the client certificate's private key (PEM)")
    tls_ca: Path | None = Field(
        None, description="CA (PEM) the server's certificate must chain to; default: the system's roots"
    )
    tls_server_name: str | None = Field(None, description="the name the server's certificate must carry (SNI)")
    # set only from a Temporal environment-configuration profile that inlines the PEM data.
    tls_cert_pem: str | None = None
    tls_key_pem: SecretStr | None = None
    tls_ca_pem: str | None = None
    api_key: SecretStr | None = None
    ui_url: str = Field("http://127.0.0.1:8233", description="used to print links to workflow pages")
    task_queue: str = DEFAULT_TASK_QUEUE

    @field_validator("task_queue")
    @classmethod
    def _not_a_ci_queue(cls, value: str) -> str:
        if value.startswith("ferry-ci"):
            raise ValueError(f"task queue {value!r}: names starting with ferry-ci are the CI hosts' own queues")
        return value

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(
            v is not None
            for v in (
                self.tls_cert,
                self.tls_key,
                self.tls_ca,
                self.tls_server_name,
                self.tls_cert_pem,
                self.tls_key_pem,
                self.tls_ca_pem,
            )
        )


class RegistrySettings(_Settings):
    default: str | None = Field(None, description="host:port used when a command names no registry")
    insecure_hosts: list[str] = Field(
        default_factory=list, description="registry hosts spoken to over plain http (the local stack's)"
    )
    username: str | None = Field(None, description="with password: credentials for credentials_host only")
    password: SecretStr | None = None
    credentials_host: str | None = Field(
        None,
        description="the one registry host username/password are for (default: the default registry); "
        "no other host ever receives them",
    )
    docker_config: Path | None = Field(
        None,
        description="docker config.json: 'auths', 'credHelpers', 'credsStore', each entry for its own host "
        "(default $DOCKER_CONFIG/config.json, else ~/.docker/config.json)",
    )
    request_timeout_seconds: float = Field(30.0, description="per HTTP request; Temporal owns retries")
    max_download_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="largest artifact layer a worker downloads (checked against the manifest before reading)",
    )

    @model_validator(mode="after")
    def _credentials_have_a_host(self) -> RegistrySettings:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "registry username and password go together (FERRY_REGISTRY_USERNAME and FERRY_REGISTRY_PASSWORD)"
            )
        if self.username is not None and self.credentials_for is None:
            raise ValueError(
                "registry username/password are for one host: set FERRY_REGISTRY_CREDENTIALS_HOST "
                "(or FERRY_REGISTRY); use a docker config for several hosts"
            )
        return self

    @property
    def credentials_for(self) -> str | None:
        return self.credentials_host or self.default


class TelemetrySettings(_Settings):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = Field(None, description="e.g. http://collector:4318/v1/traces")
    service_name: str = "ferry"
    prometheus_bind: str | None = Field(
        None, description="serve the worker's metrics (Temporal SDK + ferry_*) for Prometheus, e.g. 0.0.0.0:9464"
    )


class WorkerSettings(_Settings):
    # oras-py and the kubernetes client are blocking, so activities are sync and run in a
    # thread pool; the pool is sized to max_concurrent_activities so no activity waits for a thread.
    max_concurrent_activities: int = Field(16, ge=1, le=512)
    # Fleet tuning (README "Capacity"; bench/fleet.py measures it). The sticky cache holds each environment's
    # workflow in memory between its iterations; an environment evicted from it is replayed from its whole history
    # at its next iteration (CPU, and a history fetch from the server). The cache is LRU and environments come round
    # in a cycle, so one workflow too many makes every task miss (ferry/capacity.py, measured): size it to the
    # workflows one worker may serve (environments, promotions, the alert router) plus ~10 %. The default holds a
    # fleet of 10,000 with that headroom; the worker's cache watch warns when its queue outgrows it.
    max_cached_workflows: int = Field(12_000, ge=0, le=1_000_000, description="sticky cache size (workflows)")
    # Workflow tasks are short Python (no I/O: that is in activities) under one GIL: more slots than this only queue.
    max_concurrent_workflow_tasks: int = Field(32, ge=2, le=1000)
    # Each iteration's no-op check is a local activity run in the activity thread pool.
    max_concurrent_local_activities: int = Field(16, ge=1, le=512)
    # Pollers scale with the backlog (Temporal's autoscaling poller behaviour) between these bounds.
    max_task_pollers: int = Field(20, ge=2, le=200, description="per kind (workflow, activity) at most")
    cache_dir: Path = Field(Path(".ferry/cache"), description="content-addressed artifact cache")
    # NB: Worker Versioning is off unless a deployment is named: a versioned worker only gets tasks once its
    # version is made current (`temporal worker deployment set-current-version`), which the local stack and the
    # tests do not do.
    deployment_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "Worker Versioning: the worker deployment this worker belongs to (e.g. 'ferry'); unset = unversioned"
        ),
    )
    build_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "Worker Versioning: this build's id (default: ferry's package version + the git commit it runs from)"
        ),
    )
    alert_providers: Path | None = Field(
        None,
        description="the alert providers file (URLs, tokens, HMAC keys): "
        "read by the worker at each delivery, never sent anywhere else",
    )
    sops_age_keys: Path | None = Field(
        None,
        description="age identities (a 0600 file, or a directory of them) that SOPS files of environments with "
        "`decryption: {provider: sops}` are decrypted with, unless their clusters-file entry names others",
    )
    prometheus_url: PrometheusUrl | None = Field(
        None,
        description="the Prometheus (http(s) URL) rollout analysis queries on clusters whose clusters-file entry "
        "names no `prometheus`",
    )


class Settings(_Settings):
    state_dir: Path = Path(".ferry")
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    kubeconfig: Path | None = Field(
        None,
        description="the `default` cluster's kubeconfig when the clusters file "
        "lists no `default` (or there is no clusters file)",
    )
    clusters: Path | None = Field(
        None,
        description="the worker's clusters file: name -> kubeconfig, context, "
        "allow-auth (docs/tenancy.md); environments name a cluster of it",
    )
