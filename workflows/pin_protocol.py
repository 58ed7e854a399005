"""The pin protocol, both ends. A promotion or rollback sends `pin` to the environment (send_pin) with its request
id (`workflow id@run id`); the environment gates it (ferry/pins.py) and answers once with `pin_outcome` (succeeded,
failed, refused, superseded); the sender waits for that answer, checks it against the environment's own status,
and falls back to reading that status (await_pin_outcome; older histories polled it).

- sender's end: pin_request_id, send_pin, PinOutcomes (the pin_outcome handler and the wait), mixed into
  PromotionWorkflow and RollbackWorkflow;
- environment's end: EnvironmentPins (the pin handler, the confirmation of a pin that rests on approvals, and the
  answers), mixed into EnvironmentWorkflow.
"""

import asyncio
import re
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.approvals import SignedDecision
    from ferry.environment import LenientPayload, Pin, PinKind, PinOutcome, PinRequest, PinVerdict, first_payload
    from ferry.events import EventType
    from ferry.holds import lifts_hold, takes_hold, with_hold, without_hold
    from ferry.names import Signal
    from ferry.pins import Verdict, approvers, bind_tag, consumed, judge_pin, pin_refusal, status_verdict
    from ferry.promotion import ConfirmPinInput, ConfirmPinResult
    from ferry.reconcile import VersionRef
    from ferry.spec import env_workflow_id
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_events import EnvironmentEvents
    from workflows.failures import cause_message, cause_type, raise_if_cancelled
    from workflows.patches import (
        CONFIRM_BOUNDED,
        GATE_HARDENED,
        HOLD_OF_APPLIED,
        OUTCOME_CONFIRMED,
        PIN_ACKNOWLEDGED,
        PIN_CONFIRMED,
        PIN_OUTCOME_SIGNAL,
        PIN_POLL_BACKOFF,
    )
    from workflows.patches import env_patched as _patched
    from workflows.reads import StatusUnreadable, environment_status
    from workflows.run_memo import record_refused_outcome

# ------------------------------------------------------------------ the wire: request ids

# A request id is `workflow id@run id`: the run the environment answers (a bare workflow id: older senders, which
# read the environment's status instead).
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _acknowledged_pins() -> bool:
    """Patched: a pin carries this run's own id and its repository, and the sender waits for the environment to
    answer it (Pinned or PinRefused). Older histories used the bare workflow id and judged the first status."""
    return workflow.patched(PIN_ACKNOWLEDGED)


def pin_request_id() -> str:
    """Identifies this run's pin in the environment's state and events (a later run with the same business key,
    e.g. a second promotion of the same version, must not take the first one's Pinned event for its own)."""
    info = workflow.info()
    return f"{info.workflow_id}@{info.run_id}" if _acknowledged_pins() else info.workflow_id


# ------------------------------------------------------------------ the sender's end


async def send_pin(
    environment: str,
    repository: str,
    version: str,
    digest: str,
    *,
    by: str,
    kind: PinKind,
    reason: str,
    hold: str | None = None,
    approvals: list[SignedDecision] | None = None,
    approved_by: list[str] | None = None,
    publisher: str = "",
) -> str:
    """Signal the environment to pin `digest` (resolved in `repository`), with the approvals it rests on (the
    environment re-verifies them against its own spec). -> the request id to await."""
    request_id = pin_request_id()
    request = PinRequest(
        version=version,
        digest=digest,
        by=by[:128],
        reason=reason[:1024],
        kind=kind,
        request_id=request_id,
        hold=hold,
        repository=repository,
        approvals=approvals or [],
        approved_by=approved_by or [],
        publisher=publisher,
    )
    await workflow.get_external_workflow_handle(env_workflow_id(environment)).signal(
        Signal.PIN, LenientPayload(request.model_dump())
    )
    return request_id


class PinOutcomes:
    """Mixed into PromotionWorkflow and RollbackWorkflow: the environment signals the outcome of their pin back
    (`pin_outcome`), so they wait instead of polling its status."""

    _pin_outcomes: dict[str, PinOutcome]

    @workflow.signal(
        name=Signal.PIN_OUTCOME,
        description="Sent by the environment: what became of this workflow's pin "
        '{"request_id", "outcome": succeeded|failed|refused|superseded, "reason", "auto_rolled_back"}',
    )
    def pin_outcome(self, *payloads: object) -> None:
        try:
            outcome = PinOutcome.model_validate(first_payload(payloads).root)
        except pydantic.ValidationError:
            workflow.logger.warning("malformed pin_outcome ignored")
            return
        outcomes = getattr(self, "_pin_outcomes", {})
        outcomes.setdefault(outcome.request_id, outcome)  # the first answer wins; later ones are echoes
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
                await workflow.wait_condition(
                    lambda: request_id in self._pin_outcomes,
                    timeout=min(policies.PIN_OUTCOME_BACKSTOP, deadline - workflow.now()),
                    timeout_summary="the environment's answer (then a backstop check)",
                )
            except TimeoutError:
                pass
            answer = self._pin_outcomes.get(request_id)
            if answer is not None and workflow.patched(OUTCOME_CONFIRMED):
                verdict, acknowledged = await self._checked_answer(environment, digest, answer, acknowledged)
                if verdict is not None:
                    return verdict
                continue
            if answer is not None:
                return answer.outcome, answer.reason, answer.auto_rolled_back
            # a backstop, rarely reached: an environment on an older build does not answer by signal
            try:
                state = (await environment_status(environment)).state
            except (ActivityError, StatusUnreadable) as err:
                raise_if_cancelled(err)
                continue  # the environment's worker may be restarting: it answers, or we ask again later
            verdict, acknowledged = status_verdict(state, digest, request_id, acknowledged)
            if verdict is not None:
                return verdict
        return "failed", f"not healthy within {within}", False

    async def _checked_answer(
        self, environment: str, digest: str, answer: PinOutcome, acknowledged: bool
    ) -> tuple[Verdict | None, bool]:
        """-> (the verdict, or None to wait on; acknowledged) for a pin_outcome answer checked against the
        environment's own status."""
        # NB: anyone may signal pin_outcome (its request id is in history): an answer is taken only when
        # the environment's own status says the same of this pin (this request's pin, applied and healthy,
        # failed, refused or overtaken); one it does not say is refused on the record
        request_id = answer.request_id
        try:
            state = (await environment_status(environment)).state
        except StatusUnreadable:
            return None, acknowledged  # the answer waits until the status can be read (or the deadline passes)
        verdict, acknowledged = status_verdict(state, digest, request_id, acknowledged)
        if verdict is not None and verdict[0] == answer.outcome:
            return (answer.outcome, answer.reason, answer.auto_rolled_back), acknowledged
        del self._pin_outcomes[request_id]
        workflow.logger.warning(
            "pin_outcome %r for %s refused: %s's status does not say so", answer.outcome, request_id, environment
        )
        record_refused_outcome(
            request_id,
            f"a pin_outcome said {answer.outcome}, but {environment}'s "
            f"status does not show that of this pin ({digest})",
        )
        return verdict, acknowledged


async def _poll_pin_outcome(environment: str, digest: str, request_id: str, within: timedelta) -> Verdict:
    """Histories from before ferry-pin-outcome-signal: poll the environment's status with backoff."""
    deadline = workflow.now() + within
    # NB: the pin is a signal; until the environment has handled it (a worker restart can delay that by the
    # sticky-queue timeout and more), its status still shows the previous pin, which is not "superseded".
    acknowledged = not _acknowledged_pins()
    backoff = workflow.patched(PIN_POLL_BACKOFF)
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


# ------------------------------------------------------------------ the environment's end

_PIN_FIELDS = {"version", "digest", "by", "reason", "kind", "request_id", "hold"}


class EnvironmentPins(EnvironmentEvents):
    def _answer(
        self, pin: Pin | None, about: VersionRef | None, outcome: PinVerdict, reason: str, rolled_back: bool = False
    ) -> None:
        """Tell the promotion/rollback that sent `pin` what became of it (once; it waits for this instead of
        polling). `about`: only when the outcome concerns the pin's own digest."""
        if pin is None or pin.answered or not pin.request_id or "@" not in pin.request_id:
            return
        if about is not None and about.digest != pin.digest:
            return
        pin.answered = True
        self._signal_back(pin.request_id, outcome, reason, rolled_back)

    def _signal_back(self, request_id: str, outcome: PinVerdict, reason: str, rolled_back: bool = False) -> None:
        if "@" not in request_id or not _patched(PIN_OUTCOME_SIGNAL):
            return
        workflow_id, _, run_id = request_id.partition("@")
        if not workflow_id or not _RUN_ID.fullmatch(run_id):
            # NB: a request id is what a sender claims: the server refuses a signal to a malformed run id when the
            # workflow task completes, and every retry of that task would fail the same way (the environment
            # stopped for good). Such a sender is not a Ferry run: nothing to tell it, the event is the record.
            workflow.logger.warning("pin outcome for %r not sent: not a workflow id@run id", request_id[:300])
            return
        answer = PinOutcome(request_id=request_id, outcome=outcome, reason=reason[:1000], auto_rolled_back=rolled_back)

        async def send() -> None:
            try:
                await workflow.get_external_workflow_handle(workflow_id, run_id=run_id).signal(
                    Signal.PIN_OUTCOME, LenientPayload(answer.model_dump())
                )
            except Exception as err:  # the sender may be gone (finished, terminated): nothing to tell
                workflow.logger.info("pin outcome for %s not delivered: %s", request_id, err)

        # the loop never waits on a sender; a continue-as-new waits for these sends (_continue_as_new)
        self._answers.add(task := asyncio.create_task(send()))
        task.add_done_callback(self._answers.discard)

    @workflow.signal(
        name=Signal.PIN,
        description='Pin to a released version by digest: {"version", "digest", "by", '
        '"kind", "request_id", "approvals": [signed decisions]}. Sent by PromotionWorkflow and '
        "RollbackWorkflow; an approval-required environment refuses a pin its own spec does not approve",
    )
    def pin(self, *payloads: object) -> None:
        """Pin to a version by digest (promotion, rollback). Refusals are recorded, never dropped."""
        payload = first_payload(payloads)
        self._size_check = self._bounded  # a refused pin stays in history: a flood of them must not end the run
        try:
            request = PinRequest.model_validate(payload.root)
        except pydantic.ValidationError as err:
            self._record(
                EventType.PIN_REFUSED, f"malformed pin: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"[:500]
            )
            return
        state = self._state
        verdicts = (
            judge_pin(state, request, workflow.now(), strict=_patched(GATE_HARDENED))
            if state.spec.approval.required
            else []
        )
        refusal = pin_refusal(state, request, verdicts, hardened=lambda: _patched(GATE_HARDENED))
        if refusal:
            event = self._record(
                EventType.PIN_REFUSED,
                f"pin of {request.version} refused: {refusal}",
                by=request.by,
                request_id=request.request_id,
                version=request.version,
            )
            self._signal_back(request.request_id, "refused", event.message)
            return
        previous = state.pin
        self._take_pin(request, approvers(verdicts))
        self._record(
            EventType.PINNED,
            f"pinned to {request.version} ({request.kind}) by {request.by}: {request.reason}",
            version=request.version,
            digest=request.digest,
            by=request.by,
            request_id=request.request_id,
        )
        self._keep_record()  # the used approval and the hold, before a termination can shed them
        self._answer(previous, None, "superseded", f"a newer pin took over ({request.kind} by {request.by})")
        self._wake = True

    def _take_pin(self, request: PinRequest, approved_by: list[str]) -> None:
        """An accepted pin in the state: its approvals used, its tag bound, the holds it lifts or takes."""
        state = self._state
        previous = state.pin
        if approved_by and request.request_id:
            state.consumed_approvals = consumed(
                state.consumed_approvals, request.request_id, limit=policies.MAX_CONSUMED_APPROVALS
            )
        state.tags = bind_tag(state.tags, request.version, request.digest, limit=policies.MAX_TAG_BINDINGS)
        # NB: an approval-required environment confirms a pin that rests on approvals before applying it (_confirmed),
        # whatever kind its sender calls it
        confirm = bool(state.spec.approval.required and approved_by and _patched(PIN_CONFIRMED))
        lifts = lifts_hold(request, state.holds)
        state.pin = Pin(
            **request.model_dump(include=_PIN_FIELDS),
            approved_by=approved_by,
            at=self._now(),
            confirm=confirm,
            lifts_hold=confirm and lifts,
        )
        state.pin_before = previous if confirm else None
        if lifts and not confirm:
            state.holds = without_hold(state.holds, request.version)
        if takes_hold(state.holds, request, state.last_applied, of_applied=lambda: _patched(HOLD_OF_APPLIED)):
            assert request.hold is not None
            state.holds = with_hold(state.holds, request.hold, limit=policies.MAX_HOLDS)
        state.blocked = ""

    async def _confirmed(self, pin: Pin) -> bool:
        """A promotion's pin is applied only when its own promotion run vouches for it (still pinning, an approval
        accepted, this digest to this environment) and the release is healthy where the policy requires, as read
        now: an approval copied out of a refused promotion's history moves nothing. Refused: recorded, answered,
        and the pin it replaced is back. A check that cannot be made now is tried again next iteration."""
        state = self._state
        try:
            result = await workflow.execute_activity(
                stubs.confirm_pin,
                ConfirmPinInput(
                    environment=state.spec.name,
                    request_id=pin.request_id,
                    version=pin.version,
                    digest=pin.digest,
                    requires_healthy_in=state.spec.approval.requires_healthy_in,
                ),
                start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT * 2,
                retry_policy=policies.CONFIRM_RETRY,
                summary=f"confirm the pin of {pin.version} by {pin.request_id}"[:200],
            )
        except ActivityError as err:
            self._cancelled(err)
            pin.confirm_attempts += 1
            why = f"{cause_type(err)}: {cause_message(err)}"
            if pin.confirm_attempts < policies.MAX_CONFIRM_ATTEMPTS or not _patched(CONFIRM_BOUNDED):
                state.last_error = f"pin of {pin.version} not confirmed yet ({pin.confirm_attempts}): {why}"
                return False
            # bounded: an unconfirmable pin never keeps the environment from reconciling what it had
            result = ConfirmPinResult(refusal=f"not confirmed in {pin.confirm_attempts} tries ({why})")
        if result.refusal:
            event = self._record(
                EventType.PIN_REFUSED,
                f"pin of {pin.version} refused: {result.refusal}"[:1000],
                by=pin.by,
                request_id=pin.request_id,
                version=pin.version,
                digest=pin.digest,
            )
            self._answer(pin, None, "refused", event.message)
            state.pin, state.pin_before = state.pin_before, None
            self._wake = True
            return False
        pin.confirm, state.pin_before = False, None
        if pin.lifts_hold:
            state.holds = without_hold(state.holds, pin.version)
        return True
