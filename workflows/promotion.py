"""PromotionWorkflow: an approval-gated pin by digest."""

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from ferry.approvals import DecisionContext, Judgement, SignedDecision, judge
    from ferry.environment import EnvironmentState, LenientPayload, first_payload
    from ferry.errors import ErrorType
    from ferry.names import Memo, Query, Signal, Update
    from ferry.pins import bound_elsewhere
    from ferry.promotion import (
        MAX_DECISIONS_KEPT,
        Decision,
        DecisionResult,
        Phase,
        PromotionInput,
        PromotionResult,
        PromotionStatus,
        healthy_in_refusal,
    )
    from ferry.spec import ApprovalPolicy, EnvironmentSpec
    from ferry.times import timestamp
    from workflows import metrics, policies
    from workflows import outbox as alerting
    from workflows.failures import cause_message, cause_type, raise_if_cancelled
    from workflows.patches import (
        ALERTS,
        CANCEL_RECORDED,
        DECISION_REFUSAL_FAILS,
        DECISION_UPDATE_WAITS,
        GATE_HARDENED,
        RECHECK_HEALTHY_IN,
        RECORD_EVERY_DECISION,
    )
    from workflows.pin_protocol import PinOutcomes, send_pin
    from workflows.reads import StatusUnreadable, environment_status, resolve_release
    from workflows.run_memo import record_cancelled
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_VERSION


@workflow.defn(name="PromotionWorkflow")
class PromotionWorkflow(PinOutcomes, alerting.Notifies):
    """Resolves the version to a digest (and, when the environment requires it, verifies the release's signature
    and takes the publisher from it), enforces the environment's policy, waits for an approval if one is required,
    pins by digest with the approvals attached (the environment re-verifies them), and reports the outcome. Every
    decision, accepted, duplicate or refused, is recorded in the status query and in history (memo); nothing an
    SRE sends is silently dropped."""

    @workflow.init
    def __init__(self, input: PromotionInput) -> None:
        self._status = PromotionStatus(
            environment=input.environment, version=input.version, requested_by=input.requested_by
        )
        self._ctx: DecisionContext | None = None
        self._outcome: str | None = None
        self._pending: list[tuple[str, object, str]] = []
        self._policy: ApprovalPolicy | None = None
        self._signed_approvals: list[SignedDecision] = []
        self._pinned = False

    def _now(self) -> str:
        return timestamp(workflow.now())

    def _phase(self, phase: Phase) -> None:
        self._status.phase = phase
        workflow.upsert_search_attributes([FERRY_PHASE.value_set(phase)])

    @workflow.run
    async def run(self, input: PromotionInput) -> PromotionResult:
        try:
            result = await self._run(input)
        except (asyncio.CancelledError, CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            # a cancelled promotion must not keep matching FerryPhase = "AwaitingApproval"
            was = self._status.phase
            self._phase("Cancelled")
            details = (
                f"cancelled in phase {was}; nothing was pinned"
                if not self._pinned
                else "cancelled after pinning (the environment keeps the pin)"
            )
            workflow.set_current_details(details)
            if workflow.patched(CANCEL_RECORDED):
                record_cancelled(details)
            raise
        if workflow.patched(ALERTS):
            await alerting.outbox(self).flush()  # AwaitingApproval and decisions first, before the run ends
            await alerting.send(
                alerting.notification(
                    f"Promotion{result.outcome.capitalize()}",
                    input.environment,
                    f"promotion of {input.version} to {input.environment} {result.outcome}: {result.reason}",
                    version=input.version,
                    digest=result.digest,
                    by=input.requested_by,
                    details={"publisher": result.publisher, "approved_by": ", ".join(result.approved_by)},
                )
            )
        return result

    def _awaiting_details(self, policy: ApprovalPolicy) -> str:
        s = self._status
        who = " or ".join(policy.names)
        proof = (
            f"an SSH-signed statement (`ferry approve {s.environment} {s.version} --key KEY --print` prints the JSON)"
            if policy.is_signed
            else '{"approver": "<name>", "comment": "..."} (names are claims here)'
        )
        return (
            f"**Awaiting approval** of {s.version} ({s.digest[:19]}…) for **{s.environment}** until {s.deadline}.\n"
            f"May approve: {who}. The publisher, {s.publisher or 'unknown'}, may not.\n"
            f"Send the `approve_update` Update (or `reject_update`) with {proof}."
        )

    async def _run(self, input: PromotionInput) -> PromotionResult:
        """resolve → healthy elsewhere → (approval) → pin → the environment's answer."""
        workflow.upsert_search_attributes(
            [
                FERRY_ENVIRONMENT.value_set(input.environment),
                FERRY_VERSION.value_set(input.version),
                FERRY_PHASE.value_set("Resolving"),
            ]
        )
        try:
            env = await environment_status(input.environment)
        except StatusUnreadable as err:
            return self._finish("failed", err.message)
        spec = env.state.spec
        self._policy = spec.approval
        self._status.approvers, self._status.signed = spec.approval.names, spec.approval.is_signed
        refused = await self._resolve(input, env.state)
        if refused is not None:
            return refused
        for action, raw, via in self._pending:  # signals that arrived while resolving
            self._decide(action, raw, via)
        self._pending = []
        if spec.approval.required:
            undecided = await self._await_decision(input, spec)
            if undecided is not None:
                return undecided
        return await self._pin(input, spec)

    async def _resolve(self, input: PromotionInput, env: EnvironmentState) -> PromotionResult | None:
        """The version's digest and publisher (a refusal when it is not released, not verified, the tag moved, or
        it is not healthy where the policy requires): from here on decisions can be judged."""
        spec = env.spec
        try:
            digest, publisher = await resolve_release(spec.repository, input.version, spec.verify)
        except ActivityError as err:
            raise_if_cancelled(err)
            if cause_type(err) == ErrorType.VERIFICATION_FAILED:
                return self._finish(
                    "refused", f"{input.version} failed signature verification: {cause_message(err, limit=None)}"
                )
            return self._finish(
                "refused",
                f"{input.version} is not a released version of {spec.repository}: {cause_message(err, limit=None)}",
            )
        bound = bound_elsewhere(env.tags, input.version, digest)
        if bound is not None:
            return self._finish(
                "refused",
                f"tag {input.version} now points to {digest}, but {input.environment} "
                f"bound it to {bound}: the tag was moved in the registry",
            )
        self._status.digest, self._status.publisher = digest, publisher
        info = workflow.info()
        self._ctx = DecisionContext(
            environment=input.environment,
            version=input.version,
            digest=digest,
            publisher=publisher,
            promotion=info.workflow_id,
            run=info.run_id,
        )
        refusal = await self._healthy_elsewhere(spec.approval.requires_healthy_in, input.version, digest)
        return self._finish("refused", refusal) if refusal else None

    async def _await_decision(self, input: PromotionInput, spec: EnvironmentSpec) -> PromotionResult | None:
        """Wait for an approval until the policy's deadline; None when approved, else the expired/rejected result."""
        timeout, digest, publisher = spec.approval.timeout.delta, self._status.digest, self._status.publisher
        self._status.deadline = timestamp(workflow.now() + timeout)
        self._phase("AwaitingApproval")
        workflow.set_current_details(self._awaiting_details(spec.approval))
        if workflow.patched(ALERTS):
            alerting.outbox(self).notify(
                alerting.notification(
                    "AwaitingApproval",
                    input.environment,
                    f"{input.version} waits for approval to go to "
                    f"{input.environment} (requested by {input.requested_by}) until {self._status.deadline}; "
                    f"{' or '.join(spec.approval.names)} may approve; the publisher, {publisher or 'unknown'}, may "
                    "not",
                    version=input.version,
                    digest=digest,
                    by=input.requested_by,
                    details={
                        "publisher": publisher,
                        "approvers": ", ".join(spec.approval.names),
                        "deadline": self._status.deadline,
                        "requested_by": input.requested_by,
                        "reason": input.reason,
                        "signed": str(spec.approval.is_signed).lower(),
                        "repository": spec.repository,
                    },
                )
            )
        try:
            await workflow.wait_condition(
                lambda: self._outcome is not None,
                timeout=timeout,
                timeout_summary=f"approval deadline ({spec.approval.timeout})",
            )
        except TimeoutError:
            return self._finish("expired", f"no decision within {spec.approval.timeout}")
        if self._outcome == "rejected":
            return self._finish(
                "rejected",
                next(d.comment for d in reversed(self._status.decisions) if d.action == "reject" and d.accepted),
            )
        return None

    async def _pin(self, input: PromotionInput, spec: EnvironmentSpec) -> PromotionResult:
        """Pin the environment by digest with the approvals attached, and wait for its answer."""
        digest = self._status.digest
        if spec.approval.requires_healthy_in and workflow.patched(RECHECK_HEALTHY_IN):
            # approval may come a day later; staging may have failed that version since
            refusal = await self._healthy_elsewhere(spec.approval.requires_healthy_in, input.version, digest)
            if refusal:
                return self._finish("refused", f"{refusal} (checked again when the approval arrived)")
        approvers = self._approvers()
        request_id = await send_pin(
            input.environment,
            spec.repository,
            input.version,
            digest,
            by=", ".join(approvers) or input.requested_by,
            kind="promotion",
            reason=input.reason or f"promotion requested by {input.requested_by}",
            approvals=self._signed_approvals,
            approved_by=approvers,
            publisher=self._status.publisher,
        )
        self._phase("Pinned")
        self._pinned = True
        workflow.set_current_details(
            f"pinned {input.environment} to {input.version} ({digest[:19]}…) approved by "
            f"{', '.join(approvers) or 'nobody (no approval required)'}; waiting until it "
            "is applied and healthy"
        )
        # a progressive rollout answers once it is promoted or rolled back: its steps are waited for too
        walk = spec.strategy.longest(spec.health_timeout.delta, spec.approval.timeout.delta) if spec.strategy else None
        outcome, reason, rolled_back = await self.await_pin_outcome(
            input.environment,
            digest,
            request_id,
            spec.health_timeout.delta + spec.interval.delta + policies.PIN_OUTCOME_SLACK + (walk or timedelta(0)),
        )
        return self._finish(outcome, reason, rolled_back)

    async def _healthy_elsewhere(self, environments: list[str], version: str, digest: str) -> str:
        """'' when `digest` was applied and healthy in each environment and has not failed there since."""
        for name in environments:
            try:
                other = (await environment_status(name)).state
            except StatusUnreadable as err:
                return f"{err.message}: cannot tell whether {version} is healthy there"
            refusal = healthy_in_refusal(name, other, version, digest)
            if refusal:
                return refusal
        return ""

    def _finish(self, outcome: str, reason: str, rolled_back: bool = False) -> PromotionResult:
        phase = {
            "succeeded": "Succeeded",
            "failed": "Failed",
            "rejected": "Rejected",
            "expired": "Expired",
            "refused": "Refused",
            "superseded": "Superseded",
        }[outcome]
        self._phase(phase)  # type: ignore[arg-type]
        workflow.set_current_details(f"**{phase}**: {reason}")
        s = self._status
        metrics.outcome("promotion", s.environment, outcome)
        return PromotionResult(
            outcome=outcome,
            environment=s.environment,
            version=s.version,
            digest=s.digest,
            publisher=s.publisher,
            reason=reason,
            auto_rolled_back=rolled_back,
            approved_by=self._approvers(),
            decisions=s.decisions,
        )

    def _approvers(self) -> list[str]:
        return list(dict.fromkeys(d.by for d in self._status.decisions if d.action == "approve" and d.accepted))

    def _decide(self, action: str, raw: object, via: str) -> Decision:
        """Judge and record one decision. Every call writes exactly one record (duplicates and refusals too), so
        the audit can pair each record with the signal or update that caused it."""
        if self._ctx is None:  # a signal that arrived while resolving: judged once the version is resolved
            self._pending.append((action, raw, via))
            return Decision(
                at=self._now(),
                action=action,
                by="",
                accepted=False,
                via=via,
                reason="recorded; will be judged once the version is resolved",
            )
        s = self._status
        assert self._policy is not None
        verdict = judge(self._policy, self._ctx, raw, action, workflow.now(), workflow.patched(GATE_HARDENED))
        by = verdict.approver or _claimed_name(raw)
        refusal = verdict.refusal
        duplicate = not refusal and any(d.by == by and d.action == action and d.accepted for d in s.decisions)
        every = workflow.patched(RECORD_EVERY_DECISION)
        if duplicate and not every:
            return Decision(
                at=self._now(), action=action, by=by, accepted=True, via=via, reason="duplicate: already recorded"
            )
        if not refusal and not duplicate and self._outcome is not None:
            refusal = f"the promotion is already {self._outcome}"
        update = workflow.current_update_info()
        record = Decision(
            at=self._now(),
            action=action,
            by=by,
            accepted=not refusal,
            reason=refusal or ("duplicate: already recorded" if duplicate else ""),
            comment=verdict.decision.comment if verdict.decision else "",
            via=via,
            verified=verdict.verified,
            fingerprint=verdict.fingerprint,
            update_id=update.id if update else "",
        )
        s.decisions = [*s.decisions, record][-MAX_DECISIONS_KEPT:]
        metrics.promotion_decision(s.environment, action, not refusal)
        workflow.upsert_memo({Memo.DECISION: record.model_dump(mode="json")})
        if not duplicate and workflow.patched(ALERTS):
            self._announce_decision(record, refusal)
        if refusal:
            workflow.logger.warning("%s refused: %s", action, refusal)
        elif not duplicate:
            self._take_decision(action, verdict)
        return record

    def _announce_decision(self, record: Decision, refusal: str) -> None:
        """An alert for a decision (not for a duplicate): Refused, Approved or Rejected."""
        s, action, by = self._status, record.action, record.by
        kind = "Refused" if refusal else ("Approved" if action == "approve" else "Rejected")
        alerting.outbox(self).notify(
            alerting.notification(
                kind,
                s.environment,
                f"{action} of {s.version} for {s.environment} by {by} "
                f"{'refused: ' + refusal if refusal else 'accepted'}",
                version=s.version,
                digest=s.digest,
                by=by,
                details={"verified": str(record.verified).lower(), "via": record.via},
            )
        )

    def _take_decision(self, action: str, verdict: Judgement) -> None:
        """An accepted decision decides the promotion; a signed approval is kept for the pin (the environment
        verifies it again)."""
        self._outcome = "approved" if action == "approve" else "rejected"
        if action == "approve" and verdict.decision and verdict.decision.statement and verdict.verified:
            assert verdict.decision.signature is not None
            self._signed_approvals.append(
                SignedDecision(statement=verdict.decision.statement, signature=verdict.decision.signature)
            )

    async def _decide_update(self, action: str, payload: LenientPayload) -> DecisionResult:
        # an Update waits until the version is resolved, so its answer is the real verdict
        if workflow.patched(DECISION_UPDATE_WAITS):
            await workflow.wait_condition(lambda: self._ctx is not None or self._status.phase == "Refused")
            if self._ctx is None:
                raise ApplicationError(
                    f"promotion of {self._status.version} to {self._status.environment} was "
                    "refused before any decision",
                    type=ErrorType.DECISION_REFUSED,
                    non_retryable=True,
                )
        record = self._decide(action, payload.root, "update")
        if not record.accepted and workflow.patched(DECISION_REFUSAL_FAILS):
            # fail the Update so the caller, the UI's dialog and `temporal workflow update execute` show the
            # refusal; the record above is already in history.
            raise ApplicationError(
                f"{action} refused: {record.reason}", type=ErrorType.DECISION_REFUSED, non_retryable=True
            )
        return DecisionResult(accepted=record.accepted, reason=record.reason, phase=self._status.phase)

    @workflow.signal(
        name=Signal.APPROVE,
        description="Approve (fallback to the approve_update Update, which answers): "
        '{"approver": "alice", "comment": "...", "statement": "...", "signature": "..."} — '
        "`ferry approve ENV VERSION --key KEY --print` prints it",
    )
    def approve(self, *payloads: object) -> None:
        self._decide("approve", first_payload(payloads).root, "signal")

    @workflow.signal(
        name=Signal.REJECT,
        description='Reject (fallback to reject_update): {"approver": "alice", '
        '"comment": "why", "statement": "...", "signature": "..."}',
    )
    def reject(self, *payloads: object) -> None:
        self._decide("reject", first_payload(payloads).root, "signal")

    @workflow.update(
        name=Update.APPROVE,
        description='Approve this promotion and get the verdict: {"approver": '
        '"alice", "comment": "...", "statement": "...", "signature": "..."} (`ferry approve ENV VERSION '
        "--key KEY --print` prints it); a refusal fails the update with DecisionRefused and is recorded",
    )
    async def approve_update(self, payload: LenientPayload | None = None) -> DecisionResult:
        return await self._decide_update("approve", payload or LenientPayload(None))

    @workflow.update(
        name=Update.REJECT,
        description='Reject this promotion: {"approver": "alice", "comment": '
        '"why", ...}; a refusal fails the update with DecisionRefused and is recorded',
    )
    async def reject_update(self, payload: LenientPayload | None = None) -> DecisionResult:
        return await self._decide_update("reject", payload or LenientPayload(None))

    @approve_update.validator
    def _validate_approve(self, payload: LenientPayload | None = None) -> None:
        self._open("approve", payload or LenientPayload(None))

    @reject_update.validator
    def _validate_reject(self, payload: LenientPayload | None = None) -> None:
        self._open("reject", payload or LenientPayload(None))

    def _open(self, action: str, payload: LenientPayload) -> None:
        # only "no longer deciding" is rejected up front (nothing to record); policy refusals are
        # accepted as updates and recorded, so they reach history. A repeat of an accepted decision stays
        # idempotent even after the promotion moved on.
        who = _claimed_name(payload.root)
        if any(d.by == who and d.action == action and d.accepted for d in self._status.decisions):
            return
        if self._status.phase not in ("Resolving", "AwaitingApproval"):
            raise ValueError(
                f"promotion of {self._status.version} to {self._status.environment} is "
                f"{self._status.phase}, not awaiting a decision"
            )

    @workflow.query(name=Query.STATUS, description="phase, digest, publisher, who may approve, every decision recorded")
    def status(self) -> PromotionStatus:
        return self._status


def _claimed_name(raw: object) -> str:
    """The name a payload claims, for the record only (bounded; a raw dict is never printed)."""
    name = raw.get("approver") if isinstance(raw, dict) else None
    return name[:128] if isinstance(name, str) and name else "(malformed payload)"
