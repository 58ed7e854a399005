"""What PromotionWorkflow and RollbackWorkflow share: read an environment's status, resolve a released version,
and wait until a pin they sent lands applied and healthy (or is overtaken)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.approvals import SignedDecision
    from ferry.artifacts import FetchManifestInput, ResolveTagInput
    from ferry.cosign import VerifyArtifactInput, VerifyArtifactResult
    from ferry.environment import (
        EnvironmentStatus,
        LenientPayload,
        PinKind,
        PinOutcome,
        PinRequest,
        first_payload,
    )
    from ferry.names import Memo, Signal
    from ferry.oci import ANNOTATION_PUBLISHED_BY
    from ferry.pins import Verdict, status_verdict
    from ferry.promotion import EnvironmentStatusInput
    from ferry.spec import VerifyPolicy, env_workflow_id
    from ferry.times import timestamp
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.failures import cause_message, cause_type, raise_if_cancelled
    from workflows.patches import (
        OUTCOME_CONFIRMED,
        PIN_ACKNOWLEDGED,
        PIN_OUTCOME_SIGNAL,
        PIN_POLL_BACKOFF,
        STATUS_READ_ON_RECORD,
    )

def record_cancelled(details: str) -> None:
    """The memo says Cancelled, with when and in which state, so the audit reads it from history alone."""
    workflow.upsert_memo({Memo.OUTCOME: {"outcome": "cancelled", "at": timestamp(workflow.now()),
                                         "reason": (workflow.cancellation_reason() or "")[:200],
                                         "details": details[:500]}})


def record_refused_outcome(request_id: str, reason: str) -> None:
    """An answer this run did not take, in history (memo) for the audit: who sent it is on the signal's event."""
    workflow.upsert_memo({Memo.OUTCOME_REFUSED: {"request_id": request_id[:300], "at": timestamp(workflow.now()),
                                                 "reason": reason[:500]}})


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
            stubs.environment_status, EnvironmentStatusInput(environment=name),
            start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT, retry_policy=policies.STATUS_READ_RETRY)
    except ActivityError as err:
        raise_if_cancelled(err)
        if not workflow.patched(STATUS_READ_ON_RECORD):
            raise
        raise StatusUnreadable(f"the status of {name} could not be read: {cause_type(err)}: "
                               f"{cause_message(err)}") from err


async def resolve_release(repository: str, version: str, verify: VerifyPolicy | None = None) -> tuple[str, str]:
    """-> (digest, publisher) of a released version; NotFound fails the caller. With a verify policy the
    publisher is the one the release's verified signature attests (VerificationFailed fails the caller);
    otherwise it is the manifest's annotation, a claim."""
    ref = await workflow.execute_activity(
        stubs.resolve_tag, ResolveTagInput(repository=repository, tag=version),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT, retry_policy=policies.QUICK_RETRY)
    assert ref.digest is not None
    if verify is not None:
        return ref.digest, (await verify_release(repository, ref.digest, verify)).publisher
    manifest = await workflow.execute_activity(
        stubs.fetch_manifest, FetchManifestInput(repository=repository, reference=ref.digest),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT, retry_policy=policies.QUICK_RETRY)
    return ref.digest, manifest.annotations.get(ANNOTATION_PUBLISHED_BY, "")


async def verify_release(repository: str, digest: str, verify: VerifyPolicy) -> VerifyArtifactResult:
    """The release's cosign signature, checked against the environment's publisher keys (on the worker)."""
    return await workflow.execute_activity(
        stubs.verify_artifact, VerifyArtifactInput(repository=repository, digest=digest, publishers=verify.publishers),
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT, retry_policy=policies.QUICK_RETRY)


def _acknowledged_pins() -> bool:
    """Patched: a pin carries this run's own id and its repository, and the sender waits for the environment to
    answer it (Pinned or PinRefused). Older histories used the bare workflow id and judged the first status."""
    return workflow.patched(PIN_ACKNOWLEDGED)


def pin_request_id() -> str:
    """Identifies this run's pin in the environment's state and events (a later run with the same business key,
    e.g. a second promotion of the same version, must not take the first one's Pinned event for its own)."""
    info = workflow.info()
    return f"{info.workflow_id}@{info.run_id}" if _acknowledged_pins() else info.workflow_id


async def send_pin(environment: str, repository: str, version: str, digest: str, *, by: str, kind: PinKind,
                   reason: str, hold: str | None = None, approvals: list[SignedDecision] | None = None,
                   approved_by: list[str] | None = None, publisher: str = "") -> str:
    """Signal the environment to pin `digest` (resolved in `repository`), with the approvals it rests on (the
    environment re-verifies them against its own spec). -> the request id to await."""
    request_id = pin_request_id()
    request = PinRequest(version=version, digest=digest, by=by[:128], reason=reason[:1024], kind=kind,
                         request_id=request_id, hold=hold, repository=repository, approvals=approvals or [],
                         approved_by=approved_by or [], publisher=publisher)
    await workflow.get_external_workflow_handle(env_workflow_id(environment)).signal(
        "pin", LenientPayload(request.model_dump()))
    return request_id


class PinOutcomes:
    """Mixed into PromotionWorkflow and RollbackWorkflow: the environment signals the outcome of their pin back
    (`pin_outcome`), so they wait instead of polling its status."""

    _pin_outcomes: dict[str, PinOutcome]

    @workflow.signal(name=Signal.PIN_OUTCOME, description="Sent by the environment: what became of this workflow's pin "
                     '{"request_id", "outcome": succeeded|failed|refused|superseded, "reason", "auto_rolled_back"}')
    def pin_outcome(self, *payloads: object) -> None:
        try:
            outcome = PinOutcome.model_validate(first_payload(payloads).root)
        except pydantic.ValidationError:
            workflow.logger.warning("malformed pin_outcome ignored")
            return
        outcomes = getattr(self, "_pin_outcomes", {})
        outcomes.setdefault(outcome.request_id, outcome)  # NB: the first answer wins; later ones are echoes
        self._pin_outcomes = outcomes

    async def await_pin_outcome(self, environment: str, digest: str, request_id: str, within: timedelta) -> Verdict:
        """Wait until the environment reports `digest` applied and healthy (or refuses, or is overtaken)."""
        if not workflow.patched(PIN_OUTCOME_SIGNAL):
            return await _poll_pin_outcome(environment, digest, request_id, within)
        self._pin_outcomes = getattr(self, "_pin_outcomes", {})
        deadline = workflow.now() + within
        acknowledged = False
        while workflow.now() < deadline:
            try:
                await workflow.wait_condition(lambda: request_id in self._pin_outcomes,
                                              timeout=min(policies.PIN_OUTCOME_BACKSTOP, deadline - workflow.now()),
                                              timeout_summary="the environment's answer (then a backstop check)")
            except TimeoutError:
                pass
            answer = self._pin_outcomes.get(request_id)
            if answer is not None and workflow.patched(OUTCOME_CONFIRMED):
                # NB: anyone may signal pin_outcome (its request id is in history): an answer is taken only when
                # the environment's own status says the same of this pin (this request's pin, applied and healthy,
                # failed, refused or overtaken); one it does not say is refused on the record
                try:
                    state = (await environment_status(environment)).state
                except StatusUnreadable:
                    continue  # NB: the answer waits until the status can be read (or the deadline passes)
                verdict, acknowledged = status_verdict(state, digest, request_id, acknowledged)
                if verdict is not None and verdict[0] == answer.outcome:
                    return answer.outcome, answer.reason, answer.auto_rolled_back
                del self._pin_outcomes[request_id]
                workflow.logger.warning("pin_outcome %r for %s refused: %s's status does not say so",
                                        answer.outcome, request_id, environment)
                record_refused_outcome(request_id, f"a pin_outcome said {answer.outcome}, but {environment}'s "
                                       f"status does not show that of this pin ({digest})")
                if verdict is not None:
                    return verdict
                continue
            if answer is not None:
                return answer.outcome, answer.reason, answer.auto_rolled_back
            # NB: a backstop, rarely reached: an environment on an older build does not answer by signal
            try:
                state = (await environment_status(environment)).state
            except (ActivityError, StatusUnreadable) as err:
                raise_if_cancelled(err)
                continue  # the environment's worker may be restarting: it answers, or we ask again later
            verdict, acknowledged = status_verdict(state, digest, request_id, acknowledged)
            if verdict is not None:
                return verdict
        return "failed", f"not healthy within {within}", False


async def _poll_pin_outcome(environment: str, digest: str, request_id: str, within: timedelta) -> Verdict:
    """Histories from before ferry-pin-outcome-signal: poll the environment's status with backoff."""
    deadline = workflow.now() + within
    # NB: the pin is a signal; until the environment has handled it (a worker restart can delay that by the
    # sticky-queue timeout and more), its status still shows the previous pin, which is not "superseded".
    acknowledged = not _acknowledged_pins()
    backoff = workflow.patched(PIN_POLL_BACKOFF)  # patched: older histories polled every PIN_POLL
    delay = policies.PIN_POLL
    while workflow.now() < deadline:
        await workflow.sleep(delay)
        if backoff:
            delay = min(delay * 2, policies.PIN_MAX_POLL)
        state = (await environment_status(environment)).state
        verdict, acknowledged = status_verdict(state, digest, request_id, acknowledged)
        if verdict is not None:
            return verdict
    return "failed", f"not healthy within {within}", False
