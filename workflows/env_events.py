"""The environment's event fan-out (history event, memo, metrics, alerts, search attributes, the UI's current
details), its safety record and the status query."""

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from ferry.environment import EnvironmentState, EnvironmentStatus
    from ferry.events import Event, EventType
    from ferry.names import Memo, Query
    from ferry.reconcile import VersionRef
    from ferry.recovery import LastRecordInput, LastRecordResult, record_of, recover
    from ferry.times import timestamp
    from workflows import activity_stubs as stubs
    from workflows import metrics, policies
    from workflows import outbox as alerting
    from workflows.failures import cause_message, cause_type
    from workflows.patches import (
        ACTIVITY_CANCEL_SUSPENDS,
        ALERTS,
        AUDIT_MEMO,
        PUBLISH_ON_CHANGE,
        PUBLISH_TRACKING,
        RECORD_RECOVERED,
    )
    from workflows.patches import env_patched as _patched
    from workflows.search_attributes import (
        FERRY_ENVIRONMENT,
        FERRY_PHASE,
        FERRY_REPOSITORY,
        FERRY_TRACKING,
        FERRY_VERSION,
    )


class EnvironmentEvents(alerting.Notifies):
    """Records, publishes and answers status; declares the state every environment mixin shares."""

    _state: EnvironmentState
    _wake: bool
    _iterations_this_run: int
    _published: tuple[str, ...]
    _answers: set[asyncio.Task[None]]
    _bounded: bool
    _size_check: bool
    _kept: dict[str, Any] | None
    _recovering: bool

    def _now(self) -> str:
        return timestamp(workflow.now())

    def _record(self, type_: EventType, message: str, **fields: object) -> Event:
        update = workflow.current_update_info()
        event = Event(at=self._now(), type=type_, message=message, update_id=update.id if update else "", **fields)  # type: ignore[arg-type,unused-ignore]
        self._state.events = [*self._state.events, event][-policies.MAX_EVENTS_KEPT :]
        workflow.logger.info("%s: %s", type_, message)
        metrics.environment_event(self._state.spec.name, type_)
        # audit reads operator events from history alone; a memo update puts each one there
        if _patched(AUDIT_MEMO):
            workflow.upsert_memo({Memo.EVENT: event.model_dump(mode="json")})
        if _patched(ALERTS):  # a signal to the alert router from its own task: never waits
            alerting.outbox(self).notify(
                alerting.notification(
                    type_,
                    self._state.spec.name,
                    message,
                    version=event.version,
                    digest=event.digest,
                    by=event.by,
                    details={"repository": self._state.spec.repository},
                )
            )
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
        found = await self._last_record()
        if found.refusal:
            # NB: fail closed: never run a start's state as written when what the last run held is unknown; the
            # record says so, so a run replacing this one recovers nothing from it either until an SRE resumes
            self._state.suspended = True
            self._state.unverified_record = found.refusal[:500]
            self._record(
                EventType.SUSPENDED,
                f"{found.refusal}"[:800] + f"; suspended until an SRE checks (ferry resume {self._state.spec.name})",
                by="ferry (recovery)",
            )
            return
        if not found.run_id:
            return
        state, notes = recover(
            self._state,
            found.record,
            now=self._now(),
            pending_id=f"spec-{workflow.uuid4().hex[:12]}",
            by=f"a new run ({info.run_id})",
        )
        self._state = state
        self._record_recovery(found, notes)

    async def _last_record(self) -> LastRecordResult:
        """The last run's record (activity last_record), or a refusal when it could not be read."""
        info = workflow.info()
        self._recovering = True
        try:
            return await workflow.execute_activity(
                stubs.last_record,
                LastRecordInput(workflow_id=info.workflow_id, run_id=info.run_id),
                start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT,
                retry_policy=policies.RECORD_READ_RETRY,
                summary="the last run's record",
            )
        except (ActivityError, asyncio.CancelledError, CancelledError) as err:
            # NB: a cancel request while reading suspends too, without continuing as new (the next run would take
            # this one's unrecovered state as its own)
            reason = (
                "a cancel request arrived"
                if is_cancelled_exception(err)
                else f"{cause_type(err)}: {cause_message(err)}"
            )
            return LastRecordResult(refusal=f"the last run's record could not be read ({reason})")
        finally:
            self._recovering = False

    def _record_recovery(self, found: LastRecordResult, notes: list[str]) -> None:
        """The events of a recovery: what was recovered from which run, and a spec change it left pending."""
        if found.record is None:
            self._record(
                EventType.RECORD_RECOVERED, f"a new run replaced run {found.run_id} ({found.status}); {found.note}"
            )
            return
        self._record(
            EventType.RECORD_RECOVERED,
            f"a new run replaced run {found.run_id} ({found.status}): " + ("; ".join(notes) + found.note)[:900],
        )
        pending = self._state.pending_spec
        if pending is not None:
            self._record(
                EventType.SPEC_CHANGE_PENDING,
                f"spec change {pending.id} by the start of a new run waits "
                f"for a signed approval: {'; '.join(pending.changes)}"[:1000],
                by=pending.by,
            )

    def _phase(self) -> str:
        return self._state.phase

    def _publish(self) -> None:
        self._keep_record()
        applied = self._state.last_applied
        # FerryTracking is for `ferry env list` from Visibility
        tracking = self._state.spec.tracking if _patched(PUBLISH_TRACKING) else ""
        values = (
            self._state.spec.name,
            self._state.spec.repository,
            applied.version if applied else "",
            self._phase(),
            tracking,
        )
        # upsert only on change: one history event fewer per no-op iteration
        if _patched(PUBLISH_ON_CHANGE) and values == self._published:
            return
        if self._published[3:4] == ("Failed",) and values[3] == "Healthy" and _patched(ALERTS):
            alerting.outbox(self).notify(
                alerting.notification(  # resolves what the failure fired (endsAt)
                    "Recovered",
                    values[0],
                    f"{values[0]} is healthy again on {values[2]}",
                    version=values[2],
                    resolves=list(alerting.RESOLVED_BY_RECOVERY),
                )
            )
        self._published = values
        workflow.upsert_search_attributes(
            [
                FERRY_ENVIRONMENT.value_set(self._state.spec.name),
                FERRY_REPOSITORY.value_set(self._state.spec.repository),
                FERRY_VERSION.value_set(applied.version if applied else ""),
                FERRY_PHASE.value_set(self._phase()),
                *([FERRY_TRACKING.value_set(tracking)] if tracking else []),
            ]
        )

    def _describe(self) -> None:
        """The UI's current details: what runs, how healthy, what it waits for, and who may act."""
        s = self._state
        applied = s.last_applied
        lines = [
            f"**{s.spec.name}** runs {applied.version if applied else 'nothing yet'} "
            f"({s.health.status}{': ' + s.health.reason if s.health.reason else ''}); tracks {s.spec.tracking}.",
            f"Next reconcile {s.next_reconcile_at}." if not s.suspended else "**Suspended**: ferry resume ENV.",
        ]
        if s.spec.approval.required:
            lines.append(
                f"Production gate: {', '.join(s.spec.approval.names)} approve "
                f"({'signed' if s.spec.approval.is_signed else 'claimed names'})."
            )
        if s.blocked:
            lines.append(f"**Blocked**: {s.blocked}")
        if s.pending_spec:
            lines.append(
                f"**Spec change pending approval** ({s.pending_spec.id}, by {s.pending_spec.by}): "
                f"{'; '.join(s.pending_spec.changes)[:300]}"
            )
        workflow.set_current_details("\n".join(lines))

    @staticmethod
    def _cancelled(err: BaseException) -> None:
        """A cancel request that reached an activity call is not the activity's failure (older histories recorded
        it as ReconcileFailed): it suspends the environment (run)."""
        if is_cancelled_exception(err) and _patched(ACTIVITY_CANCEL_SUSPENDS):
            raise err

    def _current(self) -> VersionRef | None:
        applied = self._state.last_applied
        return VersionRef(version=applied.version, digest=applied.digest) if applied else None

    @workflow.query(
        name=Query.STATUS,
        description="The spec, pin, applied version, health, holds, known-good history, "
        "outages, pending spec change and recent events",
    )
    def status(self) -> EnvironmentStatus:
        pin = self._state.pin
        desired = VersionRef(version=pin.version, digest=pin.digest) if pin else self._current()
        return EnvironmentStatus(
            name=self._state.spec.name, tracking=self._state.spec.tracking, desired=desired, state=self._state
        )
