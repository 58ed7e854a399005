"""RolloutWorkflow (rollout/<env>): one release walked out progressively, step by step, judged by real metrics.

Started by the environment when a new release is applied to a workload its strategy manages (workflows/
env_rollout.py). The canary is the release's own Deployment (applied by the reconcile without replicas); the
primary, its Services and the HTTPRoute are Ferry's (activities/cluster/rollout.py). The walk:
initialize -> the strategy's steps (set-weight, pause, analysis, approval) -> promote (the canary's template copied
to the primary, traffic back to it, the canary scaled to 0). A failed analysis, a rejection, an abort or a gate
that times out sends all traffic to the primary and scales the canary to 0; the environment then rolls its desired
state back to the last known-good release and holds this one. Every step, analysis interval and decision is a memo
upsert (history); a worker or server killed mid-walk resumes at the same step (timers and activities are durable).
"""

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from ferry.analysis import AnalysisQueryInput, CheckQuery, Failure, Result, check_queries, verdict
    from ferry.artifacts import FetchManifestInput
    from ferry.names import ROLLOUT_WORKFLOW, Memo, Query, Signal
    from ferry.oci import ANNOTATION_PUBLISHED_BY
    from ferry.progressive import (
        MAX_INTERVALS_KEPT,
        MAX_STEPS_KEPT,
        IntervalRecord,
        OutcomeKind,
        Phase,
        RolloutInput,
        RolloutOutcome,
        RolloutStatus,
        SteerRecord,
        StepRecord,
        decision_lines,
        gate_id,
    )
    from ferry.rollout_cluster import CanaryStatus, CanaryTarget
    from ferry.rollout_spec import Analysis, PlannedStep, plan
    from ferry.spec import env_workflow_id
    from ferry.times import timestamp
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.failures import cause_message, cause_type
    from workflows.rollout_steering import RolloutSteering
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_VERSION

__all__ = ["RolloutWorkflow"]


class _Stop(Exception):
    """The walk ends before its promotion: rolled back in traffic, and the environment told why."""

    def __init__(self, phase: Phase, outcome: OutcomeKind, reason: str, failures: list[Failure] | None = None):
        super().__init__(reason)
        self.phase, self.outcome, self.reason, self.failures = phase, outcome, reason, failures or []


@workflow.defn(name=ROLLOUT_WORKFLOW)
class RolloutWorkflow(RolloutSteering):
    @workflow.init
    def __init__(self, input: RolloutInput) -> None:
        self._input = input
        self._status = RolloutStatus(environment=input.environment, candidate=input.candidate, primary=input.primary)
        self._paused = False
        self._abort: SteerRecord | None = None
        self._promote: SteerRecord | None = None
        self._approved: dict[int, SteerRecord] = {}
        self._rejected: SteerRecord | None = None
        self._awaiting: int | None = None

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutOutcome:
        self._status.run_id = workflow.info().run_id
        workflow.upsert_search_attributes(
            [
                FERRY_ENVIRONMENT.value_set(input.environment),
                FERRY_VERSION.value_set(input.candidate.version),
                FERRY_PHASE.value_set(self._status.phase),
            ]
        )
        try:
            outcome = await self._walk()
        except asyncio.CancelledError:
            # pre-empted by a newer release (the environment cancels): traffic back to the primary first
            outcome = await self._stopped(_Stop("Superseded", "superseded", "a newer release pre-empted it"))
        except _Stop as stop:
            outcome = await self._stopped(stop)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._tell(outcome)
        return outcome

    def _target(self) -> CanaryTarget:
        i = self._input
        return CanaryTarget.of(i.environment, i.cluster, i.namespace, i.strategy)

    async def _walk(self) -> RolloutOutcome:
        self._phase("Initializing")
        await self._act(stubs.rollout_initialize, "initialize")
        if not self._input.immediate and self._input.strategy.has_approval() and not self._input.publisher:
            await self._read_publisher()
        if self._input.immediate:
            return await self._promoted(self._input.reason or "promoted at once")
        steps = plan(self._input.strategy)
        for position, step in enumerate(steps):
            self._status.step = position
            await self._unpaused()
            if self._promote is not None and step.kind != "promote":
                self._record_step(step, "skipped", f"promote by {self._promote.by}")
                continue
            await self._take(step)
        return await self._promoted(f"promoted by {self._promote.words()}" if self._promote else "every step passed")

    async def _take(self, step: PlannedStep) -> None:
        if step.kind in ("set-weight", "switch"):
            await self._set_weight(step)
        elif step.kind == "preview":
            await self._preview(step)
        elif step.kind == "pause":
            await self._pause_step(step)
        elif step.kind == "analysis":
            await self._analyse(step)
        elif step.kind == "approval":
            await self._gate(step)
        # "promote" is the walk's end: _promoted()

    # ------------------------------------------------------------------------------------------------ steps

    async def _set_weight(self, step: PlannedStep) -> None:
        self._phase("Progressing")
        await self._act(stubs.rollout_set_weight, f"set weight {step.weight}", step.weight)
        self._status.weight = step.weight
        await self._until("the canary", lambda s: s.canary_ready >= s.canary_replicas > 0 or not s.canary_replicas)
        self._record_step(step, "done", f"{step.weight}% of traffic to {self._input.candidate.version}")

    async def _preview(self, step: PlannedStep) -> None:
        """Blue-green: green scaled up and ready, answering mirrored copies of every request; the primary answers."""
        self._phase("Progressing")
        await self._act(stubs.rollout_preview, "preview")
        await self._until("the preview", lambda s: s.canary_ready >= s.canary_replicas > 0)
        self._record_step(step, "done", f"{self._input.candidate.version} previewed on mirrored requests")

    async def _pause_step(self, step: PlannedStep) -> None:
        canary = self._input.strategy.canary
        assert canary is not None and step.index >= 0
        duration = canary.steps[step.index].pause
        assert duration is not None
        self._phase("Progressing")
        await self._wait(duration.delta, lambda: self._promote is not None)
        self._record_step(step, "done", f"paused {duration}")

    async def _analyse(self, step: PlannedStep) -> None:
        analysis = self._analysis_of(step)
        target = self._target()
        queries = check_queries(analysis, target.namespace, target.workload)
        intervals: list[list[Result]] = []
        self._phase("Analysing")
        for interval in range(analysis.count):
            await self._wait(analysis.interval.delta, lambda: self._promote is not None)
            await self._unpaused()
            if self._promote is not None:
                self._record_step(step, "skipped", f"promote by {self._promote.by}")
                return
            intervals.append(await self._query(queries))
            judged = verdict(analysis, queries, intervals)
            self._record_interval(step, interval, queries, intervals[-1], judged.failures)
            if judged.outcome == "failed":
                self._status.failures = judged.failures
                reason = "; ".join(f"{f.metric} {_value(f.value)} (want {f.threshold})" for f in judged.failures[-3:])
                raise _Stop("Failed", "failed", f"analysis failed at {step.weight}%: {reason}", judged.failures)
            if judged.outcome == "passed":
                break
        self._record_step(step, "passed", f"{len(intervals)} interval(s) at {step.weight}%")

    def _analysis_of(self, step: PlannedStep) -> Analysis:
        strategy = self._input.strategy
        if strategy.blue_green is not None:
            assert strategy.blue_green.preview_analysis is not None
            return strategy.blue_green.preview_analysis
        assert strategy.canary is not None
        analysis = strategy.canary.steps[step.index].analysis
        assert analysis is not None
        return analysis

    async def _gate(self, step: PlannedStep) -> None:
        self._awaiting = step.index
        self._status.awaiting = gate_id(self._input.environment, step.index)
        self._phase("AwaitingApproval")
        timeout = self._input.approval.timeout.delta
        try:
            await self._wait(
                timeout, lambda: step.index in self._approved or self._rejected is not None or self._promote is not None
            )
        finally:
            self._awaiting, self._status.awaiting = None, ""
        if self._rejected is not None:
            raise _Stop("Aborted", "aborted", f"the approval step was refused: {self._rejected.words()}")
        approval = self._approved.get(step.index) or self._promote
        if approval is None:
            raise _Stop("Failed", "failed", f"the approval step waited {self._input.approval.timeout} for a decision")
        self._record_step(step, "approved", approval.words())

    async def _promoted(self, why: str) -> RolloutOutcome:
        """Flagger's promotion: the canary's template to the primary, wait for it, all traffic back, canary to 0."""
        self._phase("Promoting")
        await self._act(stubs.rollout_promote, "promote")
        await self._until("the primary", lambda s: s.primary_matches_canary and s.primary_ready >= s.primary_replicas)
        await self._act(stubs.rollout_finish, "finish")
        self._status.weight = 0
        self._record_step(PlannedStep(index=-1, kind="promote", weight=100), "done", why)
        self._status.primary = self._input.candidate
        self._phase("Promoted")
        return self._outcome("promoted", why)

    async def _stopped(self, stop: _Stop) -> RolloutOutcome:
        """All traffic to the primary and the canary scaled to 0, whatever ended the walk (retried through an
        outage: a rollback is never given up)."""
        self._phase(stop.phase)
        self._status.reason = stop.reason
        try:
            await workflow.execute_activity(
                stubs.rollout_finish,
                self._target(),
                start_to_close_timeout=policies.ROLLOUT_CALL_TIMEOUT,
                retry_policy=policies.OUTAGE_RETRY,
                summary="traffic back to the primary",
            )
            self._status.weight = 0
        except ActivityError as err:
            stop.reason = f"{stop.reason}; traffic could not be restored: {cause_message(err)}"[:1000]
        self._memo({"ended": {"phase": stop.phase, "reason": stop.reason}})
        return self._outcome(stop.outcome, stop.reason, stop.failures)

    # ---------------------------------------------------------------------------------------------- helpers

    async def _read_publisher(self) -> None:
        """Who published the candidate, for its gates: the release's annotation (a claim; an environment that
        verifies releases passes the publisher their signature attests instead)."""
        manifest = await workflow.execute_activity(
            stubs.fetch_manifest,
            FetchManifestInput(repository=self._input.repository, reference=self._input.candidate.digest),
            start_to_close_timeout=policies.REGISTRY_CALL_TIMEOUT,
            retry_policy=policies.OUTAGE_RETRY,
            summary="read the release's publisher",
        )
        self._input.publisher = manifest.annotations.get(ANNOTATION_PUBLISHED_BY, "")

    async def _act(self, activity: Callable[..., Any], what: str, *extra: Any) -> CanaryStatus:
        """A rollout activity on the cluster: outages retried (durably), a refusal ends the walk failed."""
        try:
            status: CanaryStatus = await workflow.execute_activity(
                activity,
                args=[self._target(), *extra],
                start_to_close_timeout=policies.ROLLOUT_CALL_TIMEOUT,
                retry_policy=policies.OUTAGE_RETRY,
                summary=f"{what} ({self._input.candidate.version})",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise asyncio.CancelledError() from err
            raise _Stop("Failed", "failed", f"{what}: {cause_type(err)}: {cause_message(err)}") from None
        return status

    async def _until(self, what: str, ready: Callable[[CanaryStatus], bool]) -> None:
        """Poll the workload until `ready`, backing off; failed when not ready by the ready timeout."""
        deadline = workflow.now() + timedelta(seconds=self._input.ready_timeout_seconds)
        delay = 1.0
        while not ready(await self._act(stubs.rollout_status, f"read {what}")):
            if workflow.now() >= deadline:
                raise _Stop("Failed", "failed", f"{what} was not ready within {self._input.ready_timeout_seconds}s")
            await self._wait(timedelta(seconds=delay), lambda: False)
            delay = min(delay * 2, policies.ROLLOUT_POLL_MAX.total_seconds())

    async def _query(self, queries: list[CheckQuery]) -> list[Result]:
        """One interval's results. Prometheus unreachable is waited for, bounded (METRICS_WAIT); then, and for a
        query Prometheus refuses, every check of the interval is an error: the analysis fails safe."""
        input = AnalysisQueryInput(environment=self._input.environment, cluster=self._input.cluster, queries=queries)
        try:
            result = await workflow.execute_activity(
                stubs.query_analysis,
                input,
                start_to_close_timeout=policies.ANALYSIS_QUERY_TIMEOUT,
                schedule_to_close_timeout=policies.METRICS_WAIT,
                retry_policy=policies.OUTAGE_RETRY,
                summary=f"analysis of {self._input.candidate.version}",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise asyncio.CancelledError() from err
            why = f"{cause_type(err) or 'unavailable'}: {cause_message(err, 300)}"
            return [Result(kind="error", error=why) for _ in queries]
        return result.results

    async def _wait(self, delta: timedelta, done: Callable[[], bool]) -> None:
        """A durable wait that an abort (or `done`) cuts short; an abort ends the walk."""
        try:
            await workflow.wait_condition(lambda: self._abort is not None or done(), timeout=delta)
        except TimeoutError:
            pass
        self._aborted()

    async def _unpaused(self) -> None:
        if self._paused:
            before = self._status.phase
            self._phase("Paused")
            await workflow.wait_condition(lambda: not self._paused or self._abort is not None)
            self._phase(cast(Phase, before))
        self._aborted()

    def _aborted(self) -> None:
        if self._abort is not None:
            raise _Stop("Aborted", "aborted", f"aborted: {self._abort.words()}: {self._abort.reason}"[:1000])

    def _phase(self, phase: Phase) -> None:
        if phase != self._status.phase:
            workflow.upsert_search_attributes([FERRY_PHASE.value_set(phase)])
        self._status.phase = phase

    def _record_step(self, step: PlannedStep, outcome: str, detail: str) -> None:
        record = StepRecord(
            index=step.index, kind=step.kind, weight=step.weight, at=self._now(), outcome=outcome, detail=detail[:500]
        )
        self._status.steps = [*self._status.steps, record][-MAX_STEPS_KEPT:]
        self._memo({"step": record.model_dump(mode="json")})
        workflow.logger.info("rollout of %s: %s %s (%s)", self._input.candidate.version, step.kind, outcome, detail)

    def _record_interval(
        self, step: PlannedStep, interval: int, queries: list[CheckQuery], results: list[Result], failed: list[Failure]
    ) -> None:
        values = {
            q.name: (r.value * q.scale if r.kind == "value" and r.value is not None else None)
            for q, r in zip(queries, results, strict=True)
        }
        record = IntervalRecord(
            step=step.index,
            interval=interval,
            at=self._now(),
            values=values,
            failed=[f"{f.metric} {f.threshold}" for f in failed if f.interval == interval],
        )
        self._status.intervals = [*self._status.intervals, record][-MAX_INTERVALS_KEPT:]
        self._memo({"analysis": record.model_dump(mode="json")})

    def _memo(self, entry: dict[str, Any]) -> None:
        workflow.upsert_memo({Memo.ROLLOUT_STEP: entry})

    def _now(self) -> str:
        return timestamp(workflow.now())

    def _outcome(self, kind: OutcomeKind, reason: str, failures: list[Failure] | None = None) -> RolloutOutcome:
        return RolloutOutcome(
            environment=self._input.environment,
            version=self._input.candidate.version,
            digest=self._input.candidate.digest,
            run_id=workflow.info().run_id,
            outcome=kind,
            reason=reason[:1000],
            failures=(failures or [])[:16],
            decisions=decision_lines(self._status.decisions),
        )

    async def _tell(self, outcome: RolloutOutcome) -> None:
        handle = workflow.get_external_workflow_handle(env_workflow_id(self._input.environment))
        try:
            await handle.signal(Signal.ROLLOUT_OUTCOME, outcome)
        except Exception as err:  # NB: the environment is gone (terminated): nothing is left to tell
            workflow.logger.warning("rollout outcome not delivered to %s: %s", self._input.environment, err)

    @workflow.query(name=Query.STATUS, description="phase, step, weight, analysis intervals, decisions")
    def status(self) -> RolloutStatus:
        return self._status

    @workflow.signal(dynamic=True, description="Any signal: dropped (a rollout is steered by its Updates)")
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        workflow.logger.warning("signal %r to a rollout dropped: steer it with its Updates", name[:100])


def _value(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"
