"""Alerts out: AlertRouterWorkflow (one per namespace, forever) matches the notifications workflows send it against
the declared alerts and delivers each (alert, event) with the `deliver_notification` activity, retried with backoff
up to the alert's deadline, and records what it could not deliver. Workflows that record events never wait on any
of this: `notify()` signals the router from a task of its own.

One activity per delivery, not a child workflow: a short-lived workflow per notification costs a sandboxed
workflow start each (measured: 2.4 notifications/s on 2 cores), an activity does not."""

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.alert_router import (
        MAX_CARRIED_BYTES,
        MAX_HELD,
        MAX_PENDING,
        MAX_QUEUED_BYTES,
        MAX_QUEUED_CARRIED,
        MAX_RECENT,
        MAX_SEEN,
        MAX_UNDELIVERED,
        WAKE_SOURCE,
        WORKER_BUILD_CHANGED,
        AlertRouterInput,
        AlertRouterState,
        AlertsUpdate,
        AlertsUpdateResult,
        Delivered,
        DeliveryInput,
        DeliveryResult,
        PendingDelivery,
        SenderInput,
        SenderResult,
        Undelivered,
        alerts_diff,
        carry,
        notification_digest,
    )
    from ferry.alerts import MAX_DETAIL, MAX_DETAILS, AlertSpec, Notification
    from ferry.environment import first_payload
    from ferry.names import Memo, Query, Signal, Update
    from ferry.times import parse_timestamp, timestamp
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.failures import cause_message, cause_type, last_failure, timed_out
    from workflows.patches import ALERTS_GATE, ROUTER_CHECKS_SENDERS, ROUTER_MOVES
    from workflows.search_attributes import FERRY_PHASE


@workflow.defn(name="AlertRouterWorkflow")
class AlertRouterWorkflow:
    """Holds the declared alerts (`ferry alerts apply`), receives `notify` signals, drops duplicates (same
    idempotency key), and delivers each matching (alert, event) with an activity retried up to the alert's deadline
    (absolute: carried through continue-as-new). Never waits for one delivery before routing the next. Outcomes are
    kept, bounded: recent deliveries, and every delivery given up (also a memo in history and a metric)."""

    @workflow.init
    def __init__(self, input: AlertRouterInput) -> None:
        self._state: AlertRouterState = input.state
        self._queue: list[Notification] = []
        self._inflight: dict[str, tuple[PendingDelivery, asyncio.Task[None]]] = {}
        self._delivering: list[str] = []  # providers of the deliveries whose activity is scheduled now
        self._handled = 0
        self._max_per_run = input.max_per_run
        self._moves = False  # patched(ROUTER_MOVES), decided once in run()
        self._size_check = False  # a message arrived: look at the history's size
        self._in_flight_bytes = 0  # encoded size of the deliveries in flight (what a continue-as-new would carry)
        self._checks = False  # patched(ROUTER_CHECKS_SENDERS), decided once in run()
        self._checking: set[asyncio.Task[None]] = set()  # notifications whose sender is being checked
        self._held: dict[str, list[Notification]] = {}  # key being checked -> later arrivals with that key
        self._draining = False  # continuing as new: what arrives now is carried, not checked

    def _count(self, name: str, n: int = 1) -> None:
        self._state.counts = {**self._state.counts, name: self._state.counts.get(name, 0) + n}

    def _now(self) -> str:
        return timestamp(workflow.now())

    @workflow.run
    async def run(self, input: AlertRouterInput) -> None:
        self._moves = workflow.patched(ROUTER_MOVES)
        self._checks = workflow.patched(ROUTER_CHECKS_SENDERS) and input.verify_senders
        workflow.upsert_search_attributes([FERRY_PHASE.value_set("Routing")])
        carried, self._state.pending = self._state.pending, []
        self._queue = list(input.queued)  # received by the previous run while it was continuing as new
        for pending in carried:  # in flight when the previous run continued as new
            self._start(pending)
        while True:
            self._describe()
            self._size_check = False
            await workflow.wait_condition(lambda: bool(self._queue) or self._size_check or self._continue_due())
            while self._queue:
                self._route(self._queue.pop(0))
            if self._continue_due():
                self._draining = self._checks  # NB: no new sender checks: a flood of notify must not hold it here
                await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._checking)
                if self._queue and not self._draining:
                    continue
                # NB: deliveries still retrying move to the next run with what is left of their deadline (this
                # run's activities end with it, uncancelled: no command for them). An attempt running right now may
                # still reach the receiver: the next run's attempt carries the same idempotency key.
                in_flight = [pending for pending, _ in self._inflight.values()]
                if self._moves:  # the next run's input stays small; what does not fit is on the record
                    in_flight, left = carry(in_flight)
                    for pending in left:
                        self._count("not_carried")
                        self._give_up(
                            pending,
                            "RouterOverloaded: too many deliveries in flight to carry through "
                            f"continue-as-new ({len(in_flight)} carried)",
                        )
                self._state.pending = in_flight
                queued = carry(self._queue[:MAX_QUEUED_CARRIED], MAX_QUEUED_BYTES)[0]
                self._count("not_carried", len(self._queue) - len(queued))
                self._queue = []
                workflow.continue_as_new(
                    AlertRouterInput(
                        state=self._state,
                        max_per_run=self._max_per_run,
                        verify_senders=input.verify_senders,
                        queued=queued,
                    ),
                    initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
                )

    def _continue_due(self) -> bool:
        info = workflow.info()
        due = self._handled >= self._max_per_run or info.is_continue_as_new_suggested()
        if not self._moves:
            return due
        due = (
            due
            or info.is_target_worker_deployment_version_changed()
            or info.get_current_history_size() > policies.MAX_HISTORY_BYTES
        )
        if due and self._in_flight_bytes > MAX_CARRIED_BYTES:
            # more in flight than the next run's input may carry: wait for deliveries to end (their retries add
            # no history) rather than give them up, unless the history itself is near the server's limits
            return (
                info.get_current_history_size() > policies.MAX_ROUTER_HISTORY_BYTES
                or info.get_current_history_length() > policies.MAX_ROUTER_HISTORY_EVENTS
            )
        return due

    def _describe(self) -> None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self._state.counts.items())) or "nothing yet"
        names = ", ".join(a.name for a in self._state.alerts) or "none (ferry alerts apply -f FILE)"
        workflow.set_current_details(
            f"**Alerts**: {names}\nNotifications: {counts}\n"
            f"Delivering now: {len(self._inflight)}; undelivered (kept): "
            f"{len(self._state.undelivered)}"
        )

    def _seen(self, key: str) -> None:
        self._state.seen = [*self._state.seen, key][-MAX_SEEN:]

    def _route(self, note: Notification) -> None:
        self._handled += 1
        if not self._checks:
            self._match(note)
            return
        if note.type == WORKER_BUILD_CHANGED and note.source == WAKE_SOURCE:
            self._count("wake")  # `ferry upgrade drain`'s wake-up: a workflow task is all it is for
            self._seen(note.key)
            return
        if not any(alert.matches(note) for alert in self._state.alerts):
            self._seen(note.key)  # nothing to deliver: nothing to prove
            return
        if self._draining:
            self._queue.append(note)  # carried to the next run, checked there
            self._handled -= 1
            return
        if note.key in self._held:
            self._hold(note)
            return
        # NB: the key is seen only once its sender is proved: a forgery carrying a real key, arriving first, must
        # not make the real notification a duplicate (those arriving meanwhile wait behind it)
        self._held[note.key] = []
        task = asyncio.create_task(self._checked(note))
        self._checking.add(task)
        task.add_done_callback(self._checking.discard)

    async def _checked(self, note: Notification) -> None:
        """Route `note` once its sender is known to be one of Ferry's runs; drop (and count) one that is not."""
        try:
            result = await workflow.execute_activity(
                stubs.check_sender,
                SenderInput(
                    source=note.source,
                    run_id=note.run_id,
                    environment=note.environment,
                    key=note.key,
                    digest=notification_digest(note),
                ),
                start_to_close_timeout=policies.STATUS_QUERY_TIMEOUT,
                retry_policy=policies.QUICK_RETRY,
                summary=f"who sent {note.key}"[:200],
            )
            sender = result.sender
        except ActivityError as err:
            result = SenderResult(unverified=f"the sender could not be asked ({cause_type(err)}: {cause_message(err)})")
            sender = ""
        waiting = self._held.pop(note.key, [])
        if result.unverified:
            # not delivered, on the record: an unproved alert in the SREs' channel is what a forgery wants
            self._count("unverified")
            for alert in self._state.alerts:
                if alert.matches(note):
                    self._give_up(self._pending(alert, note), f"SenderUnverified: {result.unverified}"[:1000])
            self._seen(note.key)
            return
        if result.refusal:
            self._count("forged")
            workflow.logger.warning("notification %s (%s) refused: %s", note.key, note.type, result.refusal[:300])
            if waiting:  # the next one with this key gets its own check, the rest wait behind it
                self._route(waiting[0])
                self._handled -= 1
                self._held.get(note.key, []).extend(waiting[1:])
            return
        self._seen(note.key)
        self._count("duplicate", len(waiting))
        details = dict(list(note.details.items())[: MAX_DETAILS - 1])
        self._match(note.model_copy(update={"details": {**details, "sender": sender[:MAX_DETAIL]}}))

    def _hold(self, note: Notification) -> None:
        """Another notification with a key being checked waits for that check's verdict (the newest MAX_HELD)."""
        held = self._held[note.key]
        if len(held) >= MAX_HELD:
            held.pop(0)
            self._count("duplicate")
        held.append(note)

    def _match(self, note: Notification) -> None:
        for alert in self._state.alerts:
            if alert.matches(note):
                self._count("matched")
                self._start(self._pending(alert, note))

    def _pending(self, alert: AlertSpec, note: Notification) -> PendingDelivery:
        deadline = workflow.now() + timedelta(seconds=alert.deadline_seconds)
        return PendingDelivery(
            alert=alert.name,
            provider=alert.provider,
            summary=alert.summary,
            deadline_at=timestamp(deadline),
            notification=note,
        )

    def _start(self, pending: PendingDelivery) -> None:
        key = f"{pending.alert}/{pending.notification.key}"
        if key in self._inflight:
            return
        if len(self._inflight) >= MAX_PENDING:
            self._give_up(pending, f"RouterOverloaded: more than {MAX_PENDING} deliveries in flight")
            return
        self._inflight[key] = (pending, asyncio.create_task(self._deliver(key, pending)))
        self._in_flight_bytes += len(pending.model_dump_json())

    async def _turn(self, provider: str, left: timedelta) -> bool:
        def free() -> bool:
            return (
                len(self._delivering) < policies.MAX_DELIVERING
                and self._delivering.count(provider) < policies.MAX_DELIVERING_PER_PROVIDER
            )

        if not free():  # NB: no timer (a command) when a turn is free at once
            try:
                await workflow.wait_condition(free, timeout=left, timeout_summary=f"a turn for {provider}")
            except TimeoutError:
                return False
        self._delivering.append(provider)
        return True

    async def _deliver(self, key: str, pending: PendingDelivery) -> None:
        note = pending.notification
        deadline = parse_timestamp(pending.deadline_at)
        left = deadline - workflow.now()
        turn = False
        try:
            if left.total_seconds() < 1:
                self._give_up(pending, "DeadlinePassed: the deadline passed before the delivery could resume")
                return
            if workflow.patched(ALERTS_GATE):
                # a slow or hanging receiver holds at most a few of the worker's activity slots (shared with
                # reconciles); the rest of the deliveries wait here, in the workflow, against the same deadline
                turn = await self._turn(pending.provider, left)
                if not turn:
                    self._give_up(pending, "DeadlinePassed: waited for the provider's earlier deliveries")
                    return
                left = deadline - workflow.now()
            result = await workflow.execute_activity(
                stubs.deliver_notification,
                DeliveryInput(
                    alert=pending.alert,
                    provider=pending.provider,
                    summary=pending.summary,
                    notification=note,
                    deadline_seconds=left.total_seconds(),
                ),
                start_to_close_timeout=policies.DELIVERY_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=left,
                retry_policy=policies.DELIVERY_RETRY,
                summary=f"{note.type} {note.environment} → {pending.provider} ({pending.alert})"[:200],
            )
        except ActivityError as err:
            self._delivery_failed(pending, err)
        else:
            self._delivered(pending, result)
        finally:
            if self._inflight.pop(key, None) is not None:
                self._in_flight_bytes -= len(pending.model_dump_json())
            if turn:
                self._delivering.remove(pending.provider)

    def _delivered(self, pending: PendingDelivery, result: DeliveryResult) -> None:
        note = pending.notification
        self._count("delivered")
        self._state.delivered = [
            *self._state.delivered,
            Delivered(
                alert=pending.alert,
                key=note.key,
                type=note.type,
                environment=note.environment,
                at=self._now(),
                status=result.status,
                attempts=result.attempts,
            ),
        ][-MAX_RECENT:]

    def _delivery_failed(self, pending: PendingDelivery, err: ActivityError) -> None:
        """Given up: the activity's last failure (retries ended, or the deadline passed) is the record's reason."""
        failure = last_failure(err)
        kind = cause_type(failure) or type(failure).__name__  # an untyped ApplicationError by its class
        gave_up = " (given up at the deadline)" if timed_out(err) else ""
        self._give_up(pending, f"{kind}: {cause_message(failure, limit=None) or err}{gave_up}"[:1000])

    def _give_up(self, pending: PendingDelivery, reason: str) -> None:
        note = pending.notification
        record = Undelivered(
            alert=pending.alert,
            provider=pending.provider,
            key=note.key,
            type=note.type,
            environment=note.environment,
            at=self._now(),
            reason=reason,
        )
        self._count("undelivered")
        self._state.undelivered = [*self._state.undelivered, record][-MAX_UNDELIVERED:]
        workflow.upsert_memo({Memo.UNDELIVERED: record.model_dump(mode="json")})  # in history, for the audit
        workflow.metric_meter().create_counter(
            "ferry_alerts_undelivered", "notifications given up at their deadline"
        ).add(1, {"alert": pending.alert, "type": note.type})
        workflow.logger.warning("undelivered %s (%s) to %s: %s", note.key, note.type, pending.provider, reason)

    @workflow.signal(
        name=Signal.NOTIFY,
        description="An event to route: a Notification (key, type, severity, "
        "environment, message, at, source, ...). Sent by Ferry's workflows; duplicates (same key) and "
        "malformed payloads are counted and dropped",
    )
    def notify(self, *payloads: object) -> None:
        self._size_check = self._moves
        try:
            note = Notification.model_validate(first_payload(payloads).root)
        except pydantic.ValidationError as err:
            self._count("malformed")
            workflow.logger.warning("malformed notification refused: %s", err.errors()[0]["msg"])
            return
        self._count("received")
        if note.key in self._state.seen:
            self._count("duplicate")
            return
        if self._checks:
            if note.key in self._held:  # one with this key is being checked: this one waits for its verdict
                self._hold(note)
                return
        else:
            self._seen(note.key)
        self._queue.append(note)

    @workflow.update(
        name=Update.APPLY_ALERTS,
        description="Replace the declared alerts (`ferry alerts apply -f FILE`): "
        '{"alerts": [{"name", "provider", "environments", "events", "severity", "deadline"}], "by"}',
    )
    def apply_alerts(self, update: AlertsUpdate | None = None) -> AlertsUpdateResult:
        assert update is not None  # the validator rejects a missing payload
        changes = alerts_diff(self._state.alerts, update.alerts)
        self._state.alerts = update.alerts
        if changes:
            workflow.upsert_memo({Memo.ALERTS_CHANGED: {"by": update.by, "changes": changes[:50]}})
        self._describe()
        return AlertsUpdateResult(alerts=[a.name for a in update.alerts], changes=changes)

    @apply_alerts.validator
    def _validate_apply_alerts(self, update: AlertsUpdate | None = None) -> None:
        if update is None:
            raise ValueError(
                'apply_alerts needs a payload: {"alerts": [...], "by": "..."} (ferry alerts apply sends it)'
            )

    @workflow.signal(
        dynamic=True, description="Any other signal name: counted (status: counts.unknown_signal) and dropped"
    )
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self._count("unknown_signal")
        self._size_check = self._moves

    @workflow.query(
        name=Query.STATUS,
        description="Declared alerts, counters, deliveries in flight, recent deliveries and the ones given up",
    )
    def status(self) -> AlertRouterState:
        return self._state.model_copy(update={"pending": [p for p, _ in self._inflight.values()]})
