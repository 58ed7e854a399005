"""What promotions and rollbacks read through activities: another environment's status, and a released version
(its digest, its publisher, its verified signature). The environment verifies its own artifacts with the same
verify_release."""

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ferry.artifacts import FetchManifestInput, ResolveTagInput
    from ferry.cosign import VerifyArtifactInput, VerifyArtifactResult
    from ferry.environment import EnvironmentStatus
    from ferry.oci import ANNOTATION_PUBLISHED_BY
    from ferry.promotion import EnvironmentStatusInput
    from ferry.spec import VerifyPolicy
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.failures import cause_message, cause_type, raise_if_cancelled
    from workflows.patches import STATUS_READ_ON_RECORD


class StatusUnreadable(ApplicationError):
    """An environment's status could not be read within STATUS_READ_RETRY: the caller ends on the record (one that
    does not, fails the run as an unreadable status always did)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="StatusUnreadable", non_retryable=True)


async def environment_status(name: str) -> EnvironmentStatus:
    """Another environment's status (a query through the worker's client), retried with backoff for minutes: a
    worker restart or a busy environment must not end a promotion or rollback. Raises StatusUnreadable when it
    still fails (NotFound at once), or the cancellation when the run is cancelled."""
    try:
        return await workflow.execute_activity(
            stubs.environment_status,
            EnvironmentStatusInput(environment=name),
            start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT,
            retry_policy=policies.STATUS_READ_RETRY,
        )
    except ActivityError as err:
        raise_if_cancelled(err)
        if not workflow.patched(STATUS_READ_ON_RECORD):
            raise
        raise StatusUnreadable(
            f"the status of {name} could not be read: {cause_type(err)}: {cause_message(err)}"
        ) from err


async def resolve_release(repository: str, version: str, verify: VerifyPolicy | None = None) -> tuple[str, str]:
    """-> (digest, publisher) of a released version; NotFound fails the caller. With a verify policy the
    publisher is the one the release's verified signature attests (VerificationFailed fails the caller);
    otherwise it is the manifest's annotation, a claim."""
    ref = await workflow.execute_activity(
        stubs.resolve_tag,
        ResolveTagInput(repository=repository, tag=version),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT,
        retry_policy=policies.QUICK_RETRY,
    )
    assert ref.digest is not None
    if verify is not None:
        return ref.digest, (await verify_release(repository, ref.digest, verify)).publisher
    manifest = await workflow.execute_activity(
        stubs.fetch_manifest,
        FetchManifestInput(repository=repository, reference=ref.digest),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT,
        retry_policy=policies.QUICK_RETRY,
    )
    return ref.digest, manifest.annotations.get(ANNOTATION_PUBLISHED_BY, "")


async def verify_release(repository: str, digest: str, verify: VerifyPolicy) -> VerifyArtifactResult:
    """The release's cosign signature, checked against the environment's publisher keys (on the worker)."""
    return await workflow.execute_activity(
        stubs.verify_artifact,
        VerifyArtifactInput(repository=repository, digest=digest, publishers=verify.publishers),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT,
        retry_policy=policies.QUICK_RETRY,
    )
