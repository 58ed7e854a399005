"""The Temporal client factory: pydantic data converter, OpenTelemetry, settings-driven connection."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from workers.settings import TemporalSettings
from workers.telemetry import tracing_interceptor


class TemporalUnavailable(RuntimeError):
    """The Temporal frontend could not be reached; the message names the address and the fix."""


async def connect(settings: TemporalSettings, *, tracer: TracerProvider | None = None,
                  identity: str | None = None, runtime: Runtime | None = None) -> Client:
    """A client; `identity` is what Temporal records on every request (the audit shows it next to approvers)."""
    interceptors: list[Interceptor] = []
    interceptor = tracing_interceptor(tracer)
    if interceptor is not None:
        interceptors.append(interceptor)
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=settings.tls,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            data_converter=pydantic_data_converter,
            interceptors=interceptors,
            identity=identity,
            runtime=runtime,
        )
    except RuntimeError as err:
        raise TemporalUnavailable(
            f"temporal: cannot connect to {settings.address} (namespace {settings.namespace}): {err}. "
            "Start the local stack with `ferry dev up`, or set FERRY_TEMPORAL_ADDRESS / TEMPORAL_ADDRESS."
        ) from err


def workflow_url(settings: TemporalSettings, workflow_id: str, run_id: str | None = None) -> str:
    """The Temporal Web UI page of a workflow."""
    from urllib.parse import quote

    namespace, wid = quote(settings.namespace, safe=""), quote(workflow_id, safe="")
    base = f"{settings.ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{wid}"
    return f"{base}/{run_id}/history" if run_id else base
