"""OpenTelemetry tracing for clients and workers, exporter chosen by settings; Prometheus metrics for workers."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workers.settings import TelemetrySettings


def tracer_provider(settings: TelemetrySettings, *, extra: SpanProcessor | None = None) -> TracerProvider | None:
    """A provider for the configured exporter, or None when tracing is off and nothing else asks for it."""
    if settings.exporter == "none" and extra is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.exporter == "otlp":
        # Imported lazily: the OTLP exporter pulls in protobuf, which only OTLP users need at start-up.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if extra is not None:
        provider.add_span_processor(extra)
    return provider


def tracing_interceptor(provider: TracerProvider | None) -> TracingInterceptor | None:
    if provider is None:
        return None
    # always_create_workflow_spans so runs started from the Temporal UI or `temporal` CLI (no client
    # span to hang off) are traced too.
    return TracingInterceptor(provider.get_tracer("ferry"), always_create_workflow_spans=True)


class MetricsUnavailable(RuntimeError):
    """The worker's Prometheus endpoint could not be served; the message names the setting and the fix."""


def metrics_runtime(settings: TelemetrySettings) -> Runtime | None:
    """A Temporal runtime serving /metrics for Prometheus: the SDK's own worker metrics (task latencies, slots,
    failures) and the counters Ferry's workflows emit (ferry_environment_events, ferry_promotion_decisions)."""
    if not settings.prometheus_bind:
        return None
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.prometheus_bind)))
    except ValueError as err:  # the SDK's own words: invalid address, address already in use
        raise MetricsUnavailable(
            f"metrics: cannot serve Prometheus on {settings.prometheus_bind!r}: {err}; set "
            "FERRY_PROMETHEUS_BIND to a free host:port, or unset it"
        ) from err
