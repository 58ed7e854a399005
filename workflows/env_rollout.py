"""The environment's side of progressive delivery (spec.strategy): start, pre-empt and settle its rollouts.

A release applied to an environment with a strategy is not known-good, and its pin's sender is not answered, until
its RolloutWorkflow promotes it. The rollout answers with a signal; the environment takes it only from the run it
started, and a promotion only once the cluster shows the primary serving the candidate's template (a signal is a
claim). A failed or aborted rollout is rolled back in the desired state: the release is held and the environment is
pinned back to its last known-good release (the primary), as a failed health check is (workflows/env_health.py).
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.environment import CanaryRun, HealthState, LenientPayload, VersionRef, first_payload
    from ferry.events import EventType
    from ferry.names import ROLLOUT_WORKFLOW, Signal
    from ferry.progressive import RolloutInput, RolloutOutcome
    from ferry.rollout_cluster import CanaryTarget
    from ferry.spec import rollout_workflow_id
    from ferry.times import parse_timestamp
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_health import EnvironmentHealth
    from workflows.failures import cause_message

_ROLLBACK_KINDS = ("rollback", "auto-rollback")


class EnvironmentRollouts(EnvironmentHealth):
    async def _progressive(self, desired: VersionRef, health: HealthState) -> bool:
        """True when the strategy's rollout judges `desired` (started here when it is new): the iteration does not
        call it known-good. A release that failed its health check is judged as before (rolled back)."""
        state = self._state
        if state.spec.strategy is None or health.status != "Healthy":
            return False
        if state.primary is not None and state.primary.digest == desired.digest:
            return False  # what the primary serves: judged as any steady release
        if state.rollout is not None and state.rollout.digest == desired.digest:
            state.rollout = None  # the canary's own readiness is the rollout's to judge from here
        run = state.canary
        if run is not None and run.digest == desired.digest and run.outcome is None:
            await self._overdue(run)
            return True
        if desired.digest in state.failed_rollouts or run is not None:
            return True
        await self._start_rollout(desired)
        return True

    async def _overdue(self, run: CanaryRun) -> None:
        """A rollout that never answered (terminated by hand, say) within the longest its strategy can take: its
        traffic is sent back to the primary from here, and the release is rolled back as if it had failed."""
        spec = self._state.spec
        assert spec.strategy is not None
        longest = spec.strategy.longest(spec.health_timeout.delta, spec.approval.timeout.delta)
        if workflow.now() < parse_timestamp(run.started_at) + longest + policies.ROLLOUT_ANSWER_SLACK:
            return
        try:
            await workflow.execute_activity(
                stubs.rollout_finish,
                self._canary_target(),
                start_to_close_timeout=policies.ROLLOUT_CALL_TIMEOUT,
                retry_policy=policies.OUTAGE_RETRY,
            )
        except ActivityError as err:
            self._cancelled(err)
            workflow.logger.warning("an unanswered rollout's traffic was not restored: %s", cause_message(err))
        await self._cancel_rollout(run.run_id)
        run.outcome = RolloutOutcome(
            environment=spec.name,
            version=run.version,
            digest=run.digest,
            run_id=run.run_id,
            outcome="failed",
            reason=f"the rollout did not answer within {longest + policies.ROLLOUT_ANSWER_SLACK}",
        )
        await self._settle_rollout()

    async def _start_rollout(self, desired: VersionRef) -> None:
        state, spec = self._state, self._state.spec
        assert spec.strategy is not None
        pin = state.pin
        rollback = pin is not None and pin.digest == desired.digest and pin.kind in _ROLLBACK_KINDS
        immediate = state.primary is None or rollback
        why = "the first release: the primary is made from it" if state.primary is None else ""
        why = f"a {pin.kind} to it: promoted at once" if rollback and pin is not None else why
        input = RolloutInput(
            environment=spec.name,
            namespace=spec.namespace,
            cluster=spec.cluster.name or "",
            repository=spec.repository,
            candidate=desired,
            primary=state.primary,
            strategy=spec.strategy,
            approval=spec.approval,
            publisher=state.verified.get(desired.digest, ""),
            immediate=immediate,
            ready_timeout_seconds=int(spec.health_timeout.delta.total_seconds()),
            reason=why,
        )
        try:
            handle = await workflow.start_child_workflow(
                ROLLOUT_WORKFLOW,
                input,
                id=rollout_workflow_id(spec.name),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"roll {desired.version} out to {spec.name}",
            )
        except WorkflowAlreadyStartedError:
            # a rollout this state does not know of (a run that replaced a lost one): stopped, started next time
            await self._cancel_rollout(None)
            self._wake = True
            return
        state.canary = CanaryRun(
            version=desired.version, digest=desired.digest, run_id=handle.first_execution_run_id, started_at=self._now()
        )
        steps = "promoted at once" if immediate else f"{spec.strategy.kind_words()}"
        self._record(
            EventType.ROLLOUT_STARTED,
            f"rolling {desired.version} out: {steps}{' (' + why + ')' if why else ''}",
            version=desired.version,
            digest=desired.digest,
        )

    async def _preempt(self, desired: VersionRef) -> None:
        """A rollout walking another release than the one desired now (a newer pin or release, a rollback) is
        cancelled before anything is applied: it sends all traffic back to the primary and answers."""
        run = self._state.canary
        strategy_kept = self._state.spec.strategy is not None
        if run is None or (run.digest == desired.digest and strategy_kept) or run.outcome is not None:
            return
        await self._cancel_rollout(run.run_id)
        try:
            await workflow.wait_condition(
                lambda: self._state.canary is None or self._state.canary.outcome is not None,
                timeout=policies.ROLLOUT_SUPERSEDE_WAIT,
            )
        except TimeoutError:
            workflow.logger.warning("rollout of %s did not answer its cancellation in time", run.version)
        self._state.canary = None
        self._record(
            EventType.ROLLOUT_SUPERSEDED,
            f"the rollout of {run.version} was pre-empted by "
            f"{desired.version if strategy_kept else 'the removal of the strategy'}",
            version=run.version,
            digest=run.digest,
        )

    async def _cancel_rollout(self, run_id: str | None) -> None:
        handle = workflow.get_external_workflow_handle(rollout_workflow_id(self._state.spec.name), run_id=run_id)
        try:
            await handle.cancel()
        except Exception as err:  # NB: it ended already: nothing to cancel
            workflow.logger.info("rollout cancel: %s", err)

    async def _settle_rollout(self) -> None:
        """Act on a rollout's answer: promoted (checked against the cluster) or rolled back in the desired state."""
        run = self._state.canary
        if run is None or run.outcome is None:
            return
        outcome, candidate = run.outcome, VersionRef(version=run.version, digest=run.digest)
        self._state.canary = None
        decided = "; ".join(outcome.decisions)[:400]
        if outcome.outcome == "superseded":
            return
        if outcome.outcome == "promoted":
            refusal = await self._promotion_refusal()
            if not refusal:
                self._state.primary = candidate
                self._known_good(candidate)
                self._record(
                    EventType.ROLLOUT_PROMOTED,
                    f"{candidate.version} promoted: {outcome.reason}{'; ' + decided if decided else ''}"[:1000],
                    version=candidate.version,
                    digest=candidate.digest,
                )
                self._answer(self._state.pin, candidate, "succeeded", "rolled out progressively and promoted")
                return
            outcome = outcome.model_copy(update={"outcome": "failed", "reason": refusal})
            await self._cancel_rollout(run.run_id)  # whatever it is still doing: traffic back to the primary
        self._rolled_back(candidate, outcome, decided)

    def _rolled_back(self, candidate: VersionRef, outcome: RolloutOutcome, decided: str) -> None:
        state = self._state
        state.failed_rollouts = [*state.failed_rollouts, candidate.digest][-policies.MAX_FAILED_ROLLOUTS :]
        failures = [
            f"{f.metric}={'no data' if f.value is None else f'{f.value:.4g}'} (want {f.threshold})"
            for f in outcome.failures
        ]
        self._record(
            EventType.ROLLOUT_FAILED,
            f"the rollout of {candidate.version} {outcome.outcome}: {outcome.reason}"
            f"{'; ' + decided if decided else ''}; all traffic is back on the primary"[:1000],
            version=candidate.version,
            digest=candidate.digest,
            objects={"failed_checks": failures} if failures else {},
        )
        health = HealthState(
            status="Failed",
            reason=f"rollout {outcome.outcome}: {outcome.reason}"[:1000],
            digest=candidate.digest,
            at=self._now(),
        )
        pin = state.pin
        self._auto_rollback(candidate, health)
        rolled_back = state.pin is not None and state.pin.kind == "auto-rollback"
        self._answer(pin, candidate, "failed", health.reason, rolled_back)
        self._wake = True

    def _canary_target(self) -> CanaryTarget:
        spec = self._state.spec
        assert spec.strategy is not None
        return CanaryTarget.of(spec.name, spec.cluster.name or "", spec.namespace, spec.strategy)

    async def _promotion_refusal(self) -> str:
        """'' when the cluster shows the primary serving the canary's template; else why a promotion is not taken."""
        if self._state.spec.strategy is None:
            return "the strategy was removed while the rollout ran"
        try:
            status = await workflow.execute_activity(
                stubs.rollout_status,
                self._canary_target(),
                start_to_close_timeout=policies.ROLLOUT_CALL_TIMEOUT,
                schedule_to_close_timeout=timedelta(minutes=10),
                retry_policy=policies.OUTAGE_RETRY,
            )
        except ActivityError as err:
            self._cancelled(err)
            return f"its promotion could not be checked: {cause_message(err)}"
        return "" if status.primary_matches_canary else "it claims a promotion the cluster does not show"

    @workflow.signal(
        name=Signal.ROLLOUT_OUTCOME,
        description="Sent by this environment's RolloutWorkflow when it ends; from any other run it is dropped",
    )
    def rollout_outcome(self, *payloads: object) -> None:
        payload: LenientPayload = first_payload(payloads)
        run = self._state.canary
        try:
            outcome = RolloutOutcome.model_validate(payload.root)
        except pydantic.ValidationError:
            outcome = None
        if outcome is None or run is None or outcome.run_id != run.run_id or outcome.digest != run.digest:
            self._state.unknown_signals += 1  # counted and dropped, as any signal not from its sender
            workflow.logger.warning("rollout outcome not from the running rollout: dropped")
            self._size_check = self._bounded
            return
        run.outcome = outcome
        self._wake = True
