"""PromotionWorkflow (approval-gated pin by digest) and RollbackWorkflow (emergency pin to an earlier version)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ferry.artifacts import FetchManifestInput, Manifest, ResolveTagInput, ResolveTagResult
    from ferry.durations import parse_duration
    from ferry.environment import ApprovalPolicy, EnvironmentStatus, LenientPayload, PinRequest, env_workflow_id
    from ferry.oci import ANNOTATION_PUBLISHED_BY
    from ferry.promotion import (
        Decision,
        DecisionResult,
        EnvironmentStatusInput,
        Phase,
        PromotionInput,
        PromotionResult,
        PromotionStatus,
        RollbackInput,
        RollbackResult,
        judge,
    )
    from workflows import policies
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_VERSION

POLL = timedelta(seconds=2)  # how often a promotion asks its environment whether the pin landed healthy


async def _environment(name: str) -> EnvironmentStatus:
    status: EnvironmentStatus = await workflow.execute_activity(
        "environment_status", EnvironmentStatusInput(environment=name), result_type=EnvironmentStatus,
        start_to_close_timeout=timedelta(seconds=30), retry_policy=policies.QUICK_RETRY)
    return status


async def _resolve(repository: str, version: str) -> tuple[str, str]:
    """-> (digest, publisher) of a released version; NotFound fails the caller."""
    ref: ResolveTagResult = await workflow.execute_activity(
        "resolve_tag", ResolveTagInput(repository=repository, tag=version), result_type=ResolveTagResult,
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT, retry_policy=policies.QUICK_RETRY)
    assert ref.digest is not None
    manifest: Manifest = await workflow.execute_activity(
        "fetch_manifest", FetchManifestInput(repository=repository, reference=ref.digest), result_type=Manifest,
        start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT, retry_policy=policies.QUICK_RETRY)
    return ref.digest, manifest.annotations.get(ANNOTATION_PUBLISHED_BY, "")


async def _await_outcome(environment: str, digest: str, request_id: str, within: timedelta
                         ) -> tuple[str, str, bool]:
    """Wait until the environment reports `digest` applied and healthy. -> (outcome, reason, auto_rolled_back)."""
    deadline = workflow.now() + within
    while workflow.now() < deadline:
        await workflow.sleep(POLL)
        state = (await _environment(environment)).state
        if state.pin is None or state.pin.request_id != request_id:
            if state.pin is not None and state.pin.kind == "auto-rollback" and state.pin.reason and any(
                    e.type == "AutoRollback" and digest in e.objects.get("failed", []) for e in state.events):
                return "failed", state.pin.reason, True
            return "superseded", f"a newer pin took over ({state.pin.kind} by {state.pin.by})" if state.pin else \
                "the pin was released", False
        health = state.health
        if state.last_applied and state.last_applied.digest == digest and health.digest == digest:
            if health.status == "Healthy":
                return "succeeded", "applied and healthy", False
            if health.status == "Failed":
                return "failed", health.reason, False
    return "failed", f"not healthy within {within}", False


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
        env = await _environment(input.environment)
        spec = env.state.spec
        self._policy = spec.approval
        try:
            digest, publisher = await _resolve(spec.repository, input.version)
        except ActivityError as err:
            return self._finish("refused", f"{input.version} is not a released version of {spec.repository}: "
                                f"{getattr(err.cause, 'message', err.cause)}")
        self._status.digest, self._status.publisher = digest, publisher
        self._policy_loaded = True
        for env_name in spec.approval.requires_healthy_in:
            other = (await _environment(env_name)).state
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
        request_id = workflow.info().workflow_id
        approvers = [d.by for d in self._status.decisions if d.action == "approve" and d.accepted]
        await workflow.get_external_workflow_handle(env_workflow_id(input.environment)).signal(
            "pin", LenientPayload(PinRequest(
                version=input.version, digest=digest, by=", ".join(approvers) or input.requested_by,
                reason=input.reason or f"promotion requested by {input.requested_by}", kind="promotion",
                request_id=request_id).model_dump()))
        self._phase("Pinned")
        outcome, reason, rolled_back = await _await_outcome(
            input.environment, digest, request_id, parse_duration(spec.health_timeout) + parse_duration(spec.interval)
            + timedelta(minutes=2))
        return self._finish(outcome, reason, rolled_back)

    def _finish(self, outcome: str, reason: str, rolled_back: bool = False) -> PromotionResult:
        phase = {"succeeded": "Succeeded", "failed": "Failed", "rejected": "Rejected", "expired": "Expired",
                 "refused": "Refused", "superseded": "Superseded"}[outcome]
        self._phase(phase)  # type: ignore[arg-type]
        s = self._status
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


@workflow.defn(name="RollbackWorkflow")
class RollbackWorkflow:
    """Pins an earlier released version (default: the last known-good before the current one), holds the
    version rolled back from, and waits for health. Only the environment's approvers may roll back; there is
    no approval wait (it is the emergency path)."""

    @workflow.run
    async def run(self, input: RollbackInput) -> RollbackResult:
        workflow.upsert_search_attributes([FERRY_ENVIRONMENT.value_set(input.environment),
                                           FERRY_PHASE.value_set("RollingBack")])
        env = await _environment(input.environment)
        state, spec = env.state, env.state.spec
        current = state.last_applied
        result = RollbackResult(outcome="refused", environment=input.environment,
                                from_version=current.version if current else "")
        if spec.approval.approvers and input.requested_by not in spec.approval.approvers:
            return self._done(result, "refused", f"{input.requested_by} is not an approver of {input.environment} "
                              f"({', '.join(spec.approval.approvers)})")
        if input.to_version:
            try:
                digest, _ = await _resolve(spec.repository, input.to_version)
            except ActivityError as err:
                return self._done(result, "refused", f"{input.to_version} is not a released version: "
                                  f"{getattr(err.cause, 'message', err.cause)}")
            target_version = input.to_version
        else:
            earlier = [r for r in state.good_history if current is None or r.digest != current.digest]
            if not earlier:
                return self._done(result, "refused", "no earlier known-good version to roll back to")
            target_version, digest = earlier[-1].version, earlier[-1].digest
        result.to_version, result.digest = target_version, digest
        workflow.upsert_search_attributes([FERRY_VERSION.value_set(target_version)])
        request_id = workflow.info().workflow_id
        await workflow.get_external_workflow_handle(env_workflow_id(input.environment)).signal(
            "pin", LenientPayload(PinRequest(
                version=target_version, digest=digest, by=input.requested_by, kind="rollback", request_id=request_id,
                reason=input.reason or "rollback", hold=current.version if current and
                current.version != target_version else None).model_dump()))
        outcome, reason, _ = await _await_outcome(input.environment, digest, request_id,
                                                  parse_duration(spec.health_timeout) + timedelta(minutes=2))
        return self._done(result, outcome, reason)

    @staticmethod
    def _done(result: RollbackResult, outcome: str, reason: str) -> RollbackResult:
        workflow.upsert_search_attributes([FERRY_PHASE.value_set(outcome.capitalize())])
        return result.model_copy(update={"outcome": outcome, "reason": reason})

