"""Alerts out: AlertRouterWorkflow (one per namespace, forever) matches the notifications workflows send it against
the declared alerts and starts one AlertDeliveryWorkflow per (alert, event), which delivers with retries up to the
alert's deadline and records what it could not deliver. Workflows that record events never wait on any of this:
`notify()` signals the router from a task of its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.alerts import (
        ALERT_ROUTER_ID,
        MAX_SEEN,
        MAX_UNDELIVERED,
        RESOLVED_BY_RECOVERY,
        AlertRouterInput,
        AlertRouterState,
        AlertsUpdate,
        AlertsUpdateResult,
        DeliveryInput,
        DeliveryResult,
        Notification,
        Undelivered,
        alerts_diff,
        delivery_workflow_id,
        make_notification,
    )
    from ferry.environment import LenientPayload
    from workflows import policies
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE

__all__ = ["RESOLVED_BY_RECOVERY", "notification", "notify", "send"]

# Notifications handled per run before continue-as-new (each costs a signal and a child start or two in history).
MAX_NOTIFICATIONS_PER_RUN = 1000
# Children started at once: a burst of events is fanned out in batches, not one workflow task per child.
START_BATCH = 50


def notification(type_: str, environment: str, message: str, **fields: object) -> Notification:
    """A notification about an event the calling workflow records now. Its key is derived from the workflow's id,
    run and current history length (replay computes the same key), and the event itself."""
    info = workflow.info()
    return make_notification(workflow_id=info.workflow_id, run_id=info.run_id,
                             position=info.get_current_history_length(), type_=type_, environment=environment,
                             message=message, at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                             **fields)  # type: ignore[arg-type]


async def send(note: Notification) -> None:
    """Signal the router; a router that is not running (no alerts declared) means nobody is to be told."""
    try:
        await workflow.get_external_workflow_handle(ALERT_ROUTER_ID).signal(
            "notify", LenientPayload(note.model_dump(mode="json")))
    except Exception as err:  # NB: the router may not exist: nothing is declared, nothing to deliver
        workflow.logger.info("notification %s (%s) not routed: %s", note.key, note.type, err)


def notify(note: Notification) -> None:
    """Fire and forget: the caller's loop never waits on the router, let alone on a receiver."""
    asyncio.create_task(send(note))  # noqa: RUF006


@workflow.defn(name="AlertRouterWorkflow")
class AlertRouterWorkflow:
    """Holds the declared alerts (`ferry alerts apply`), receives `notify` signals, drops duplicates (same
    idempotency key), and starts one AlertDeliveryWorkflow per matching alert (id alert/<alert>/<key>, abandoned:
    deliveries outlive the router's runs). Continues as new with bounded state."""

    @workflow.init
    def __init__(self, input: AlertRouterInput) -> None:
        self._state: AlertRouterState = input.state
        self._queue: list[Notification] = []
        self._handled = 0

    def _count(self, name: str, n: int = 1) -> None:
        self._state.counts = {**self._state.counts, name: self._state.counts.get(name, 0) + n}

    @workflow.run
    async def run(self, input: AlertRouterInput) -> None:
        workflow.upsert_search_attributes([FERRY_PHASE.value_set("Routing")])
        while True:
            self._describe()
            await workflow.wait_condition(lambda: bool(self._queue) or self._continue_due())
            while self._queue:
                batch, self._queue = self._queue[:START_BATCH], self._queue[START_BATCH:]
                await asyncio.gather(*(self._route(note) for note in batch))
            if self._continue_due():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.continue_as_new(AlertRouterInput(state=self._state))

    def _continue_due(self) -> bool:
        return self._handled >= MAX_NOTIFICATIONS_PER_RUN or workflow.info().is_continue_as_new_suggested()

    def _describe(self) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self._state.counts.items())) or "nothing yet"
        names = ", ".join(a.name for a in self._state.alerts) or "none (ferry alerts apply -f FILE)"
        workflow.set_current_details(f"**Alerts**: {names}\nNotifications: {counts}\n"
                                     f"Undelivered (kept): {len(self._state.undelivered)}")

    async def _route(self, note: Notification) -> None:
        self._handled += 1
        for alert in self._state.alerts:
            if not alert.matches(note):
                continue
            self._count("matched")
            try:
                await workflow.start_child_workflow(
                    "AlertDeliveryWorkflow",
                    DeliveryInput(alert=alert.name, provider=alert.provider, summary=alert.summary,
                                  deadline_seconds=alert.deadline_seconds, notification=note),
                    id=delivery_workflow_id(alert.name, note.key),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    static_summary=f"{note.type} {note.environment} → {alert.provider} ({alert.name})"[:200])
                self._count("started")
            except WorkflowAlreadyStartedError:
                self._count("duplicate")  # NB: the same event reached us in another run: delivered once

    @workflow.signal(name="notify", description="An event to route: a Notification (key, type, severity, "
                     "environment, message, at, source, ...). Sent by Ferry's workflows; duplicates (same key) and "
                     "malformed payloads are counted and dropped")
    def notify(self, payload: LenientPayload) -> None:
        try:
            note = Notification.model_validate(payload.root)
        except pydantic.ValidationError as err:
            self._count("malformed")
            workflow.logger.warning("malformed notification refused: %s", err.errors()[0]["msg"])
            return
        self._count("received")
        if note.key in self._state.seen:
            self._count("duplicate")
            return
        self._state.seen = [*self._state.seen, note.key][-MAX_SEEN:]
        self._queue.append(note)

    @workflow.signal(name="undelivered", description="A delivery gave up at its deadline (sent by "
                     "AlertDeliveryWorkflow): kept in the status, newest last, bounded")
    def undelivered(self, payload: LenientPayload) -> None:
        try:
            record = Undelivered.model_validate(payload.root)
        except pydantic.ValidationError:
            self._count("malformed")
            return
        self._count("undelivered")
        self._state.undelivered = [*self._state.undelivered, record][-MAX_UNDELIVERED:]

    @workflow.update(name="apply_alerts", description='Replace the declared alerts (`ferry alerts apply -f FILE`): '
                     '{"alerts": [{"name", "provider", "environments", "events", "severity", "deadline"}], "by"}')
    def apply_alerts(self, update: AlertsUpdate) -> AlertsUpdateResult:
        changes = alerts_diff(self._state.alerts, update.alerts)
        self._state.alerts = update.alerts
        if changes:
            workflow.upsert_memo({"ferry_alerts_changed": {"by": update.by, "changes": changes[:50]}})
        self._describe()
        return AlertsUpdateResult(alerts=[a.name for a in update.alerts], changes=changes)

    @workflow.query(name="status", description="Declared alerts, counters and the deliveries given up")
    def status(self) -> AlertRouterState:
        return self._state


@workflow.defn(name="AlertDeliveryWorkflow")
class AlertDeliveryWorkflow:
    """Delivers one notification to one provider: retried with backoff until the alert's deadline (absolute across
    retries and worker restarts: schedule-to-close), then recorded as Undelivered (search attribute FerryPhase, the
    result, and a signal to the router's status). Never fails: the record is the outcome."""

    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryResult:
        note = input.notification
        attributes = [FERRY_PHASE.value_set("Delivering")]
        if note.environment:
            attributes.append(FERRY_ENVIRONMENT.value_set(note.environment))
        workflow.upsert_search_attributes(attributes)
        workflow.set_current_details(f"delivering {note.type} ({note.key}) to {input.provider} until "
                                     f"{(workflow.now() + timedelta(seconds=input.deadline_seconds)):%H:%M:%S}Z")
        try:
            result: DeliveryResult = await workflow.execute_activity(
                "deliver_notification", input, result_type=DeliveryResult,
                start_to_close_timeout=policies.DELIVERY_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=timedelta(seconds=input.deadline_seconds),
                retry_policy=policies.DELIVERY_RETRY, summary=f"POST {note.type} to {input.provider}")
        except ActivityError as err:
            cause = err.cause
            reason = str(getattr(cause, "message", cause) or err)[:900]
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else type(cause).__name__
            result = DeliveryResult(delivered=False, reason=f"{kind}: {reason}"[:1000])
            workflow.upsert_search_attributes([FERRY_PHASE.value_set("Undelivered")])
            workflow.set_current_details(f"**Undelivered** {note.type} ({note.key}) to {input.provider}: "
                                         f"{result.reason}")
            await _report_undelivered(Undelivered(alert=input.alert, provider=input.provider, key=note.key,
                                                  type=note.type, environment=note.environment,
                                                  at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                  reason=result.reason))
            return result
        workflow.upsert_search_attributes([FERRY_PHASE.value_set("Delivered")])
        workflow.set_current_details(f"delivered {note.type} to {input.provider}: HTTP {result.status}, attempt "
                                     f"{result.attempts}")
        return result


async def _report_undelivered(record: Undelivered) -> None:
    try:
        await workflow.get_external_workflow_handle(ALERT_ROUTER_ID).signal(
            "undelivered", LenientPayload(record.model_dump(mode="json")))
    except Exception as err:  # NB: the result and FerryPhase=Undelivered already record it
        workflow.logger.warning("router not told of undelivered %s: %s", record.key, err)
