"""The environment's end of the pin protocol: the pin signal, its gate and approvals, confirmation and outcomes."""

import asyncio
import re

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.approvals import DecisionContext, Judgement, judge
    from ferry.environment import LenientPayload, Pin, PinOutcome, PinRequest, PinVerdict, first_payload
    from ferry.events import EventType
    from ferry.names import Signal
    from ferry.oci import is_digest
    from ferry.promotion import ConfirmPinInput, ConfirmPinResult
    from ferry.reconcile import VersionRef
    from ferry.versions import try_parse_tag
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_events import EnvironmentEvents
    from workflows.failures import cause_message, cause_type
    from workflows.patches import CONFIRM_BOUNDED, GATE_HARDENED, HOLD_OF_APPLIED, PIN_CONFIRMED, PIN_OUTCOME_SIGNAL
    from workflows.patches import env_patched as _patched




def _approvers(verdicts: list[Judgement]) -> list[str]:
    """Who approved a pin as far as the environment can tell: 'name (SHA256:…)' when verified, else claimed."""
    return [f"{v.approver} ({v.fingerprint})" if v.verified else f"{v.approver} (claimed)"
            for v in verdicts if not v.refusal]


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
        verdicts = self._verdicts(request) if self._state.spec.approval.required else []
        refusal = self._pin_refusal(request, verdicts)
        if refusal:
            event = self._record(EventType.PIN_REFUSED, f"pin of {request.version} refused: {refusal}", by=request.by,
                                 request_id=request.request_id, version=request.version)
            self._signal_back(request.request_id, "refused", event.message)
            return
        previous = self._state.pin
        approved_by = _approvers(verdicts)
        if approved_by and request.request_id:
            self._state.consumed_approvals = [*self._state.consumed_approvals,
                                              request.request_id][-policies.MAX_CONSUMED_APPROVALS:]
        self._bind_tag(request.version, request.digest)
        # NB: an approval-required environment confirms a pin that rests on approvals before applying it (_confirmed),
        # whatever kind its sender calls it
        confirm = bool(self._state.spec.approval.required and approved_by and _patched(PIN_CONFIRMED))
        self._state.pin = Pin(**request.model_dump(include=_PIN_FIELDS), approved_by=approved_by, at=self._now(),
                              confirm=confirm, lifts_hold=confirm and request.kind == "promotion"
                              and request.version in self._state.holds)
        self._state.pin_before = previous if confirm else None
        if request.version in self._state.holds and request.kind == "promotion" and not confirm:
            self._state.holds = [h for h in self._state.holds if h != request.version]
        applied = self._state.last_applied
        if request.hold and request.hold not in self._state.holds and (
                not _patched(HOLD_OF_APPLIED) or (applied is not None and applied.version == request.hold)):
            self._state.holds = [*self._state.holds, request.hold][-policies.MAX_HOLDS:]
        self._state.blocked = ""
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
            state.holds = [h for h in state.holds if h != pin.version]
        return True

    def _pin_refusal(self, request: PinRequest, verdicts: list[Judgement]) -> str:
        """Why this environment refuses the pin, or ''. The environment trusts its own spec and records only."""
        state, spec = self._state, self._state.spec
        if not is_digest(request.digest):
            return f"{request.digest!r} is not a digest"
        if request.repository and request.repository != spec.repository:
            # NB: the spec moved to another repository after the promotion/rollback resolved its digest
            return f"resolved in {request.repository}, but {spec.name} deploys from {spec.repository}"
        bound = state.tags.get(request.version)
        if bound is not None and bound != request.digest:
            return (f"tag {request.version} is bound to {bound} here; {request.digest} is another artifact "
                    "(the tag was moved)")
        released_as = [tag for tag, digest in state.tags.items() if digest == request.digest]
        if released_as and request.version not in released_as and _patched(GATE_HARDENED):
            # NB: a pin's version is the digest's release as this environment resolved it, never the sender's label
            # (a held 2.0.0 relabelled 0.0.1 passed "a rollback never goes forward")
            return (f"{request.digest} is release {released_as[-1]} here, not {request.version}: a pin names the "
                    "release of its digest")
        if not spec.approval.required:
            return ""
        if request.kind == "rollback" and not request.approvals and not request.approved_by:
            return self._rollback_refusal(request)
        if request.request_id and request.request_id in state.consumed_approvals:
            return f"the approvals of {request.request_id} were already used"
        return "" if _approvers(verdicts) else self._gate_reason(request, verdicts)

    def _rollback_refusal(self, request: PinRequest) -> str:
        known_good = [r for r in self._state.good_history if r.digest == request.digest]
        if not known_good:
            return (f"{request.version} ({request.digest}) was never applied and healthy in {self._state.spec.name}; "
                    "without an approval a rollback may only go to a known-good version")
        current = self._state.last_applied
        target, now = try_parse_tag(request.version), try_parse_tag(current.version) if current else None
        if target is not None and now is not None and target.compare(now) > 0:
            return f"{request.version} is newer than the applied {now}: a rollback never goes forward"
        return ""

    def _verdicts(self, request: PinRequest) -> list[Judgement]:
        """Each approval the pin carries, judged against this environment's own spec as of now."""
        spec = self._state.spec
        workflow_id, _, run = request.request_id.partition("@")
        ctx = DecisionContext(environment=spec.name, version=request.version, digest=request.digest,
                              publisher=self._state.verified.get(request.digest, request.publisher),
                              promotion=workflow_id, run=run)
        if spec.approval.is_signed:
            raws: list[object] = [a.model_dump() for a in request.approvals]
        else:
            raws = [{"approver": name} for name in request.approved_by]
        strict = _patched(GATE_HARDENED)
        return [judge(spec.approval, ctx, raw, "approve", workflow.now(), strict) for raw in raws]

    def _gate_reason(self, request: PinRequest, verdicts: list[Judgement]) -> str:
        refusals = [v.refusal for v in verdicts if v.refusal]
        if refusals:
            return "; ".join(refusals)[:500]
        kind = "signed approval" if self._state.spec.approval.is_signed else "approval"
        return f"{self._state.spec.name} requires approval and the pin carries no {kind} of {request.digest}"

    def _bind_tag(self, tag: str, digest: str) -> None:
        if self._state.tags.get(tag) != digest:
            tags = {**self._state.tags, tag: digest}
            self._state.tags = dict(list(tags.items())[-policies.MAX_TAG_BINDINGS:])
