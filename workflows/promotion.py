"""PromotionWorkflow: an approval-gated pin by digest."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ferry.durations import parse_duration
    from ferry.environment import ApprovalPolicy, LenientPayload
    from ferry.promotion import (
        Decision,
        DecisionResult,
        Phase,
        PromotionInput,
        PromotionResult,
        PromotionStatus,
        judge,
    )
    from workflows import metrics
    from workflows.pinning import await_pin_outcome, environment_status, resolve_release, send_pin
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_VERSION


@workflow.defn(name="PromotionWorkflow")
class PromotionWorkflow:
    """Resolves the version to a digest, enforces the environment's policy, waits for an approval if one is
    required, pins by digest, and reports the outcome. Every decision, accepted or refused, is recorded in
    the status query and in history (memo); nothing an SRE sends is silently dropped."""

    @workflow.init
    def __init__(self, input: PromotionInput) -> None:
        self._status = PromotionStatus(environment=input.environment, version=input.version,
                                       requested_by=input.requested_by)
        self._approvers: list[str] = []
        self._policy_loaded = False
        self._outcome: str | None = None
        self._pending: list[tuple[str, object, str]] = []
        self._policy: ApprovalPolicy | None = None

    def _now(self) -> str:
        return workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _phase(self, phase: Phase) -> None:
        self._status.phase = phase
        workflow.upsert_search_attributes([FERRY_PHASE.value_set(phase)])

    @workflow.run
    async def run(self, input: PromotionInput) -> PromotionResult:
        workflow.upsert_search_attributes([FERRY_ENVIRONMENT.value_set(input.environment),
                                           FERRY_VERSION.value_set(input.version), FERRY_PHASE.value_set("Resolving")])
        env = await environment_status(input.environment)
        spec = env.state.spec
        self._policy = spec.approval
        try:
            digest, publisher = await resolve_release(spec.repository, input.version)
        except ActivityError as err:
            return self._finish("refused", f"{input.version} is not a released version of {spec.repository}: "
                                f"{getattr(err.cause, 'message', err.cause)}")
        self._status.digest, self._status.publisher = digest, publisher
        self._policy_loaded = True
        for env_name in spec.approval.requires_healthy_in:
            other = (await environment_status(env_name)).state
            if not any(ref.digest == digest for ref in other.good_history):
                return self._finish("refused", f"{input.version} ({digest}) has not been applied and healthy in "
                                    f"{env_name}")
        for action, raw, via in self._pending:  # decisions that arrived while resolving
            self._decide(action, raw, via)
        self._pending = []
        if spec.approval.required:
            timeout = parse_duration(spec.approval.timeout)
            self._status.deadline = (workflow.now() + timeout).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._phase("AwaitingApproval")
            try:
                await workflow.wait_condition(lambda: self._outcome is not None, timeout=timeout)
            except TimeoutError:
                return self._finish("expired", f"no decision within {spec.approval.timeout}")
            if self._outcome == "rejected":
                return self._finish("rejected", next(d.comment for d in reversed(self._status.decisions)
                                                     if d.action == "reject" and d.accepted))
        approvers = [d.by for d in self._status.decisions if d.action == "approve" and d.accepted]
        request_id = await send_pin(input.environment, spec.repository, input.version, digest,
                                    by=", ".join(approvers) or input.requested_by, kind="promotion",
                                    reason=input.reason or f"promotion requested by {input.requested_by}")
        self._phase("Pinned")
        outcome, reason, rolled_back = await await_pin_outcome(
            input.environment, digest, request_id, parse_duration(spec.health_timeout) + parse_duration(spec.interval)
            + timedelta(minutes=2))
        return self._finish(outcome, reason, rolled_back)

    def _finish(self, outcome: str, reason: str, rolled_back: bool = False) -> PromotionResult:
        phase = {"succeeded": "Succeeded", "failed": "Failed", "rejected": "Rejected", "expired": "Expired",
                 "refused": "Refused", "superseded": "Superseded"}[outcome]
        self._phase(phase)  # type: ignore[arg-type]
        s = self._status
        metrics.outcome("promotion", s.environment, outcome)
        return PromotionResult(outcome=outcome, environment=s.environment, version=s.version,
                               digest=s.digest, publisher=s.publisher, reason=reason, auto_rolled_back=rolled_back,
                               approved_by=[d.by for d in s.decisions if d.action == "approve" and d.accepted],
                               decisions=s.decisions)

    def _decide(self, action: str, raw: object, via: str) -> DecisionResult:
        if not self._policy_loaded:
            self._pending.append((action, raw, via))
            return DecisionResult(accepted=False, reason="recorded; will be judged once the version is resolved",
                                  phase=self._status.phase)
        s = self._status
        assert self._policy is not None
        decision, refusal = judge(self._policy, s.publisher, s.version, s.digest, raw, action)
        by = decision.approver if decision else str(raw)[:80]
        if not refusal and any(d.by == by and d.action == action and d.accepted for d in s.decisions):
            return DecisionResult(accepted=True, reason="duplicate: already recorded", phase=s.phase)
        if not refusal and self._outcome is not None:
            refusal = f"the promotion is already {self._outcome}"
        record = Decision(at=self._now(), action=action, by=by, accepted=not refusal, reason=refusal,
                          comment=decision.comment if decision else "", via=via)
        s.decisions = [*s.decisions, record]
        metrics.promotion_decision(s.environment, action, not refusal)
        workflow.upsert_memo({"ferry_decision": record.model_dump(mode="json")})
        if refusal:
            workflow.logger.warning("%s refused: %s", action, refusal)
        else:
            self._outcome = "approved" if action == "approve" else "rejected"
        return DecisionResult(accepted=not refusal, reason=refusal, phase=s.phase)

    @workflow.signal(name="approve")
    def approve(self, payload: LenientPayload) -> None:
        self._decide("approve", payload.root, "signal")

    @workflow.signal(name="reject")
    def reject(self, payload: LenientPayload) -> None:
        self._decide("reject", payload.root, "signal")

    @workflow.update(name="approve_update")
    def approve_update(self, payload: LenientPayload) -> DecisionResult:
        """`ferry approve`: the caller learns at once; refusals are recorded (and in history) all the same."""
        return self._decide("approve", payload.root, "update")

    @workflow.update(name="reject_update")
    def reject_update(self, payload: LenientPayload) -> DecisionResult:
        return self._decide("reject", payload.root, "update")

    @approve_update.validator
    def _validate_approve(self, payload: LenientPayload) -> None:
        self._open("approve", payload)

    @reject_update.validator
    def _validate_reject(self, payload: LenientPayload) -> None:
        self._open("reject", payload)

    def _open(self, action: str, payload: LenientPayload) -> None:
        # NB: only "no longer deciding" is rejected up front (nothing to record); policy refusals are
        # accepted as updates and recorded, so they reach history. A repeat of an accepted decision stays
        # idempotent even after the promotion moved on.
        who = payload.root.get("approver") if isinstance(payload.root, dict) else None
        if any(d.by == who and d.action == action and d.accepted for d in self._status.decisions):
            return
        if self._status.phase not in ("Resolving", "AwaitingApproval"):
            raise ValueError(f"promotion of {self._status.version} to {self._status.environment} is "
                             f"{self._status.phase}, not awaiting a decision")

    @workflow.query(name="status")
    def status(self) -> PromotionStatus:
        return self._status
