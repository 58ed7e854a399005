"""How workflows tell the alert router (workflows/alerts.py) about an event: `notification()` builds it (its
idempotency key from the workflow's id, run and history position), `outbox(self).notify()` signals the router from
a task of its own (the caller never waits) and `flush()` before the run ends.

NB: stateless (no module-level state): passed through the workflow sandbox (workers/worker.py), so a new
environment does not re-import the router's module."""

from __future__ import annotations

import asyncio
import collections

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ferry.alert_router import ALERT_ROUTER_ID, NOTIFIED_QUERY, notification_digest
    from ferry.alerts import RESOLVED_BY_RECOVERY, Notification, make_notification
    from ferry.environment import LenientPayload
    from ferry.times import timestamp

__all__ = ["NOTIFIED_QUERY", "RESOLVED_BY_RECOVERY", "Outbox", "notification", "outbox", "send", "sent"]

MAX_SENT = 500  # keys a run remembers having sent (the router asks, within seconds of receiving one)


def notification(type_: str, environment: str, message: str, **fields: object) -> Notification:
    """A notification about an event the calling workflow records now. Its key is derived from the workflow's id,
    run and current history length (replay computes the same key), and the event itself. The run remembers the
    key, so the alert router can ask it whether it sent it (`sent()`, the NOTIFIED_QUERY)."""
    info = workflow.info()
    note = make_notification(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        position=info.get_current_history_length(),
        type_=type_,
        environment=environment,
        message=message,
        at=timestamp(workflow.now()),
        **fields,  # type: ignore[arg-type]
    )
    sent_by = _sent(workflow.instance())
    sent_by[note.key] = notification_digest(note)
    while len(sent_by) > MAX_SENT:
        sent_by.popitem(last=False)
    return note


def _sent(owner: object) -> collections.OrderedDict[str, str]:
    """key -> content digest of the notifications this run sent, newest last (rebuilt on replay)."""
    keys = getattr(owner, "_ferry_sent", None)
    if not isinstance(keys, collections.OrderedDict):
        keys = collections.OrderedDict()
        owner._ferry_sent = keys  # type: ignore[attr-defined]
    return keys


def sent(owner: object, key: object, digest: object = None) -> bool:
    """Whether this run sent the notification with this key and this content (any input: anyone may ask)."""
    if not isinstance(key, str):
        return False
    mine = _sent(owner).get(key)
    return mine is not None and (digest is None or digest == mine)


async def send(note: Notification) -> None:
    """Signal the router; a router that is not running (no alerts declared) means nobody is to be told."""
    try:
        await workflow.get_external_workflow_handle(ALERT_ROUTER_ID).signal(
            "notify", LenientPayload(note.model_dump(mode="json"))
        )
    except Exception as err:  # the router may not exist: nothing is declared, nothing to deliver
        workflow.logger.info("notification %s (%s) not routed: %s", note.key, note.type, err)


class Outbox:
    """The notifications a workflow has sent and the router has not yet confirmed. Sending never waits (the loop
    goes on); before its run ends (completes or continues as new) the workflow flushes, so no notification is lost
    with the run (a signal command issued in the run's last workflow task is not delivered once the run is
    closed)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def notify(self, note: Notification) -> None:
        self._tasks = [*(t for t in self._tasks if not t.done()), asyncio.create_task(send(note))]

    async def flush(self) -> None:
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks)


def outbox(owner: object) -> Outbox:
    """The workflow instance's outbox (made on first use, so existing workflows need no new field)."""
    box = getattr(owner, "_ferry_outbox", None)
    if not isinstance(box, Outbox):
        box = Outbox()
        owner._ferry_outbox = box  # type: ignore[attr-defined]
    return box


class Notifies:
    """Mixed into every workflow that notifies the router: answers the router's question whether this run sent a
    notification (the router delivers only what a Ferry run says it sent: any client may signal `notify`)."""

    @workflow.query(
        name=NOTIFIED_QUERY,
        description="Whether this run sent the alert router the notification with "
        "this key (asked by the router before it delivers one)",
    )
    def notified(self, key: object = None, digest: object = None) -> bool:
        return sent(self, key, digest)
