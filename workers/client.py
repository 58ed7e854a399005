"""The Temporal client factory: pydantic data converter, OpenTelemetry, settings-driven connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from workers.settings import TemporalSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.runtime import Runtime


class TemporalUnavailable(RuntimeError):
    """The Temporal frontend could not be reached; the message names the address and the fix."""


async def connect(
    settings: TemporalSettings,
    *,
    tracer: TracerProvider | None = None,
    identity: str | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """A client; `identity` is what Temporal records on every request (the audit shows it next to approvers)."""
    interceptors: list[Interceptor] = []
    if tracer is not None:
        # imported only when tracing: OpenTelemetry and the SDK's worker modules cost a CLI command ~0.2 s
        from workers.telemetry import tracing_interceptor

        interceptor = tracing_interceptor(tracer)
        if interceptor is not None:
            interceptors.append(interceptor)
    tls = tls_config(settings)
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=tls,
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


class TLSSettingsError(TemporalUnavailable):
    """A TLS file named in settings cannot be read; the message is one line naming the setting."""


# (settings field, its FERRY_* variable, the PEM-data field a Temporal profile may set instead)
_TLS_FILES = (
    ("tls_cert", "FERRY_TEMPORAL_TLS_CERT", "tls_cert_pem"),
    ("tls_key", "FERRY_TEMPORAL_TLS_KEY", "tls_key_pem"),
    ("tls_ca", "FERRY_TEMPORAL_TLS_CA", "tls_ca_pem"),
)
MAX_PEM_FILE = 1024 * 1024


def _pem(settings: TemporalSettings, field: str, variable: str, pem_field: str) -> bytes | None:
    path = getattr(settings, field)
    if path is None:
        inline = getattr(settings, pem_field)
        if inline is None:
            return None
        return (inline.get_secret_value() if isinstance(inline, SecretStr) else str(inline)).encode()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_FILE + 1)
    except OSError as err:
        raise TLSSettingsError(f"{variable} ({field}): cannot read {path}: {err.strerror}") from None
    if len(data) > MAX_PEM_FILE or b"-----BEGIN " not in data:
        raise TLSSettingsError(f"{variable} ({field}): {path} is not a PEM file")
    return data


def tls_config(settings: TemporalSettings) -> bool | TLSConfig:
    """What Client.connect gets for ``tls``: False, True (system roots), or a TLSConfig carrying the client
    certificate, key, server CA and server name read from the files the settings name (mTLS)."""
    if not settings.uses_tls:
        return False
    cert, key, ca = (_pem(settings, *names) for names in _TLS_FILES)
    if (cert is None) != (key is None):
        raise TLSSettingsError(
            "FERRY_TEMPORAL_TLS_CERT and FERRY_TEMPORAL_TLS_KEY go together (mTLS needs the "
            "client certificate and its key)"
        )
    if cert is None and ca is None and settings.tls_server_name is None:
        return True
    return TLSConfig(server_root_ca_cert=ca, domain=settings.tls_server_name, client_cert=cert, client_private_key=key)


def workflow_url(settings: TemporalSettings, workflow_id: str, run_id: str | None = None) -> str:
    """The Temporal Web UI page of a workflow."""
    from urllib.parse import quote

    namespace, wid = quote(settings.namespace, safe=""), quote(workflow_id, safe="")
    base = f"{settings.ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{wid}"
    return f"{base}/{run_id}/history" if run_id else base
