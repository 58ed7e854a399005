"""The OCI registry adapter, over oras-py. The only package that imports oras.

Contract for every activity here:
- one pydantic model in, one out; credentials are never inputs (read from worker settings / docker config);
- oras-py's own retry loop (5 tries, ~131 s of sleeps) and urllib3 retries are off; every HTTP request has
  a timeout, so a failure surfaces at once and Temporal's retry policy decides;
- failures are raised as ``ApplicationError`` typed by ``ferry.errors.ErrorType``: Unauthorized, NotFound,
  BadInput, DigestMismatch are non-retryable; RegistryUnavailable (connection refused, timeout, 429, 5xx)
  is retryable.
"""

from activities.registry.artifacts import MAX_MANIFEST_BYTES, RegistryActivities
from activities.registry.charts import ChartRegistry
from activities.registry.client import MANIFEST_ACCEPT
from activities.registry.credentials import MAX_DOCKER_CONFIG, Registries, normalize_auth_key
from activities.registry.signatures import (
    MAX_SIGNATURE_BLOB,
    MAX_SIGNATURE_LAYERS,
    MAX_SIGNATURE_MANIFEST,
    SignatureActivities,
)

__all__ = [
    "MANIFEST_ACCEPT",
    "MAX_DOCKER_CONFIG",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_BLOB",
    "MAX_SIGNATURE_LAYERS",
    "MAX_SIGNATURE_MANIFEST",
    "ChartRegistry",
    "Registries",
    "RegistryActivities",
    "SignatureActivities",
    "normalize_auth_key",
]
