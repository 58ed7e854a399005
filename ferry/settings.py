"""Settings models: what a Ferry process can be configured with, and the documented defaults.

Loading (files, environment, flags) lives in workers/settings.py; this module only describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_TASK_QUEUE = "ferry"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TemporalSettings(_Settings):
    address: str = Field("127.0.0.1:7233", description="host:port of the Temporal frontend")
    namespace: str = "default"
    tls: bool = False
    api_key: SecretStr | None = None
    ui_url: str = Field("http://127.0.0.1:8233", description="used to print links to workflow pages")
    task_queue: str = DEFAULT_TASK_QUEUE


class RegistrySettings(_Settings):
    default: str | None = Field(None, description="host:port used when a command names no registry")
    insecure_hosts: list[str] = Field(
        default_factory=list, description="registry hosts spoken to over plain http (the local stack's)"
    )
    username: str | None = None
    password: SecretStr | None = None
    docker_config: Path | None = Field(
        None, description="docker config.json with 'auths' (default ~/.docker/config.json)"
    )
    request_timeout_seconds: float = Field(30.0, description="per HTTP request; Temporal owns retries")


class TelemetrySettings(_Settings):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = Field(None, description="e.g. http://collector:4318/v1/traces")
    service_name: str = "ferry"
    prometheus_bind: str | None = Field(
        None, description="serve the worker's metrics (Temporal SDK + ferry_*) for Prometheus, e.g. 0.0.0.0:9464")


class WorkerSettings(_Settings):
    # NB: oras-py and the kubernetes client are blocking, so activities are sync and run in a
    # thread pool; the pool is sized to max_concurrent_activities so no activity waits for a thread.
    max_concurrent_activities: int = Field(16, ge=1, le=512)
    cache_dir: Path = Field(Path(".ferry/cache"), description="content-addressed artifact cache")


class Settings(_Settings):
    state_dir: Path = Path(".ferry")
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    kubeconfig: Path | None = Field(None, description="default kubeconfig for environments that name none")
