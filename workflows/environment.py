"""EnvironmentWorkflow: one per environment, forever (continue-as-new): resolve, reconcile, health, record."""

import asyncio
import contextlib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.environment import (
        ActorRequest,
        Applied,
        CheckInput,
        CheckResult,
        EnvironmentInput,
        EnvironmentSpec,
        EnvironmentState,
        EnvironmentStatus,
        Event,
        EventType,
        HealthInput,
        HealthState,
        LenientPayload,
        PendingSpec,
        Pin,
        PinOutcome,
        PinRequest,
        PinVerdict,
        PlanRequest,
        PlanResult,
        ReconcileInput,
        ReconcileResult,
        ResolveInput,
        ResolveResult,
        Rollout,
        SpecUpdate,
        SpecUpdateResult,
        VersionRef,
        env_workflow_id,
        first_payload,
        people_check,
        protected_changes,
        spec_diff,
        spec_digest,
    )
    from ferry.errors import ErrorType
    from ferry.names import Memo, Query, Signal, Update
    from ferry.oci import is_digest
    from ferry.promotion import ConfirmPinInput, ConfirmPinResult, DecisionContext, Judgement, judge
    from ferry.recovery import BASELINE_3, RECORD_RECOVERED, LastRecordInput, LastRecordResult, record_of, recover
    from ferry.times import parse_timestamp, timestamp
    from ferry.versions import try_parse_tag
    from workflows import activity_stubs as stubs
    from workflows import metrics, policies
    from workflows import outbox as alerting
    from workflows.failures import cause_message, cause_type
    from workflows.pinning import GATE_HARDENED, PIN_CONFIRMED, verify_release
    from workflows.search_attributes import (
        FERRY_ENVIRONMENT,
        FERRY_PHASE,
        FERRY_REPOSITORY,
        FERRY_TRACKING,
        FERRY_VERSION,
    )



# NB: every patch an environment run may meet, folded into one. A run that starts on this code records one marker
# (and the SDK's TemporalChangeVersion upsert that goes with each marker) for BASELINE instead of one pair per patch
# it meets: 12 history events in a first rollout became 2, in every run after a continue-as-new too. Histories from
# before BASELINE (no marker) replay as before: patched(BASELINE) is False in them and each patch decides alone.
# A patch added after BASELINE must NOT be folded in (runs with BASELINE's marker never took its path): call
# workflow.patched() for it directly, or fold it into a new baseline that includes all of these.
BASELINE = "ferry-environment-baseline-1"
FOLDED_INTO_BASELINE = frozenset({
    "ferry-audit-memo", "ferry-alerts", "ferry-publish-tracking", "ferry-publish-on-change", "ferry-cancel-suspends",
    "ferry-local-check", "ferry-pin-outcome-signal", "ferry-pin-during-resolve", "ferry-health-preemptible",
    "ferry-health-outage-unjudged", "ferry-protected-spec",
    # NB: came with BASELINE (a run with its marker always had it); older runs meet it alone
    "ferry-health-from-apply"})


# Patches after BASELINE, folded into BASELINE_2 the same way (runs with BASELINE's marker meet each alone).
# A cancel that lands during an activity suspends the environment (older code recorded it as ReconcileFailed).
ACTIVITY_CANCEL_SUSPENDS = "ferry-activity-cancel-suspends"
# After a cancel suspends it, the run continues as new: the server takes one cancel request per run, so only a new
# run hears the next one.
CANCEL_CONTINUES_AS_NEW = "ferry-cancel-continues-as-new"
# A release whose health wait ended without a verdict is judged again, from its own deadline, on the next iteration.
HEALTH_REJUDGED = "ferry-health-rejudged"
# A continue-as-new waits for the pin outcomes being signalled back (older code could end the run before one was sent).
ANSWERS_BEFORE_CONTINUE_AS_NEW = "ferry-answers-before-continue-as-new"
# Signals of unknown names are counted and dropped, and any message wakes a check of the history's size: the run
# continues as new before a flood of signals pushes it past the server's limit (older code let the SDK buffer them).
FLOOD_BOUNDED = "ferry-flood-bounded"
# The deployment's current build changed (Worker Versioning): continue as new onto it at once.
UPGRADE_ON_VERSION_CHANGE = "ferry-upgrade-on-version-change"

# NB: the second baseline: every patch above and the gate's (workflows/pinning.py), so a run that starts on this code
# records one marker again. The same rule: a patch added after it is called alone, or folded into a third baseline.
BASELINE_2 = "ferry-environment-baseline-2"
FOLDED_INTO_BASELINE_2 = frozenset({
    ACTIVITY_CANCEL_SUSPENDS, CANCEL_CONTINUES_AS_NEW, HEALTH_REJUDGED, ANSWERS_BEFORE_CONTINUE_AS_NEW, FLOOD_BOUNDED,
    UPGRADE_ON_VERSION_CHANGE, GATE_HARDENED, PIN_CONFIRMED})

# Patches after BASELINE_2, folded into BASELINE_3 (ferry/recovery.py names it: the audit of a run's record reads it).
# Every run keeps its safety record in its memo (Memo.RECORD), and a run that is not a continue-as-new recovers the
# last run's before anything else (ferry/recovery.py, RECORD_RECOVERED): a termination or a start over production
# loses nothing.
# A pin's hold is taken only for the version it rolls back from (the applied one): no sender can fill the holds.
HOLD_OF_APPLIED = "ferry-hold-of-applied"
# A pin that cannot be confirmed in MAX_CONFIRM_ATTEMPTS iterations is refused (older runs tried again forever).
CONFIRM_BOUNDED = "ferry-confirm-bounded"
FOLDED_INTO_BASELINE_3 = frozenset({RECORD_RECOVERED, HOLD_OF_APPLIED, CONFIRM_BOUNDED})


def _patched(patch_id: str) -> bool:
    """workflow.patched(patch_id) for a patch folded into a baseline (patched() memoizes each for the run): a run
    with BASELINE_3's marker took every path; one with BASELINE_2's the first two sets; one with BASELINE's the
    first set; older runs meet each alone."""
    if patch_id in FOLDED_INTO_BASELINE:
        return (workflow.patched(BASELINE_3) or workflow.patched(BASELINE_2) or workflow.patched(BASELINE)
                or workflow.patched(patch_id))
    if patch_id in FOLDED_INTO_BASELINE_2:
        return workflow.patched(BASELINE_3) or workflow.patched(BASELINE_2) or workflow.patched(patch_id)
    if patch_id in FOLDED_INTO_BASELINE_3:
        return workflow.patched(BASELINE_3) or workflow.patched(patch_id)
    raise ValueError(f"{patch_id} is not folded into {BASELINE}, {BASELINE_2} or {BASELINE_3}: call "
                     "workflow.patched() for it")


def _approvers(verdicts: list[Judgement]) -> list[str]:
    """Who approved a pin as far as the environment can tell: 'name (SHA256:…)' when verified, else claimed."""
    return [f"{v.approver} ({v.fingerprint})" if v.verified else f"{v.approver} (claimed)"
            for v in verdicts if not v.refusal]


_RESERVED_ACTORS = frozenset({"cancel request"})
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PIN_FIELDS = {"version", "digest", "by", "reason", "kind", "request_id", "hold"}


@workflow.defn(name="EnvironmentWorkflow")
class EnvironmentWorkflow(alerting.Notifies):
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

    # ------------------------------------------------------------------------------------- helpers
    def _now(self) -> str:
        return timestamp(workflow.now())

    def _record(self, type_: EventType, message: str, **fields: object) -> Event:
        update = workflow.current_update_info()
        event = Event(at=self._now(), type=type_, message=message, update_id=update.id if update else "",
                      **fields)  # type: ignore[arg-type,unused-ignore]
        self._state.events = [*self._state.events, event][-policies.MAX_EVENTS_KEPT:]
        workflow.logger.info("%s: %s", type_, message)
        metrics.environment_event(self._state.spec.name, type_)
        # NB: audit reads operator events from history alone; a memo update puts each one there.
        # Behind patched(): older histories (before the audit trail) replay without these commands.
        if _patched("ferry-audit-memo"):
            workflow.upsert_memo({Memo.EVENT: event.model_dump(mode="json")})
        if _patched("ferry-alerts"):  # NB: a signal to the alert router from its own task: never waits
            alerting.outbox(self).notify(alerting.notification(
                type_, self._state.spec.name, message, version=event.version, digest=event.digest, by=event.by,
                details={"repository": self._state.spec.repository}))
        return event

    def _keep_record(self) -> None:
        """The safety record in the memo, when it changed: what a run that replaces this one recovers, readable
        even when this run is terminated or wedged (what its last completed workflow task wrote)."""
        if self._recovering or not _patched(RECORD_RECOVERED):
            return  # NB: a signal-with-start's pin or spec is the starter's until the last run's record is read
        kept = record_of(self._state).model_dump(mode="json")
        if kept != self._kept:
            workflow.upsert_memo({Memo.RECORD: kept})
            self._kept = kept

    async def _recover(self) -> None:
        """A run that is not its own continue-as-new (a start after a termination, or over a running or wedged run)
        begins from the last run's record, not from what its starter wrote (ferry/recovery.py)."""
        info = workflow.info()
        self._recovering = True
        try:
            found = await workflow.execute_activity(
                stubs.last_record, LastRecordInput(workflow_id=info.workflow_id, run_id=info.run_id),
                start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT, retry_policy=policies.RECORD_READ_RETRY,
                summary="the last run's record")
        except (ActivityError, asyncio.CancelledError, CancelledError) as err:
            # NB: a cancel request while reading suspends too, without continuing as new (the next run would take
            # this one's unrecovered state as its own)
            reason = "a cancel request arrived" if is_cancelled_exception(err) else \
                f"{cause_type(err)}: {cause_message(err)}"
            found = LastRecordResult(refusal=f"the last run's record could not be read ({reason})")
        finally:
            self._recovering = False
        if found.refusal:
            # NB: fail closed: never run a start's state as written when what the last run held is unknown; the
            # record says so, so a run replacing this one recovers nothing from it either until an SRE resumes
            self._state.suspended = True
            self._state.unverified_record = found.refusal[:500]
            self._record(EventType.SUSPENDED, f"{found.refusal}"[:800] + f"; suspended until an SRE checks "
                         f"(ferry resume {self._state.spec.name})", by="ferry (recovery)")
            return
        if not found.run_id:
            return
        state, notes = recover(self._state, found.record, now=self._now(),
                               pending_id=f"spec-{workflow.uuid4().hex[:12]}", by=f"a new run ({info.run_id})")
        self._state = state
        if found.record is None:
            self._record(EventType.RECORD_RECOVERED, f"a new run replaced run {found.run_id} ({found.status}); "
                         f"{found.note}")
            return
        self._record(EventType.RECORD_RECOVERED, f"a new run replaced run {found.run_id} ({found.status}): "
                     + ("; ".join(notes) + found.note)[:900])
        pending = state.pending_spec
        if pending is not None:
            self._record(EventType.SPEC_CHANGE_PENDING, f"spec change {pending.id} by the start of a new run waits "
                         f"for a signed approval: {'; '.join(pending.changes)}"[:1000], by=pending.by)

    def _phase(self) -> str:
        return self._state.phase

    def _publish(self) -> None:
        self._keep_record()
        applied = self._state.last_applied
        # NB: FerryTracking is for `ferry env list` from Visibility (patched: older histories never upserted it)
        tracking = self._state.spec.tracking if _patched("ferry-publish-tracking") else ""
        values = (self._state.spec.name, self._state.spec.repository, applied.version if applied else "",
                  self._phase(), tracking)
        # NB: upsert only on change, saving one history event per no-op iteration (patched: older
        # histories upserted every iteration).
        if _patched("ferry-publish-on-change") and values == self._published:
            return
        if self._published[3:4] == ("Failed",) and values[3] == "Healthy" and _patched("ferry-alerts"):
            alerting.outbox(self).notify(alerting.notification(  # resolves what the failure fired (endsAt)
                "Recovered", values[0], f"{values[0]} is healthy again on {values[2]}", version=values[2],
                resolves=list(alerting.RESOLVED_BY_RECOVERY)))
        self._published = values
        workflow.upsert_search_attributes([
            FERRY_ENVIRONMENT.value_set(self._state.spec.name),
            FERRY_REPOSITORY.value_set(self._state.spec.repository),
            FERRY_VERSION.value_set(applied.version if applied else ""),
            FERRY_PHASE.value_set(self._phase()),
            *([FERRY_TRACKING.value_set(tracking)] if tracking else []),
        ])

    # ----------------------------------------------------------------------------------------- run
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
                # NB: ActivityError reaches here only as a cancellation (_cancelled() re-raises nothing else)
                if not is_cancelled_exception(err) or not _patched("ferry-cancel-suspends"):
                    raise
                await self._suspend_on_cancel()

    async def _suspend_on_cancel(self) -> None:
        """An environment is never cancelled (its record would end): a cancel request suspends it, whatever it was
        doing (a running activity is cancelled with it), and the run continues as new so a later cancel is heard."""
        reason = workflow.cancellation_reason() or ""
        already = " (it was suspended already)" if self._state.suspended else ""
        self._state.suspended = True
        self._record(EventType.SUSPENDED, f"a cancel request{': ' + reason[:200] if reason else ''} suspends the "
                     f"environment instead of ending it{already} (ferry resume to apply again; terminate the workflow "
                     "to remove it)", by="cancel request")
        self._publish()
        if _patched(CANCEL_CONTINUES_AS_NEW):
            await self._continue_as_new()

    @staticmethod
    def _cancelled(err: BaseException) -> None:
        """A cancel request that reached an activity call is not the activity's failure (older histories recorded
        it as ReconcileFailed): it suspends the environment (run)."""
        if is_cancelled_exception(err) and _patched(ACTIVITY_CANCEL_SUSPENDS):
            raise err

    def _moving_build(self) -> bool:
        """Worker Versioning: the deployment's current build is no longer this run's."""
        return (workflow.info().is_target_worker_deployment_version_changed()
                and _patched(UPGRADE_ON_VERSION_CHANGE))

    async def _continue_as_new(self) -> None:
        # NB: let running signal/update handlers finish so nothing they do is lost.
        await workflow.wait_condition(workflow.all_handlers_finished)
        await alerting.outbox(self).flush()  # NB: no notification is lost with the run (nothing sent: no-op)
        if self._answers and _patched(ANSWERS_BEFORE_CONTINUE_AS_NEW):
            await asyncio.gather(*self._answers)  # NB: nor any pin outcome (older runs could leave one unsent)
        # NB: under Worker Versioning an environment is pinned to its build within a run and moves to the
        # deployment's current build here, at continue-as-new (workers/versioning.py)
        workflow.continue_as_new(EnvironmentInput(state=self._state),
                                 initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE)

    async def _cycle(self) -> None:
        """One iteration and the wait for the next (continue-as-new when the run is long enough)."""
        self._wake = False
        if not self._state.suspended:
            await self._iterate()
        self._state.iterations += 1
        self._iterations_this_run += 1
        self._publish()
        if (self._iterations_this_run >= policies.MAX_ITERATIONS_PER_RUN
                or workflow.info().is_continue_as_new_suggested() or self._moving_build() or self._history_full()):
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
                    lambda: (self._wake or self._size_check
                             or workflow.info().is_target_worker_deployment_version_changed()),
                    timeout=max(until - workflow.now(), timedelta(seconds=1)),
                    timeout_summary=f"next reconcile ({self._state.spec.interval})")
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
        return self._bounded and (info.is_continue_as_new_suggested()
                                  or info.get_current_history_size() > policies.MAX_HISTORY_BYTES)

    def _next_interval(self) -> timedelta:
        """The spec's interval; sooner while an applied release waits for its verdict past a cut health wait."""
        interval = self._state.spec.interval.delta
        rollout, health = self._state.rollout, self._state.health
        if rollout is not None and health.status == "Unknown" and health.digest == rollout.digest:
            return min(interval, policies.REJUDGE_AFTER)
        return interval

    def _describe(self) -> None:
        """The UI's current details: what runs, how healthy, what it waits for, and who may act."""
        s = self._state
        applied = s.last_applied
        lines = [f"**{s.spec.name}** runs {applied.version if applied else 'nothing yet'} "
                 f"({s.health.status}{': ' + s.health.reason if s.health.reason else ''}); tracks {s.spec.tracking}.",
                 f"Next reconcile {s.next_reconcile_at}." if not s.suspended else "**Suspended**: ferry resume ENV."]
        if s.spec.approval.required:
            lines.append(f"Production gate: {', '.join(s.spec.approval.names)} approve "
                         f"({'signed' if s.spec.approval.is_signed else 'claimed names'}).")
        if s.blocked:
            lines.append(f"**Blocked**: {s.blocked}")
        if s.pending_spec:
            lines.append(f"**Spec change pending approval** ({s.pending_spec.id}, by {s.pending_spec.by}): "
                         f"{'; '.join(s.pending_spec.changes)[:300]}")
        workflow.set_current_details("\n".join(lines))

    async def _iterate(self) -> None:
        """check → resolve (and verify) → reconcile → record → wait for health → judge."""
        check = await self._check() if _patched("ferry-local-check") else None
        desired = await self._desired(check)
        if desired is None:
            return
        applied = self._state.last_applied
        baseline = applied is not None and applied.digest == desired.digest
        result = await self._reconciled(desired, baseline, check.result if check is not None else None)
        if result is None:
            return
        self._state.cluster_unreachable_since, self._state.cluster_error, self._state.last_error = None, "", ""
        health = await self._recorded(desired, baseline, result)
        self._state.health = health
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

    async def _reconciled(self, desired: VersionRef, baseline: bool, checked: ReconcileResult | None
                          ) -> ReconcileResult | None:
        """The check's result when it found nothing to write, else a reconcile (None: it failed, recorded)."""
        applied = self._state.last_applied
        if (checked is not None and not checked.pending and baseline and applied is not None
                and applied.version == desired.version):
            return checked  # the check found nothing to write: no activity this iteration
        try:
            return await workflow.execute_activity(
                stubs.reconcile_environment, self._reconcile_input(desired, baseline),
                start_to_close_timeout=self._state.spec.timeout.delta, retry_policy=policies.RECONCILE_RETRY,
                heartbeat_timeout=policies.RECONCILE_HEARTBEAT, summary=f"reconcile {desired.version} "
                f"({desired.digest[:19]}…)")
        except ActivityError as err:
            self._cancelled(err)
            self._reconcile_failed(err, desired)
            return None

    async def _recorded(self, desired: VersionRef, baseline: bool, result: ReconcileResult) -> HealthState:
        """Record drift and what was applied; a change (or a new digest) waits for its rollout to be judged."""
        changes = result.changes
        if changes.drift:
            self._state.last_drift = self._record(
                EventType.DRIFT_CORRECTED, f"reverted hand edits on {changes.count('drift')} object(s)",
                version=desired.version, digest=desired.digest, objects=changes.drift)
        if not changes.changed and baseline:
            if self._unjudged(desired):
                return await self._rejudged(desired, result.health)
            return result.health
        self._state.last_applied = Applied(version=desired.version, digest=desired.digest,
                                           revision=result.revision, at=self._now(), changes=changes.summary())
        self._record(EventType.APPLIED, f"{desired.version}: {changes.summary()}", version=desired.version,
                     digest=desired.digest, objects={"created": changes.created, "updated": changes.updated,
                                                     "deleted": changes.deleted})
        # NB: until the rollout is judged, the previous version's health would describe the wrong digest
        self._state.health = HealthState(status="Progressing", reason=f"waiting for {desired.version} to roll "
                                         "out", digest=desired.digest, at=self._now())
        if self._state.rollout is None or self._state.rollout.digest != desired.digest:  # NB: one deadline a release
            self._state.rollout = Rollout(version=desired.version, digest=desired.digest, applied_at=self._now(),
                                          deadline=timestamp(workflow.now() + self._state.spec.health_timeout.delta))
        if (result.health.status == "Healthy" and result.health.digest == desired.digest
                and _patched("ferry-health-from-apply")):
            # NB: no workload was written (only those roll out; wait_healthy reads nothing else) and the unchanged
            # ones are healthy: judged by the reconcile itself, one activity (and workflow task) fewer
            return result.health.model_copy(update={"at": self._now()})
        return await self._wait_healthy(desired)

    def _unjudged(self, desired: VersionRef) -> bool:
        """The applied release's last health wait ended without a verdict (Unknown: an outage, a worker crash, the
        deadline cutting a retry): it is judged again, from its own deadline (patched: older code never did)."""
        rollout, health = self._state.rollout, self._state.health
        return (rollout is not None and rollout.digest == desired.digest and health.status == "Unknown"
                and health.digest == desired.digest and _patched(HEALTH_REJUDGED))

    async def _rejudged(self, desired: VersionRef, now: HealthState) -> HealthState:
        """Judge an unjudged release: healthy now, or waited for until its own deadline, else Failed."""
        rollout = self._state.rollout
        assert rollout is not None
        if now.status in ("Healthy", "Failed") and now.digest == desired.digest:
            return now.model_copy(update={"at": self._now()})
        if workflow.now() < parse_timestamp(rollout.deadline):
            return await self._wait_healthy(desired)
        return HealthState(status="Failed", reason=f"not healthy by its deadline {rollout.deadline} (applied "
                           f"{rollout.applied_at}; the health wait was cut: {self._state.health.reason[:300]})"
                           f"{': ' + now.reason[:300] if now.reason else ''}", digest=desired.digest, at=self._now())

    def _judge(self, desired: VersionRef, baseline: bool, health: HealthState) -> None:
        """Healthy: known-good, and the pin's sender is told. Failed (a new digest, or a release applied and never
        judged): roll back, and tell it."""
        pin = self._state.pin
        rollout = self._state.rollout
        if rollout is not None and rollout.digest == desired.digest and health.status in ("Healthy", "Failed"):
            self._state.rollout = None  # judged
            baseline = False
        if health.status == "Healthy":
            self._known_good(desired)
            self._answer(pin, desired, "succeeded", "applied and healthy")
        elif health.status == "Failed" and not baseline:
            self._auto_rollback(desired, health)
            rolled_back = self._state.pin is not None and self._state.pin.kind == "auto-rollback"
            self._answer(pin, desired, "failed", self._state.pin.reason if rolled_back and self._state.pin
                         else health.reason, rolled_back)

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
        if "@" not in request_id or not _patched("ferry-pin-outcome-signal"):
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

    async def _verified(self, desired: VersionRef) -> bool:
        """An environment with `verify` applies only artifacts signed by one of its publishers' keys; the verified
        publisher is remembered per digest (segregation of duties uses it) and re-checked against pins' approvals."""
        state, spec = self._state, self._state.spec
        assert spec.verify is not None
        if desired.digest not in state.verified:
            try:
                result = await verify_release(spec.repository, desired.digest, spec.verify)
            except ActivityError as err:
                self._cancelled(err)
                if cause_type(err) != "VerificationFailed":
                    state.source_unavailable_since = state.source_unavailable_since or self._now()
                    state.source_error = cause_message(err)
                    return False
                return self._refuse_artifact(desired, cause_message(err))
            verified = {**state.verified, desired.digest: result.publisher}
            state.verified = dict(list(verified.items())[-policies.MAX_VERIFIED_KEPT:])
        pin = state.pin
        publisher = state.verified[desired.digest]
        if pin is not None and pin.digest == desired.digest and any(
                a.split(" (")[0] == publisher for a in pin.approved_by):
            return self._refuse_artifact(desired, f"approved by {publisher}, who published it (verified signature)")
        if state.blocked.startswith("VerificationFailed"):
            state.blocked = ""
        return True

    def _refuse_artifact(self, desired: VersionRef, reason: str) -> bool:
        blocked = f"VerificationFailed: {desired.version} ({desired.digest}): {reason}"
        if self._state.blocked != blocked:
            self._state.blocked = blocked
            pin = self._state.pin
            event = self._record(EventType.VERIFICATION_FAILED, f"{desired.version} not applied: {reason}",
                                 version=desired.version, digest=desired.digest,
                                 request_id=pin.request_id if pin and pin.digest == desired.digest else "")
            self._answer(pin, desired, "refused", event.message)
        return False

    def _reconcile_input(self, desired: VersionRef, baseline: bool, dry_run: bool = False) -> ReconcileInput:
        spec = self._state.spec
        return ReconcileInput(environment=spec.name, repository=spec.repository, digest=desired.digest,
                              version=desired.version, path=spec.path, namespace=spec.namespace,
                              cluster=spec.cluster.name or "", kubeconfig=spec.cluster.kubeconfig,
                              context=spec.cluster.context, namespaces=spec.writable_namespaces,
                              cluster_kinds=spec.cluster_kinds, service_account=spec.service_account, prune=spec.prune,
                              allow_empty=spec.allow_empty, dry_run=dry_run, drift_baseline=baseline)

    def _reconcile_failed(self, err: ActivityError, desired: VersionRef) -> None:
        kind, message = cause_type(err), cause_message(err)
        if kind == ErrorType.REGISTRY_UNAVAILABLE:
            self._state.source_unavailable_since = self._state.source_unavailable_since or self._now()
            self._state.source_error = message
        elif kind in (ErrorType.CLUSTER_UNAVAILABLE, "TimeoutError"):
            self._state.cluster_unreachable_since = self._state.cluster_unreachable_since or self._now()
            self._state.cluster_error = message
        else:
            error = f"{kind}: {message}"
            if error != self._state.last_error:  # once per distinct error, not every interval
                self._record(EventType.RECONCILE_FAILED, f"{desired.version}: {error}", version=desired.version,
                             digest=desired.digest)
            self._state.last_error = error

    def _tracks(self) -> bool:
        """Whether this iteration resolves what the spec tracks (no pin, or a rollback pin on a range)."""
        pin, spec = self._state.pin, self._state.spec
        return pin is None or bool(spec.semver and pin.kind in ("rollback", "auto-rollback"))

    def _resolve_input(self) -> ResolveInput:
        spec = self._state.spec
        return ResolveInput(repository=spec.repository, version=spec.version, semver=spec.semver,
                            prereleases=spec.prereleases, held=self._state.holds)

    async def _check(self) -> CheckResult | None:
        """The iteration's no-op check as one local activity (a marker in history, no activity round trip):
        resolve when the spec tracks, and when that is still the applied digest, read the cluster without writing.
        Only when something is applied and no pin to another digest waits. Any failure (an outage, a bad
        artifact) returns None: the iteration then takes the full path, whose activities retry and record as
        before, so an outage costs a little more and a healthy no-op costs one marker."""
        state, applied = self._state, self._state.last_applied
        if applied is None or (state.pin is not None and not self._tracks() and state.pin.digest != applied.digest):
            return None
        try:
            checked = await workflow.execute_local_activity(
                stubs.check_environment, CheckInput(resolve=self._resolve_input() if self._tracks() else None,
                                                reconcile=self._reconcile_input(
                                                    VersionRef(version=applied.version, digest=applied.digest),
                                                    baseline=True)),
                start_to_close_timeout=policies.CHECK_TIMEOUT,
                retry_policy=policies.CHECK_RETRY, summary="check")
        except FailureError as err:
            # NB: a failed local activity raises its cause (ApplicationError, TimeoutError), not an ActivityError
            if isinstance(err, CancelledError):
                raise
            workflow.logger.info("no-op check failed (%s: %s); full reconcile path", cause_type(err),
                                 cause_message(err))
            return None
        return checked

    async def _resolve(self, found: ResolveResult | None = None) -> VersionRef | None:
        """The pin, or what the spec tracks (`found`: already resolved by the check). On a source outage: keep
        what is applied (never empty)."""
        state, spec = self._state, self._state.spec
        if not self._tracks():
            assert state.pin is not None
            return VersionRef(version=state.pin.version, digest=state.pin.digest)
        if found is None:
            try:
                found = await workflow.execute_activity(
                    stubs.resolve_desired, self._resolve_input(),
                    start_to_close_timeout=policies.RESOLVE_TIMEOUT, retry_policy=policies.QUICK_RETRY,
                    summary=f"resolve {spec.tracking}")
            except ActivityError as err:
                self._cancelled(err)
                if cause_type(err) == ErrorType.REGISTRY_UNAVAILABLE:
                    state.source_unavailable_since = state.source_unavailable_since or self._now()
                    state.source_error = cause_message(err)
                else:
                    state.last_error = f"{cause_type(err)}: {cause_message(err)}"
                return self._current()
        state.source_unavailable_since, state.source_error = None, ""
        if found.ref is not None and not self._tag_bound(found.ref):
            return self._current()
        if (state.pin is not None and not (spec.semver and state.pin.kind in ("rollback", "auto-rollback"))
                and _patched("ferry-pin-during-resolve")):
            # NB: a pin that arrived while resolving wins; releasing it here (as older code did) let a promotion
            # see its own pin "released" and report superseded
            return VersionRef(version=state.pin.version, digest=state.pin.digest)
        if state.pin is not None:  # a rollback pin on a range: released once something newer than the holds
            candidate = found.ref
            if candidate is None or not self._newer_than_holds(candidate.version):
                return VersionRef(version=state.pin.version, digest=state.pin.digest)
            self._record(EventType.PIN_RELEASED, f"{candidate.version} is newer than the held version(s); tracking "
                         f"{spec.semver} again", version=candidate.version, digest=candidate.digest)
            self._answer(state.pin, None, "superseded", f"the pin was released: {candidate.version} is newer")
            state.pin = None
        return found.ref or self._current()

    def _tag_bound(self, ref: VersionRef) -> bool:
        """Bind a tag to the digest it first resolved to; a tag that later points elsewhere is refused (TagMoved,
        once per new digest) and the environment keeps running what it runs."""
        bound = self._state.tags.get(ref.version)
        if bound is None:
            self._bind_tag(ref.version, ref.digest)
            return True
        if bound == ref.digest:
            return True
        blocked = (f"TagMoved: tag {ref.version} now points to {ref.digest}, but this environment bound it to "
                   f"{bound}; keeping what is applied")
        if self._state.blocked != blocked:
            self._state.blocked = blocked
            self._record(EventType.TAG_MOVED, blocked, version=ref.version, digest=ref.digest,
                         objects={"digests": [bound, ref.digest]})
        return False

    def _current(self) -> VersionRef | None:
        applied = self._state.last_applied
        return VersionRef(version=applied.version, digest=applied.digest) if applied else None

    def _newer_than_holds(self, version: str) -> bool:
        candidate = try_parse_tag(version)
        held = [v for v in (try_parse_tag(h) for h in self._state.holds) if v is not None]
        return candidate is not None and all(candidate.compare(h) > 0 for h in held)

    async def _wait_healthy(self, desired: VersionRef) -> HealthState:
        """Wait for the rollout of `desired` to be judged. Patched: the deadline is absolute across retries
        (schedule-to-close), and a new pin to another digest (an emergency rollback) pre-empts the wait."""
        spec = self._state.spec
        timeout = spec.health_timeout.delta
        rollout = self._state.rollout
        if rollout is not None and rollout.digest == desired.digest:
            # NB: the deadline is the release's own, not one per wait: a wait resumed after an outage gets what is left
            timeout = max(parse_timestamp(rollout.deadline) - workflow.now(), policies.MIN_HEALTH_WAIT)
        input = HealthInput(environment=spec.name, digest=desired.digest, cluster=spec.cluster.name or "",
                            kubeconfig=spec.cluster.kubeconfig, context=spec.cluster.context,
                            timeout_seconds=int(timeout.total_seconds()))
        if not _patched("ferry-health-preemptible"):
            try:
                result = await workflow.execute_activity(
                    stubs.wait_healthy, input, start_to_close_timeout=timeout + policies.HEALTH_ATTEMPT_SLACK,
                    heartbeat_timeout=policies.HEALTH_HEARTBEAT, retry_policy=policies.RECONCILE_RETRY)
            except ActivityError as err:
                return self._health_failed(desired, err)
            return result.health.model_copy(update={"at": self._now()})
        handle = workflow.start_activity(
            stubs.wait_healthy, input, start_to_close_timeout=timeout + policies.HEALTH_ATTEMPT_SLACK,
            schedule_to_close_timeout=timeout + policies.HEALTH_GRACE, heartbeat_timeout=policies.HEALTH_HEARTBEAT,
            retry_policy=policies.RECONCILE_RETRY,
            summary=f"wait until {desired.version} is healthy ({spec.health_timeout})")

        def repinned() -> bool:
            return self._state.pin is not None and self._state.pin.digest != desired.digest

        try:
            await workflow.wait_condition(lambda: handle.done() or repinned())
        except asyncio.CancelledError:
            if _patched(ACTIVITY_CANCEL_SUSPENDS):
                handle.cancel()  # NB: a suspended environment waits for nothing: the poll stops with it
            raise
        if not handle.done():
            handle.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await handle
            return HealthState(status="Progressing", reason=f"health wait for {desired.version} pre-empted by a pin "
                               f"to {self._state.pin.version if self._state.pin else '?'}", digest=desired.digest,
                               at=self._now())
        try:
            judged = handle.result()
        except ActivityError as err:
            self._cancelled(err)
            return self._health_failed(desired, err)
        return judged.health.model_copy(update={"at": self._now()})

    def _health_failed(self, desired: VersionRef, err: ActivityError) -> HealthState:
        """A health check that could not ask the cluster (API server unreachable, or the activity timed out with
        its worker) judged nothing: patched, the rollout stays unjudged (Unknown) and the outage is reported, so
        an API server restart no longer rolls a good release back; the next reconcile judges it. A check that
        failed for another reason still fails the release."""
        kind, message = cause_type(err), cause_message(err)
        if kind in (ErrorType.CLUSTER_UNAVAILABLE, "TimeoutError") and _patched("ferry-health-outage-unjudged"):
            self._state.cluster_unreachable_since = self._state.cluster_unreachable_since or self._now()
            self._state.cluster_error = message
            return HealthState(status="Unknown", reason=f"health of {desired.version} not judged: {message}",
                               digest=desired.digest, at=self._now())
        return HealthState(status="Failed", reason=f"health check failed: {message}",
                           digest=desired.digest, at=self._now())

    def _known_good(self, desired: VersionRef) -> None:
        state = self._state
        if state.last_known_good != desired:
            state.last_known_good = desired
            history = [r for r in state.good_history if r.digest != desired.digest]
            state.good_history = [*history, desired][-policies.MAX_GOOD_HISTORY:]
            self._record(EventType.HEALTHY, f"{desired.version} is healthy", version=desired.version,
                         digest=desired.digest)

    def _auto_rollback(self, failed: VersionRef, health: HealthState) -> None:
        state = self._state
        good = state.last_known_good
        if failed.version not in state.holds:
            state.holds = [*state.holds, failed.version][-policies.MAX_HOLDS:]
        if not state.spec.auto_rollback or good is None or good.digest == failed.digest:
            self._record(EventType.HEALTH_FAILED, f"{failed.version} failed health: {health.reason}",
                         version=failed.version, digest=failed.digest)
            return
        state.pin = Pin(version=good.version, digest=good.digest, by="ferry (auto-rollback)", kind="auto-rollback",
                        reason=f"{failed.version} failed health: {health.reason}", at=self._now())
        self._record(EventType.AUTO_ROLLBACK, f"{failed.version} failed health ({health.reason}); rolled back to "
                     f"{good.version}; {failed.version} is held", version=good.version, digest=good.digest,
                     by="ferry (auto-rollback)", objects={"failed": [failed.version, failed.digest]})
        self._wake = True

    # ------------------------------------------------------------------------------ signals/updates
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

    @workflow.signal(dynamic=True, description="Any other signal name: counted (status: unknown_signals) and "
                     "dropped; a flood of them makes the run continue as new, never grow past the history limit")
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self._state.unknown_signals += 1
        if self._state.unknown_signals in (1, 10, 100) or self._state.unknown_signals % 1000 == 0:
            workflow.logger.warning("unknown signal %r dropped (%d so far)", name[:100], self._state.unknown_signals)
        self._size_check = self._bounded

    @workflow.signal(name=Signal.RECONCILE_NOW, description="Reconcile now instead of at the next interval: {}")
    def reconcile_now(self, *payloads: object) -> None:
        self._wake = True

    @workflow.signal(name=Signal.SUSPEND, description='Stop applying (new versions and drift correction): '
                     '{"by": "alice", "reason": "incident 42"}')
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

    @workflow.update(name=Update.UPDATE_SPEC, description="Replace the spec (`ferry env apply`). For an approval-"
                     "required environment a change to approval, verify, repository, path, cluster, namespace(s), "
                     "cluster-kinds, service-account, version/semver or prune waits for a signed approval "
                     "(approve_spec); every change is recorded with its sender and a field-level diff")
    def update_spec(self, update: SpecUpdate | None = None) -> SpecUpdateResult:
        assert update is not None  # NB: the validator rejects a missing spec
        old = self._state.spec
        changes = spec_diff(old, update.spec)
        by = update.by or "unknown"
        strict = old.approval.required and _patched(GATE_HARDENED)
        protected = protected_changes(changes, safety_net=strict)
        if old.approval.required and protected and _patched("ferry-protected-spec"):
            # NB: its own id (older ids repeated when two changes of as many fields came in one iteration)
            pending_id = (f"spec-{workflow.uuid4().hex[:12]}" if strict
                          else f"spec-{workflow.info().run_id[:8]}-{self._state.iterations}-{len(changes)}")
            pending = PendingSpec(id=pending_id,
                                  spec=update.spec, digest=spec_digest(update.spec), by=by, at=self._now(),
                                  changes=changes)
            self._state.pending_spec = pending
            self._record(EventType.SPEC_CHANGE_PENDING, f"spec change by {by} waits for approval ({pending.id}): "
                         f"{'; '.join(protected)}"[:1000], by=by, objects={"changes": changes})
            return SpecUpdateResult(applied=False, changes=changes, pending_id=pending.id,
                                    spec_digest=spec_digest(old))
        self._apply_spec(update.spec, by, changes)
        return SpecUpdateResult(applied=True, changes=changes, spec_digest=spec_digest(update.spec))

    def _apply_spec(self, spec: EnvironmentSpec, by: str, changes: list[str], approved_by: str = "") -> None:
        old = self._state.spec
        self._state.spec = spec
        if (old.repository, old.version, old.semver) != (spec.repository, spec.version, spec.semver):
            self._answer(self._state.pin, None, "superseded", "the pin was released: the spec changed what this "
                         "environment deploys")
            self._state.pin = None  # the declared source or tracking changed: it wins over earlier pins
        if old.verify != spec.verify:
            self._state.verified = {}  # verified under other keys: verify again
        approval = f", approved by {approved_by}" if approved_by else ""
        self._record(EventType.SPEC_UPDATED, f"spec updated by {by}{approval} ({spec.tracking}): "
                     f"{'; '.join(changes) or 'no field changed'}"[:1000], by=by, objects={"changes": changes})
        self._keep_record()
        self._wake = True

    @update_spec.validator
    def _validate_spec(self, update: SpecUpdate | None = None) -> None:
        if update is None:
            raise ValueError('update_spec needs a payload: {"spec": {...}, "by": "..."} (ferry env apply sends it)')
        if update.spec.name != self._state.spec.name:
            raise ValueError(f"spec is for environment {update.spec.name!r}, not {self._state.spec.name!r}")
        # NB: the rules for what people type (no kubeconfig path, namespaces, reserved names) hold for a raw
        # Update too, not only for `ferry env apply`: checked again here (a rejected Update leaves no history)
        people_check(update.spec)

    @workflow.update(name=Update.APPROVE_SPEC, description='Approve the pending protected spec change: a signed '
                     'statement as for a promotion, with version "spec", digest = the pending spec digest, promotion '
                     '= "env/<name>", run = the pending change id (`ferry env approve ENV --key KEY`)')
    def approve_spec(self, payload: LenientPayload | None = None) -> SpecUpdateResult:
        return self._decide_spec("approve", payload or LenientPayload(None))

    @workflow.update(name=Update.REJECT_SPEC, description="Reject the pending protected spec change (same payload)")
    def reject_spec(self, payload: LenientPayload | None = None) -> SpecUpdateResult:
        return self._decide_spec("reject", payload or LenientPayload(None))

    @approve_spec.validator
    def _validate_approve_spec(self, payload: LenientPayload | None = None) -> None:
        if self._state.pending_spec is None:
            raise ValueError(f"{self._state.spec.name} has no spec change pending approval")

    @reject_spec.validator
    def _validate_reject_spec(self, payload: LenientPayload | None = None) -> None:
        self._validate_approve_spec(payload)

    def _decide_spec(self, action: str, payload: LenientPayload) -> SpecUpdateResult:
        """Judged by the approval rules of the spec in force (never the pending one); the requester may not
        approve their own change. Refusals are recorded and fail the update."""
        pending, spec = self._state.pending_spec, self._state.spec
        assert pending is not None
        ctx = DecisionContext(environment=spec.name, version="spec", digest=pending.digest, publisher=pending.by,
                              promotion=env_workflow_id(spec.name), run=pending.id,
                              publisher_may_not="requested this spec change and may not approve it")
        verdict = judge(spec.approval, ctx, payload.root, action, workflow.now(), _patched(GATE_HARDENED))
        refusal = verdict.refusal
        who = f"{verdict.approver} ({verdict.fingerprint})" if verdict.verified else f"{verdict.approver} (claimed)"
        if refusal:
            self._record(EventType.SPEC_DECISION_REFUSED,
                         f"{action} of {pending.id} by {verdict.approver or '?'} refused: {refusal}"[:1000],
                         by=verdict.approver)
            raise ApplicationError(refusal, type=ErrorType.DECISION_REFUSED, non_retryable=True)
        self._state.pending_spec = None
        if action == "reject":
            self._record(EventType.SPEC_CHANGE_REJECTED, f"spec change {pending.id} by {pending.by} rejected by {who}",
                         by=verdict.approver)
            return SpecUpdateResult(applied=False, changes=pending.changes, spec_digest=spec_digest(spec))
        self._apply_spec(pending.spec, pending.by, pending.changes, approved_by=who)
        return SpecUpdateResult(applied=True, changes=pending.changes, spec_digest=pending.digest)

    @workflow.update(name=Update.PLAN,
                     description='What a reconcile would change now, without applying (`ferry diff`): '
                     '{} or {"version": "1.2.0"}; at most 200 changes listed, the rest counted')
    async def plan(self, request: PlanRequest | None = None) -> PlanResult:
        """What a reconcile would do now (or for another version), without applying: `ferry diff`."""
        request = request or PlanRequest()
        spec, pin = self._state.spec, self._state.pin
        # NB: read-only: resolve directly rather than through _resolve(), which records outages and releases pins.
        if request.version is None and pin is not None:
            desired: VersionRef | None = VersionRef(version=pin.version, digest=pin.digest)
        else:
            found = await workflow.execute_activity(
                stubs.resolve_desired, ResolveInput(repository=spec.repository, version=request.version or spec.version,
                                                semver=None if request.version or spec.version else spec.semver,
                                                prereleases=spec.prereleases, held=self._state.holds),
                start_to_close_timeout=policies.RESOLVE_TIMEOUT, retry_policy=policies.QUICK_RETRY)
            desired = found.ref
        if desired is None:
            raise ApplicationError("nothing to plan: no version resolves for this environment", type="NotFound")
        result = await workflow.execute_activity(
            stubs.reconcile_environment, self._reconcile_input(desired, False, dry_run=True),
            start_to_close_timeout=spec.timeout.delta, retry_policy=policies.QUICK_RETRY)
        return PlanResult(version=desired.version, digest=desired.digest,
                          changes=[c for c in result.plan if c["action"] != "delete"],
                          prune=[c["object"] for c in result.plan if c["action"] == "delete"],
                          more=max(result.plan_total - len(result.plan), 0))

    @plan.validator
    def _validate_plan(self, request: PlanRequest | None = None) -> None:
        """No input plans what the environment runs or tracks; anything but {} or {"version": "..."} was already
        refused when it was decoded (a rejected Update leaves no history)."""

    @workflow.query(name=Query.STATUS, description="The spec, pin, applied version, health, holds, known-good history, "
                    "outages, pending spec change and recent events")
    def status(self) -> EnvironmentStatus:
        pin = self._state.pin
        desired = VersionRef(version=pin.version, digest=pin.digest) if pin else self._current()
        return EnvironmentStatus(name=self._state.spec.name, tracking=self._state.spec.tracking, desired=desired,
                                 state=self._state)

