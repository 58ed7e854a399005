"""RollbackWorkflow: the emergency pin to an earlier released version."""

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from ferry.environment import EnvironmentState
    from ferry.known_good import earlier_known_good, is_known_good, newer_than_applied, requester_refusal
    from ferry.promotion import RollbackInput, RollbackResult
    from workflows import metrics, policies
    from workflows import outbox as alerting
    from workflows.failures import cause_message, raise_if_cancelled
    from workflows.patches import ALERTS, CANCEL_RECORDED
    from workflows.pin_protocol import PinOutcomes, send_pin
    from workflows.reads import StatusUnreadable, environment_status, resolve_release
    from workflows.run_memo import record_cancelled
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_VERSION


@workflow.defn(name="RollbackWorkflow")
class RollbackWorkflow(PinOutcomes, alerting.Notifies):
    """Pins an earlier released version (default: the last known-good before the current one), holds the
    version rolled back from, and waits for health. Only the environment's approvers may roll back; there is
    no approval wait (it is the emergency path)."""

    @workflow.run
    async def run(self, input: RollbackInput) -> RollbackResult:
        try:
            result = await self._run(input)
        except (asyncio.CancelledError, CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            workflow.upsert_search_attributes([FERRY_PHASE.value_set("Cancelled")])
            workflow.set_current_details("**Cancelled**")
            if workflow.patched(CANCEL_RECORDED):
                record_cancelled(f"rollback of {input.environment} cancelled")
            raise
        if workflow.patched(ALERTS):
            await alerting.send(
                alerting.notification(
                    f"Rollback{result.outcome.capitalize()}",
                    input.environment,
                    f"rollback of {input.environment} from {result.from_version or '?'} to {result.to_version or '?'} "
                    f"{result.outcome}: {result.reason}",
                    version=result.to_version or "",
                    digest=result.digest or "",
                    by=input.requested_by,
                    details={"from": result.from_version or "", "reason": input.reason},
                )
            )
        return result

    async def _run(self, input: RollbackInput) -> RollbackResult:
        workflow.upsert_search_attributes(
            [FERRY_ENVIRONMENT.value_set(input.environment), FERRY_PHASE.value_set("RollingBack")]
        )
        try:
            env = await environment_status(input.environment)
        except StatusUnreadable as err:
            return self._done(RollbackResult(outcome="failed", environment=input.environment), "failed", err.message)
        state, spec = env.state, env.state.spec
        current = state.last_applied
        result = RollbackResult(
            outcome="refused", environment=input.environment, from_version=current.version if current else ""
        )
        refusal = requester_refusal(spec, input.environment, input.requested_by)
        if refusal:
            return self._done(result, "refused", refusal)
        target = await _target(input, state)
        if isinstance(target, str):
            return self._done(result, "refused", target)
        target_version, digest = target
        result.to_version, result.digest = target_version, digest
        workflow.upsert_search_attributes([FERRY_VERSION.value_set(target_version)])
        workflow.set_current_details(
            f"rolling {input.environment} back to {target_version} ({digest[:19]}…) for "
            f"{input.requested_by}; waiting until it is applied and healthy"
        )
        request_id = await send_pin(
            input.environment,
            spec.repository,
            target_version,
            digest,
            by=input.requested_by,
            kind="rollback",
            reason=input.reason or "rollback",
            hold=current.version if current and current.version != target_version else None,
        )
        outcome, reason, _ = await self.await_pin_outcome(
            input.environment, digest, request_id, spec.health_timeout.delta + policies.PIN_OUTCOME_SLACK
        )
        return self._done(result, outcome, reason)

    @staticmethod
    def _done(result: RollbackResult, outcome: str, reason: str) -> RollbackResult:
        workflow.upsert_search_attributes([FERRY_PHASE.value_set(outcome.capitalize())])
        workflow.set_current_details(f"**{outcome.capitalize()}**: {reason}")
        metrics.outcome("rollback", result.environment, outcome)
        return result.model_copy(update={"outcome": outcome, "reason": reason})


async def _target(input: RollbackInput, state: EnvironmentState) -> tuple[str, str] | str:
    """-> (version, digest) to roll back to, or why not: a named version must be released, not newer than the
    applied one, and (without an approval) known-good; by default, the last known-good before the current one."""
    spec, current = state.spec, state.last_applied
    if not input.to_version:
        earlier = earlier_known_good(state.good_history, current)
        if earlier is None:
            return "no earlier known-good version to roll back to"
        return earlier.version, earlier.digest
    if newer_than_applied(input.to_version, current) is not None:
        return (
            f"{input.to_version} is newer than the applied "
            f"{current.version if current else ''}: a rollback never goes forward (promote it)"
        )
    try:
        digest, _ = await resolve_release(spec.repository, input.to_version)
    except ActivityError as err:
        raise_if_cancelled(err)
        return f"{input.to_version} is not a released version: {cause_message(err, limit=None)}"
    if spec.approval.required and not is_known_good(state.good_history, digest):
        return (
            f"{input.to_version} ({digest}) was never applied and healthy "
            f"in {input.environment}: without an approval a rollback may only go to a "
            "known-good version (promote it instead)"
        )
    return input.to_version, digest
