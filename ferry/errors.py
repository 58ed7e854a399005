"""The error taxonomy: every failure an adapter can see is classified here, once.

Adapters (activities/) raise ``ApplicationError(type=<ErrorType>, non_retryable=...)`` using
:func:`is_retryable`; workflows match on the ``type`` string. The reason column is the contract.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ValidationError


class ErrorType(StrEnum):
    # --- non-retryable: retrying cannot change the answer --------------------------------------
    BAD_INPUT = "BadInput"  # the request itself is malformed (400, 422, validation)
    NOT_FOUND = "NotFound"  # the repository, tag, digest or object does not exist (404)
    UNAUTHORIZED = "Unauthorized"  # credentials missing or refused (401/403): a person must fix them
    CONFLICT = "Conflict"  # optimistic-concurrency or field-ownership conflict that force did not resolve
    IMMUTABLE_FIELD = "ImmutableField"  # Kubernetes refuses to change e.g. a selector: needs replace
    VERSION_ALREADY_RELEASED = "VersionAlreadyReleased"  # the tag exists with other content
    DIGEST_MISMATCH = "DigestMismatch"  # the registry serves bytes that do not hash to the digest
    UNSAFE_ARCHIVE = "UnsafeArchive"  # absolute paths, '..', links out of the tree, oversized entries
    RENDER_FAILED = "RenderFailed"  # kustomize or YAML parse failure inside an artifact
    VERIFICATION_FAILED = "VerificationFailed"  # unsigned, unknown key, bad signature, signed for another digest
    FORBIDDEN = "Forbidden"  # the API server's 403 for the identity ferry writes as (worker or service account)
    OUT_OF_BOUNDS = "OutOfBounds"  # an object outside the environment's namespaces / cluster-kinds: fix the bundle
    UNKNOWN_CLUSTER = "UnknownCluster"  # the spec names a cluster the worker's clusters file does not list
    AUTH_PLUGIN_REFUSED = "AuthPluginRefused"  # a kubeconfig exec/auth-provider plugin its cluster entry forbids
    DECISION_REFUSED = "DecisionRefused"  # an approval or rejection refused by the gate (unsigned, not an approver)
    DELIVERY_REFUSED = "DeliveryRefused"  # an alert provider answered 4xx (not 408/429): the payload or URL is wrong
    PROVIDER_UNKNOWN = "ProviderUnknown"  # an alert names a provider the worker's providers file does not define
    PROVIDERS_FILE_INVALID = "ProvidersFileInvalid"  # the worker's alert providers file does not parse
    HOOK_FAILED = (
        "HookFailed"  # a chart's Helm hook (a pre-install Job) failed or timed out: the release is not applied
    )
    DECRYPTION_FAILED = "DecryptionFailed"  # a release's SOPS file the worker cannot or will not decrypt
    BAD_QUERY = "BadQuery"  # Prometheus refused an analysis query (it does not parse): the spec must change
    ROLLOUT_REFUSED = "RolloutRefused"  # a rollout's workload is missing or not the environment's own
    # --- retryable: the world may be different in a moment -------------------------------------
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # connection refused, timeout, 429, 5xx
    CLUSTER_UNAVAILABLE = "ClusterUnavailable"  # API server unreachable, timeout, 429, 5xx
    BUNDLE_SOURCE_GONE = "BundleSourceGone"  # the CI host's directory vanished (retry until deadline)
    RECEIVER_UNAVAILABLE = "ReceiverUnavailable"  # an alert receiver is down or busy (refused, timeout, 429, 5xx)
    LEASE_HELD = "LeaseHeld"  # another reconcile of the environment holds its lease: retry once it ends or expires
    METRICS_UNAVAILABLE = "MetricsUnavailable"  # Prometheus unreachable, timeout, 429, 5xx: an analysis waits, bounded


NON_RETRYABLE: frozenset[ErrorType] = frozenset(
    {
        ErrorType.BAD_INPUT,
        ErrorType.NOT_FOUND,
        ErrorType.UNAUTHORIZED,
        ErrorType.CONFLICT,
        ErrorType.IMMUTABLE_FIELD,
        ErrorType.VERSION_ALREADY_RELEASED,
        ErrorType.DIGEST_MISMATCH,
        ErrorType.UNSAFE_ARCHIVE,
        ErrorType.RENDER_FAILED,
        ErrorType.VERIFICATION_FAILED,
        ErrorType.FORBIDDEN,
        ErrorType.HOOK_FAILED,
        ErrorType.DECRYPTION_FAILED,
        ErrorType.BAD_QUERY,
        ErrorType.ROLLOUT_REFUSED,
        ErrorType.OUT_OF_BOUNDS,
        ErrorType.UNKNOWN_CLUSTER,
        ErrorType.AUTH_PLUGIN_REFUSED,
        ErrorType.DECISION_REFUSED,
        ErrorType.DELIVERY_REFUSED,
        ErrorType.PROVIDER_UNKNOWN,
        ErrorType.PROVIDERS_FILE_INVALID,
    }
)

# Temporal payloads are limited to 2 MiB; an error message never needs more than a few KiB.
MAX_ERROR_MESSAGE = 4096


def is_retryable(error_type: ErrorType) -> bool:
    return error_type not in NON_RETRYABLE


def classify_http_status(status: int, *, unavailable: ErrorType) -> ErrorType:
    """Map an HTTP status from a registry or API server to the taxonomy."""
    if status in (401, 403):
        return ErrorType.UNAUTHORIZED
    if status == 404:
        return ErrorType.NOT_FOUND
    if status == 409:
        return ErrorType.CONFLICT
    if status in (400, 405, 413, 415, 422):
        return ErrorType.BAD_INPUT
    if status == 429 or status == 408 or status >= 500:
        return unavailable
    return ErrorType.BAD_INPUT


def truncate(message: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 20] + " …[truncated]"


def validation_message(err: ValidationError, subject: str = "") -> str:
    """A pydantic ValidationError in one line, as people read it: 'where.it.is: what is wrong' of its first error
    (`subject` names the whole input when the error has no location)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or subject
    return f"{where}: {first['msg']}" if where else str(first["msg"])
