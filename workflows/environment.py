"""EnvironmentWorkflow: one per environment, forever (continue-as-new): resolve, reconcile, health, record."""

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, CancelledError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.environment import (
        ActorRequest,
        Applied,
        EnvironmentInput,
        EnvironmentState,
        LenientPayload,
        Rollout,
        first_payload,
    )
    from ferry.events import EventType
    from ferry.names import Signal
    from ferry.reconcile import CheckResult, HealthState, ReconcileResult, VersionRef
    from ferry.times import timestamp
    from workflows import activity_stubs as stubs
    from workflows import outbox as alerting
    from workflows import policies
    from workflows.env_events import EnvironmentEvents
    from workflows.env_rollout import EnvironmentRollouts
    from workflows.env_source import EnvironmentSource
    from workflows.env_spec import SpecUpdates
    from workflows.patches import (
        ANSWERS_BEFORE_CONTINUE_AS_NEW,
        CANCEL_CONTINUES_AS_NEW,
        CANCEL_SUSPENDS,
        FLOOD_BOUNDED,
        GATE_HARDENED,
        HEALTH_FROM_APPLY,
        LOCAL_CHECK,
        RECORD_RECOVERED,
        UPGRADE_ON_VERSION_CHANGE,
    )
    from workflows.patches import env_patched as _patched
    from workflows.pin_protocol import EnvironmentPins


__all__ = ["EnvironmentWorkflow"]

_RESERVED_ACTORS = frozenset({"cancel request"})


@workflow.defn(name="EnvironmentWorkflow")
class EnvironmentWorkflow(SpecUpdates, EnvironmentSource, EnvironmentRollouts, EnvironmentPins, EnvironmentEvents):
    @workflow.init
    def __init__(self, input: EnvironmentInput) -> None:
        self._state: EnvironmentState = input.state
        self._wake = False
        self._iterations_this_run = 0
        self._published: tuple[str, ...] = ()
        self._answers: set[asyncio.Task[None]] = set()  # pin outcomes being signalled back
        self._bounded = False  # FLOOD_BOUNDED, decided once per run (run())
        self._size_check = False  # a message arrived: is the history getting too large?
        self._kept: dict[str, Any] | None = None  # the record last written to the memo (Memo.RECORD)
        self._recovering = False  # the last run's record is being read: nothing of this run's is a record yet

    @workflow.run
    async def run(self, input: EnvironmentInput) -> None:
        self._bounded = _patched(FLOOD_BOUNDED)
        if workflow.info().continued_run_id is None and _patched(RECORD_RECOVERED):
            await self._recover()
        self._publish()
        while True:
            try:
                await self._cycle()
            except (asyncio.CancelledError, CancelledError, ActivityError) as err:
                # ActivityError reaches here only as a cancellation (_cancelled() re-raises nothing else)
                if not is_cancelled_exception(err) or not _patched(CANCEL_SUSPENDS):
                    raise
                await self._suspend_on_cancel()

    async def _suspend_on_cancel(self) -> None:
        """An environment is never cancelled (its record would end): a cancel request suspends it, whatever it was
        doing (a running activity is cancelled with it), and the run continues as new so a later cancel is heard."""
        reason = workflow.cancellation_reason() or ""
        already = " (it was suspended already)" if self._state.suspended else ""
        self._state.suspended = True
        self._record(
            EventType.SUSPENDED,
            f"a cancel request{': ' + reason[:200] if reason else ''} suspends the "
            f"environment instead of ending it{already} (ferry resume to apply again; terminate the workflow "
            "to remove it)",
            by="cancel request",
        )
        self._publish()
        if _patched(CANCEL_CONTINUES_AS_NEW):
            await self._continue_as_new()

    def _moving_build(self) -> bool:
        """Worker Versioning: the deployment's current build is no longer this run's."""
        return workflow.info().is_target_worker_deployment_version_changed() and _patched(UPGRADE_ON_VERSION_CHANGE)

    async def _continue_as_new(self) -> None:
        # let running signal/update handlers finish so nothing they do is lost.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await alerting.outbox(self).flush()  # no notification is lost with the run (nothing sent: no-op)
        if self._answers and _patched(ANSWERS_BEFORE_CONTINUE_AS_NEW):
            await asyncio.gather(*self._answers)  # nor any pin outcome
        # under Worker Versioning an environment is pinned to its build within a run and moves to the
        # deployment's current build here, at continue-as-new (workers/versioning.py)
        workflow.continue_as_new(
            EnvironmentInput(state=self._state),
            initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
        )

    async def _cycle(self) -> None:
        """One iteration and the wait for the next (continue-as-new when the run is long enough)."""
        self._wake = False
        if not self._state.suspended:
            await self._iterate()
        self._state.iterations += 1
        self._iterations_this_run += 1
        self._publish()
        if (
            self._iterations_this_run >= policies.MAX_ITERATIONS_PER_RUN
            or workflow.info().is_continue_as_new_suggested()
            or self._moving_build()
            or self._history_full()
        ):
            await self._continue_as_new()
        interval = self._next_interval()
        self._state.next_reconcile_at = timestamp(workflow.now() + interval)
        self._describe()
        await self._wait(workflow.now() + interval)

    async def _wait(self, until: datetime) -> None:
        """Until the next reconcile, a wake-up, or a reason to continue as new: a new current build (the signal or
        task that brought the news wakes it) or a history grown large (any message wakes a look at its size)."""
        while True:
            self._size_check = False
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._wake or self._size_check or workflow.info().is_target_worker_deployment_version_changed()
                    ),
                    timeout=max(until - workflow.now(), timedelta(seconds=1)),
                    timeout_summary=f"next reconcile ({self._state.spec.interval})",
                )
            except TimeoutError:
                return
            if self._moving_build() or self._history_full():
                await self._continue_as_new()
            if self._wake or not self._bounded:
                return

    def _history_full(self) -> bool:
        """The server suggests continue-as-new, or the history passed Ferry's own bound (long before the
        server's limit terminates the run)."""
        info = workflow.info()
        return self._bounded and (
            info.is_continue_as_new_suggested() or info.get_current_history_size() > policies.MAX_HISTORY_BYTES
        )

    def _next_interval(self) -> timedelta:
        """The spec's interval; sooner while an applied release waits for its verdict past a cut health wait."""
        interval = self._state.spec.interval.delta
        rollout, health = self._state.rollout, self._state.health
        if rollout is not None and health.status == "Unknown" and health.digest == rollout.digest:
            return min(interval, policies.REJUDGE_AFTER)
        return interval

    async def _iterate(self) -> None:
        """check → resolve (and verify) → reconcile → record → wait for health → judge (or roll out progressively)."""
        await self._settle_rollout()  # a progressive rollout's answer first: it may pin back
        check = await self._check() if _patched(LOCAL_CHECK) else None
        desired = await self._desired(check)
        if desired is None:
            return
        await self._preempt(desired)
        applied = self._state.last_applied
        baseline = applied is not None and applied.digest == desired.digest
        result = await self._reconciled(desired, baseline, check.result if check is not None else None)
        if result is None:
            return
        self._state.cluster_unreachable_since, self._state.cluster_error, self._state.last_error = None, "", ""
        health = await self._recorded(desired, baseline, result)
        self._state.health = health
        if await self._progressive(desired, health):
            return  # its rollout judges it (workflows/env_rollout.py)
        self._judge(desired, baseline, health)

    async def _desired(self, check: CheckResult | None) -> VersionRef | None:
        """What this iteration applies: resolved (by the check, or now), and verified when the spec says so."""
        if self._state.pin is not None and self._state.pin.confirm and not await self._confirmed(self._state.pin):
            return None
        desired = await self._resolve(check.found if check is not None and check.found is not None else None)
        if desired is None:
            return None
        if self._state.spec.verify is not None and not await self._verified(desired):
            current = self._current()  # keep reconciling (drift included) what was verified and applied before
            if current is None or current.digest == desired.digest or current.digest not in self._state.verified:
                return None
            return current
        return desired

    async def _reconciled(
        self, desired: VersionRef, baseline: bool, checked: ReconcileResult | None
    ) -> ReconcileResult | None:
        """The check's result when it found nothing to write, else a reconcile (None: it failed, recorded)."""
        applied = self._state.last_applied
        if (
            checked is not None
            and not checked.pending
            and baseline
            and applied is not None
            and applied.version == desired.version
        ):
            return checked  # the check found nothing to write: no activity this iteration
        try:
            return await workflow.execute_activity(
                stubs.reconcile_environment,
                self._reconcile_input(desired, baseline),
                start_to_close_timeout=self._state.spec.timeout.delta,
                retry_policy=policies.RECONCILE_RETRY,
                heartbeat_timeout=policies.RECONCILE_HEARTBEAT,
                summary=f"reconcile {desired.version} ({desired.digest[:19]}…)",
            )
        except ActivityError as err:
            self._cancelled(err)
            self._reconcile_failed(err, desired)
            return None

    async def _recorded(self, desired: VersionRef, baseline: bool, result: ReconcileResult) -> HealthState:
        """Record drift and what was applied; a change (or a new digest) waits for its rollout to be judged."""
        changes = result.changes
        if changes.drift:
            self._state.last_drift = self._record(
                EventType.DRIFT_CORRECTED,
                f"reverted hand edits on {changes.count('drift')} object(s)",
                version=desired.version,
                digest=desired.digest,
                objects=changes.drift,
            )
        if not changes.changed and baseline:
            if self._unjudged(desired):
                return await self._rejudged(desired, result.health)
            return result.health
        self._state.last_applied = Applied(
            version=desired.version,
            digest=desired.digest,
            revision=result.revision,
            at=self._now(),
            changes=changes.summary(),
        )
        self._record(
            EventType.APPLIED,
            f"{desired.version}: {changes.summary()}",
            version=desired.version,
            digest=desired.digest,
            objects={"created": changes.created, "updated": changes.updated, "deleted": changes.deleted},
        )
        # until the rollout is judged, the previous version's health would describe the wrong digest
        self._state.health = HealthState(
            status="Progressing",
            reason=f"waiting for {desired.version} to roll out",
            digest=desired.digest,
            at=self._now(),
        )
        if self._state.rollout is None or self._state.rollout.digest != desired.digest:  # one deadline a release
            self._state.rollout = Rollout(
                version=desired.version,
                digest=desired.digest,
                applied_at=self._now(),
                deadline=timestamp(workflow.now() + self._state.spec.health_timeout.delta),
            )
        if result.health.status == "Healthy" and result.health.digest == desired.digest and _patched(HEALTH_FROM_APPLY):
            # no workload was written (only those roll out; wait_healthy reads nothing else) and the unchanged
            # ones are healthy: judged by the reconcile itself, one activity (and workflow task) fewer
            return result.health.model_copy(update={"at": self._now()})
        return await self._wait_healthy(desired)

    @workflow.signal(
        dynamic=True,
        description="Any other signal name: counted (status: unknown_signals) and "
        "dropped; a flood of them makes the run continue as new, never grow past the history limit",
    )
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self._state.unknown_signals += 1
        if self._state.unknown_signals in (1, 10, 100) or self._state.unknown_signals % 1000 == 0:
            workflow.logger.warning("unknown signal %r dropped (%d so far)", name[:100], self._state.unknown_signals)
        self._size_check = self._bounded

    @workflow.signal(name=Signal.RECONCILE_NOW, description="Reconcile now instead of at the next interval: {}")
    def reconcile_now(self, *payloads: object) -> None:
        self._wake = True

    @workflow.signal(
        name=Signal.SUSPEND,
        description='Stop applying (new versions and drift correction): {"by": "alice", "reason": "incident 42"}',
    )
    def suspend(self, *payloads: object) -> None:
        actor = self._actor(first_payload(payloads))
        self._state.suspended = True
        self._record(EventType.SUSPENDED, f"suspended by {actor.by}: {actor.reason}", by=actor.by)
        self._wake = True

    @workflow.signal(name=Signal.RESUME, description='Start applying again: {"by": "alice", "reason": "..."}')
    def resume(self, *payloads: object) -> None:
        actor = self._actor(first_payload(payloads))
        self._state.suspended = False
        vouched = f" (vouching for its state: {self._state.unverified_record})" if self._state.unverified_record else ""
        self._state.unverified_record = ""
        self._record(EventType.RESUMED, f"resumed by {actor.by}: {actor.reason}{vouched}"[:1000], by=actor.by)
        self._keep_record()
        self._wake = True

    @staticmethod
    def _actor(payload: LenientPayload) -> ActorRequest:
        try:
            actor = ActorRequest.model_validate(payload.root if isinstance(payload.root, dict) else {})
        except pydantic.ValidationError:
            return ActorRequest()
        if actor.by.casefold() in _RESERVED_ACTORS or actor.by.casefold().startswith("ferry"):
            if _patched(GATE_HARDENED):  # NB: the names Ferry records for itself are not a sender's to claim
                actor.by = f"{actor.by[:100]} (claimed by a sender)"
        return actor
