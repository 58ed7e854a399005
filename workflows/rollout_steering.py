"""How people steer a RolloutWorkflow: pause, resume, abort, promote, and an approval step's gate (Updates).

Every handler takes any payload (none, wrong, huge) and answers with a SteerResult: nothing a `temporal` CLI user
types fails a workflow task. Pause, resume and abort move towards safety and take a claimed name (recorded as a
claim); promote and approve move production forward and are judged like a promotion's approval (ferry.approvals):
a signed statement bound to this rollout's run, the release's digest and the step, by a listed approver who did not
publish the release.
"""

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.approvals import DecisionContext, judge
    from ferry.environment import LenientPayload
    from ferry.names import Memo, Update
    from ferry.progressive import (
        FINAL_PHASES,
        MAX_DECISIONS_KEPT,
        PROMOTE_GATE,
        RolloutInput,
        RolloutStatus,
        SteerRecord,
        SteerRequest,
        SteerResult,
        gate_id,
    )
    from ferry.times import timestamp

_RESERVED = ("ferry", "cancel request")


class RolloutSteering:
    _input: RolloutInput
    _status: RolloutStatus
    _paused: bool
    _abort: SteerRecord | None
    _promote: SteerRecord | None
    _approved: dict[int, SteerRecord]
    _rejected: SteerRecord | None
    _awaiting: int | None  # the approval step waiting for its gate

    def _steer(self, action: str, by: str, reason: str = "", verified: str = "", refused: str = "") -> SteerRecord:
        record = SteerRecord(
            action=action, by=by, at=timestamp(workflow.now()), verified=verified, reason=reason, refused=refused
        )
        self._status.decisions = [*self._status.decisions, record][-MAX_DECISIONS_KEPT:]
        workflow.upsert_memo({Memo.ROLLOUT_STEP: {"decision": record.model_dump(mode="json")}})
        workflow.logger.info("rollout of %s: %s", self._input.candidate.version, record.words())
        return record

    def _claimed(self, payload: LenientPayload | None) -> SteerRequest:
        raw = payload.root if payload is not None else None
        try:
            request = SteerRequest.model_validate(raw if isinstance(raw, dict) else {})
        except pydantic.ValidationError:
            request = SteerRequest(by="unknown", reason="(malformed request)")
        if request.by.casefold().startswith(_RESERVED):
            request.by = f"{request.by[:100]} (claimed by a sender)"
        return request

    def _ended(self, action: str) -> SteerResult | None:
        if self._status.phase in FINAL_PHASES:
            return SteerResult(accepted=False, phase=self._status.phase, message=f"the rollout has ended: no {action}")
        return None

    @workflow.update(
        name=Update.ROLLOUT_PAUSE, description='Hold the rollout at its step: {"by": "alice", "reason": ""}'
    )
    async def pause(self, payload: LenientPayload | None = None) -> SteerResult:
        if (ended := self._ended("pause")) is not None:
            return ended
        request = self._claimed(payload)
        self._paused = self._status.paused = True
        self._steer("pause", request.by, request.reason)
        return SteerResult(accepted=True, phase=self._status.phase, message="paused")

    @workflow.update(name=Update.ROLLOUT_RESUME, description='Walk on from where it was paused: {"by": "alice"}')
    async def resume(self, payload: LenientPayload | None = None) -> SteerResult:
        if (ended := self._ended("resume")) is not None:
            return ended
        request = self._claimed(payload)
        self._paused = self._status.paused = False
        self._steer("resume", request.by, request.reason)
        return SteerResult(accepted=True, phase=self._status.phase, message="resumed")

    @workflow.update(
        name=Update.ROLLOUT_ABORT,
        description='Roll back now: all traffic to the primary, the release held: {"by": "alice", "reason": "..."}',
    )
    async def abort(self, payload: LenientPayload | None = None) -> SteerResult:
        if (ended := self._ended("abort")) is not None:
            return ended
        request = self._claimed(payload)
        self._abort = self._steer("abort", request.by, request.reason)
        return SteerResult(accepted=True, phase=self._status.phase, message="aborting: traffic back to the primary")

    @workflow.update(
        name=Update.ROLLOUT_PROMOTE,
        description="Skip the remaining steps and promote: an approver's decision, signed where the environment's "
        'approvals are ({"approver": "bob", "statement": "...", "signature": "..."}; `ferry rollout promote --key`)',
    )
    async def promote(self, payload: LenientPayload | None = None) -> SteerResult:
        if (ended := self._ended("promote")) is not None:
            return ended
        record = self._decide("promote", PROMOTE_GATE, "approve", payload)
        if not record.refused:
            self._promote = record
        return SteerResult(accepted=not record.refused, phase=self._status.phase, message=record.refused or "promoting")

    @workflow.update(
        name=Update.ROLLOUT_APPROVE,
        description="Approve the approval step the rollout waits at (`ferry rollout approve ENV --key KEY`): a signed "
        "statement bound to this run, the release's digest and the step",
    )
    async def approve(self, payload: LenientPayload | None = None) -> SteerResult:
        return self._gate_decision("approve", payload)

    @workflow.update(
        name=Update.ROLLOUT_REJECT,
        description='Refuse the approval step the rollout waits at: rolled back, the release held ({"approver": ...})',
    )
    async def reject(self, payload: LenientPayload | None = None) -> SteerResult:
        return self._gate_decision("reject", payload)

    def _gate_decision(self, action: str, payload: LenientPayload | None) -> SteerResult:
        if (ended := self._ended(action)) is not None:
            return ended
        step = self._awaiting
        if step is None:
            return SteerResult(accepted=False, phase=self._status.phase, message="no approval step is waiting")
        record = self._decide(action, step, action, payload)
        if not record.refused:
            if action == "approve":
                self._approved[step] = record
            else:
                self._rejected = record
        return SteerResult(accepted=not record.refused, phase=self._status.phase, message=record.refused or action)

    def _decide(self, action: str, step: int | str, decision: str, payload: LenientPayload | None) -> SteerRecord:
        """Judge a forward decision as a promotion's approval is judged, bound to this gate; recorded either way."""
        policy, candidate = self._input.approval, self._input.candidate
        raw: Any = payload.root if payload is not None else None
        if not policy.approvers:  # an environment without approvers: the name is a claim, recorded as one
            request = self._claimed(payload)
            return self._steer(action, request.by, request.reason)
        ctx = DecisionContext(
            environment=self._input.environment,
            version=candidate.version,
            digest=candidate.digest,
            publisher=self._input.publisher,
            promotion=gate_id(self._input.environment, step),
            run=workflow.info().run_id,
        )
        verdict = judge(policy, ctx, raw, decision, workflow.now())
        comment = verdict.decision.comment if verdict.decision is not None else ""
        return self._steer(
            action, verdict.approver or "unknown", comment, verified=verdict.fingerprint, refused=verdict.refusal
        )
