"""The environment's end of the pin protocol: the pin signal, its gate and approvals, confirmation and outcomes."""

import asyncio
import re

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.environment import LenientPayload, Pin, PinOutcome, PinRequest, PinVerdict, first_payload
    from ferry.events import EventType
    from ferry.holds import lifts_hold, takes_hold, with_hold, without_hold
    from ferry.names import Signal
    from ferry.pins import approvers, bind_tag, consumed, judge_pin, pin_refusal
    from ferry.promotion import ConfirmPinInput, ConfirmPinResult
    from ferry.reconcile import VersionRef
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_events import EnvironmentEvents
    from workflows.failures import cause_message, cause_type
    from workflows.patches import CONFIRM_BOUNDED, GATE_HARDENED, HOLD_OF_APPLIED, PIN_CONFIRMED, PIN_OUTCOME_SIGNAL
    from workflows.patches import env_patched as _patched



_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PIN_FIELDS = {"version", "digest", "by", "reason", "kind", "request_id", "hold"}


class EnvironmentPins(EnvironmentEvents):
    def _answer(self, pin: Pin | None, about: VersionRef | None, outcome: PinVerdict, reason: str,
                rolled_back: bool = False) -> None:
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
                    "pin_outcome", LenientPayload(answer.model_dump()))
            except Exception as err:  # NB: the sender may be gone (finished, terminated): nothing to tell
                workflow.logger.info("pin outcome for %s not delivered: %s", request_id, err)

        # NB: the loop never waits on a sender; a continue-as-new waits for these sends (_continue_as_new)
        self._answers.add(task := asyncio.create_task(send()))
        task.add_done_callback(self._answers.discard)

    @workflow.signal(name=Signal.PIN, description='Pin to a released version by digest: {"version", "digest", "by", '
                     '"kind", "request_id", "approvals": [signed decisions]}. Sent by PromotionWorkflow and '
                     'RollbackWorkflow; an approval-required environment refuses a pin its own spec does not approve')
    def pin(self, *payloads: object) -> None:
        """Pin to a version by digest (promotion, rollback). Refusals are recorded, never dropped."""
        payload = first_payload(payloads)
        self._size_check = self._bounded  # NB: a refused pin stays in history: a flood of them must not end the run
        try:
            request = PinRequest.model_validate(payload.root)
        except pydantic.ValidationError as err:
            self._record(EventType.PIN_REFUSED,
                         f"malformed pin: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"[:500])
            return
        state = self._state
        verdicts = (judge_pin(state, request, workflow.now(), strict=_patched(GATE_HARDENED))
                    if state.spec.approval.required else [])
        refusal = pin_refusal(state, request, verdicts, hardened=lambda: _patched(GATE_HARDENED))
        if refusal:
            event = self._record(EventType.PIN_REFUSED, f"pin of {request.version} refused: {refusal}", by=request.by,
                                 request_id=request.request_id, version=request.version)
            self._signal_back(request.request_id, "refused", event.message)
            return
        previous = state.pin
        approved_by = approvers(verdicts)
        if approved_by and request.request_id:
            state.consumed_approvals = consumed(state.consumed_approvals, request.request_id,
                                                limit=policies.MAX_CONSUMED_APPROVALS)
        state.tags = bind_tag(state.tags, request.version, request.digest, limit=policies.MAX_TAG_BINDINGS)
        # NB: an approval-required environment confirms a pin that rests on approvals before applying it (_confirmed),
        # whatever kind its sender calls it
        confirm = bool(state.spec.approval.required and approved_by and _patched(PIN_CONFIRMED))
        lifts = lifts_hold(request, state.holds)
        state.pin = Pin(**request.model_dump(include=_PIN_FIELDS), approved_by=approved_by, at=self._now(),
                        confirm=confirm, lifts_hold=confirm and lifts)
        state.pin_before = previous if confirm else None
        if lifts and not confirm:
            state.holds = without_hold(state.holds, request.version)
        if takes_hold(state.holds, request, state.last_applied, of_applied=lambda: _patched(HOLD_OF_APPLIED)):
            assert request.hold is not None
            state.holds = with_hold(state.holds, request.hold, limit=policies.MAX_HOLDS)
        state.blocked = ""
        self._record(EventType.PINNED,
                     f"pinned to {request.version} ({request.kind}) by {request.by}: {request.reason}",
                     version=request.version, digest=request.digest, by=request.by, request_id=request.request_id)
        self._keep_record()  # NB: the used approval and the hold, before a termination can shed them
        self._answer(previous, None, "superseded", f"a newer pin took over ({request.kind} by {request.by})")
        self._wake = True

    async def _confirmed(self, pin: Pin) -> bool:
        """A promotion's pin is applied only when its own promotion run vouches for it (still pinning, an approval
        accepted, this digest to this environment) and the release is healthy where the policy requires, as read
        now: an approval copied out of a refused promotion's history moves nothing. Refused: recorded, answered,
        and the pin it replaced is back. A check that cannot be made now is tried again next iteration."""
        state = self._state
        try:
            result = await workflow.execute_activity(
                stubs.confirm_pin, ConfirmPinInput(environment=state.spec.name, request_id=pin.request_id,
                                                   version=pin.version, digest=pin.digest,
                                                   requires_healthy_in=state.spec.approval.requires_healthy_in),
                start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT * 2, retry_policy=policies.CONFIRM_RETRY,
                summary=f"confirm the pin of {pin.version} by {pin.request_id}"[:200])
        except ActivityError as err:
            self._cancelled(err)
            pin.confirm_attempts += 1
            why = f"{cause_type(err)}: {cause_message(err)}"
            if pin.confirm_attempts < policies.MAX_CONFIRM_ATTEMPTS or not _patched(CONFIRM_BOUNDED):
                state.last_error = f"pin of {pin.version} not confirmed yet ({pin.confirm_attempts}): {why}"
                return False
            # NB: bounded: an unconfirmable pin never keeps the environment from reconciling what it had
            result = ConfirmPinResult(refusal=f"not confirmed in {pin.confirm_attempts} tries ({why})")
        if result.refusal:
            event = self._record(EventType.PIN_REFUSED, f"pin of {pin.version} refused: {result.refusal}"[:1000],
                                 by=pin.by, request_id=pin.request_id, version=pin.version, digest=pin.digest)
            self._answer(pin, None, "refused", event.message)
            state.pin, state.pin_before = state.pin_before, None
            self._wake = True
            return False
        pin.confirm, state.pin_before = False, None
        if pin.lifts_hold:
            state.holds = without_hold(state.holds, pin.version)
        return True
