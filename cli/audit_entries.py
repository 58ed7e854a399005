"""One execution's history -> `ferry audit`'s entries: event by event, pairing each record with the message that
asked for it. Pure: no calls (cli/audit.py reads Visibility and the histories). Every payload is hostile input: each is
decoded on its own, and one that does not decode is shown as such."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.enums.v1 import WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent

from cli.history_payloads import Undecodable, as_dict, claimed, decode, event_stamp, memo_of
from ferry.audit import CANCEL_REQUEST, MAX_SHOWN, RESET_CAUSE, SignedRecord, run_origin
from ferry.events import EventType
from ferry.names import (
    ENV_PREFIX,
    ENVIRONMENT_WORKFLOW,
    PROMOTION_WORKFLOW,
    RELEASE_WORKFLOW,
    ROLLBACK_WORKFLOW,
    Memo,
    Signal,
)


class AuditEntry(BaseModel):
    at: str
    kind: str
    subject: str
    who: str = ""
    details: str = ""
    workflow_id: str
    url: str


def entries_from_history(
    workflow_type: str,
    workflow_id: str,
    events: list[HistoryEvent],
    url: str,
    signed: list[SignedRecord] | None = None,
    run_id: str = "",
    earlier_run: bool = False,
) -> list[AuditEntry]:
    """Turn one execution's history into audit entries (and collect verified decisions into `signed`).
    `earlier_run`: another run of this workflow id started before this one (Visibility), so an environment run that
    is neither a continue-as-new nor a reset replaced it. Pure: no calls."""
    reader = _HistoryReader(workflow_type, workflow_id, url, signed, run_id)
    for event in events:
        reader.read(event)
    reader.finish(earlier_run)
    return reader.out


class _HistoryReader:
    """One execution's history, event by event.

    NB: an approver's name is what the sender claims (a signature proves it: `verified`); Temporal records the
    sending client's identity on the signal/update event. A decision sent as an Update carries its update id and
    pairs by it; every decision signal writes exactly one record, in delivery order, so signals pair in order.
    Operator events pair the same way: each pin/suspend/resume signal writes exactly one record (Pinned or
    PinRefused, Suspended, Resumed) in delivery order; spec changes carry their update id. A signal whose payload
    does not decode is dropped by the worker (temporalio: "dropping the signal") and writes no record, so it does
    not pair. Besides the records, every message a client sent (signal, Update, cancel request) is an entry of its
    own with the identity Temporal recorded, so no claimed name hides a sender."""

    def __init__(
        self, workflow_type: str, workflow_id: str, url: str, signed: list[SignedRecord] | None, run_id: str
    ) -> None:
        self.workflow_type, self.workflow_id, self.url, self.signed, self.run_id = (
            workflow_type,
            workflow_id,
            url,
            signed,
            run_id,
        )
        self.out: list[AuditEntry] = []
        self.started: dict[str, Any] = {}
        self.messages: list[_Message] = []  # every signal and accepted Update, in history order
        self.signal_senders: dict[str, deque[_Message]] = {name: deque() for name in _SIGNALLED}
        self.update_senders: dict[str, _Message] = {}
        self.cancel_senders: deque[str] = deque()
        self.first: HistoryEvent | None = None
        self.reset = False

    def add(self, event: HistoryEvent, kind: str, subject: str, who: str = "", details: str = "") -> None:
        self.out.append(
            AuditEntry(
                at=event_stamp(event),
                kind=kind,
                subject=subject,
                who=who,
                details=details,
                workflow_id=self.workflow_id,
                url=self.url,
            )
        )

    def read(self, event: HistoryEvent) -> None:
        et = event.event_type
        if et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            self._signalled(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            self._update_accepted(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            self._cancel_requested(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            self._terminated(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            self._task_failed(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            self._execution_started(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            self._execution_completed(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED and self.workflow_type == RELEASE_WORKFLOW:
            self._release_failed(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            self._properties_modified(event)

    def _update_accepted(self, event: HistoryEvent) -> None:
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        message = _Message(
            event, "update", request.input.name, event_sender(event, request.meta.identity), decode(request.input.args)
        )
        self.messages.append(message)
        self.update_senders[request.meta.update_id] = message

    def _terminated(self, event: HistoryEvent) -> None:
        terminated = event.workflow_execution_terminated_event_attributes
        self.add(
            event,
            "terminated",
            self._subject(),
            "",
            f"{terminated.reason[:MAX_SHOWN] or 'no reason given'}; by {client_words(terminated.identity)}",
        )

    def _execution_started(self, event: HistoryEvent) -> None:
        self.first = event
        started = decode(event.workflow_execution_started_event_attributes.input)
        self.started = as_dict(started)
        if isinstance(started, Undecodable):
            self.add(event, "started", self._subject(), "", f"input {started}")
        self._started(event)

    def _execution_completed(self, event: HistoryEvent) -> None:
        result = decode(event.workflow_execution_completed_event_attributes.result)
        if isinstance(result, Undecodable):
            self.add(event, "completed", self._subject(), "", f"result {result}")
        self._completed(event, as_dict(result))

    def _release_failed(self, event: HistoryEvent) -> None:
        failure, started = event.workflow_execution_failed_event_attributes.failure, self.started
        self.add(
            event,
            "release failed",
            f"{started.get('repository')}:{started.get('version')}",
            started.get("publisher", ""),
            (failure.cause.message or failure.message)[:300],
        )

    def _properties_modified(self, event: HistoryEvent) -> None:
        for key, handle in (
            (Memo.DECISION, self._decision),
            (Memo.EVENT, self._environment_event),
            (Memo.ROLLOUT_STEP, self._rollout_record),
        ):
            record = memo_of(event, key)
            if isinstance(record, Undecodable):
                self.add(event, "record", self._subject(), "", f"{key} {record}")
            elif record:
                handle(event, as_dict(record))

    def _rollout_record(self, event: HistoryEvent, record: dict[str, Any]) -> None:
        """A RolloutWorkflow's step, analysis interval, decision or end (workflows/rollout.py's memo upserts)."""
        candidate = as_dict(self.started.get("candidate"))
        subject = f"{self.started.get('environment')} {candidate.get('version') or ''}".strip()
        if step := as_dict(record.get("step")):
            details = f"{step.get('kind')} -> {step.get('weight')}%: {step.get('outcome')} ({step.get('detail')})"
            self.add(event, "rollout step", subject, "", details[: MAX_SHOWN * 4])
        elif interval := as_dict(record.get("analysis")):
            values = ", ".join(f"{k}={v}" for k, v in as_dict(interval.get("values")).items())
            failed = f"; FAILED {', '.join(map(str, interval.get('failed') or []))}" if interval.get("failed") else ""
            self.add(event, "rollout analysis", subject, "", f"interval {interval.get('interval')}: {values}{failed}")
        elif decision := as_dict(record.get("decision")):
            proof = f"verified {decision.get('verified')}" if decision.get("verified") else "claimed"
            verdict = f"REFUSED: {decision.get('refused')}" if decision.get("refused") else "accepted"
            reason = f"; reason: {decision.get('reason')}" if decision.get("reason") else ""
            self.add(
                event,
                f"rollout {decision.get('action')}",
                subject,
                f"{decision.get('by')} ({proof})",
                f"{verdict}{reason}"[: MAX_SHOWN * 4],
            )
        elif ended := as_dict(record.get("ended")):
            self.add(event, "rollout ended", subject, "", f"{ended.get('phase')}: {ended.get('reason')}")

    def _cancel_requested(self, event: HistoryEvent) -> None:
        attrs = event.workflow_execution_cancel_requested_event_attributes
        sender = (
            f"workflow {attrs.external_workflow_execution.workflow_id}"
            if attrs.external_workflow_execution.workflow_id
            else event_sender(event, attrs.identity)
        )
        self.cancel_senders.append(sender)
        self.add(
            event,
            "cancel requested",
            self._subject(),
            "",
            f"{attrs.cause[:MAX_SHOWN] or 'no reason given'}; sent by {client_words(sender)}",
        )

    def _task_failed(self, event: HistoryEvent) -> None:
        """A reset writes a failed workflow task (cause RESET_WORKFLOW) into the new run, with its reason and
        identity; other task failures are the worker's, not an operator's."""
        attrs = event.workflow_task_failed_event_attributes
        if not WorkflowTaskFailedCause.Name(attrs.cause).endswith(RESET_CAUSE):
            return
        self.reset = True
        self.add(
            event,
            "reset",
            self._subject(),
            "",
            f"{attrs.failure.message[:MAX_SHOWN] or 'no reason given'} (from run {attrs.base_run_id} to "
            f"{attrs.new_run_id}); identity recorded: {attrs.identity[:MAX_SHOWN] or 'none'}",
        )

    def finish(self, earlier_run: bool) -> None:
        """What only the whole history tells: the messages no record named, and how an environment run began (a
        reset's task failure comes later)."""
        self._unpaired()
        if self.workflow_type != ENVIRONMENT_WORKFLOW or self.first is None:
            return
        attrs = self.first.workflow_execution_started_event_attributes
        origin = run_origin(attrs.continued_execution_run_id, self.reset, earlier_run)
        starter = client_words(event_sender(self.first, attrs.identity))
        if origin == "replaced":
            self.out.insert(
                0,
                AuditEntry(
                    at=event_stamp(self.first),
                    kind="run replaced",
                    subject=self._subject(),
                    details=f"a new run replaced the previous one: started by {starter}",
                    workflow_id=self.workflow_id,
                    url=self.url,
                ),
            )
        elif origin == "first":
            self.out.insert(
                0,
                AuditEntry(
                    at=event_stamp(self.first),
                    kind="environment started",
                    subject=self._subject(),
                    details=f"started by {starter}",
                    workflow_id=self.workflow_id,
                    url=self.url,
                ),
            )

    def _subject(self) -> str:
        if self.workflow_type == ENVIRONMENT_WORKFLOW:
            return self._environment()
        if self.started.get("environment"):
            return f"{self.started.get('environment')} {self.started.get('version') or ''}".strip()
        return self.workflow_id

    def _environment(self) -> str:
        spec = as_dict(as_dict(self.started.get("state")).get("spec"))
        return str(spec.get("name") or self.workflow_id.removeprefix(ENV_PREFIX))

    def _signalled(self, event: HistoryEvent) -> None:
        attrs = event.workflow_execution_signaled_event_attributes
        from_workflow = attrs.external_workflow_execution.workflow_id
        sender = f"workflow {from_workflow}" if from_workflow else event_sender(event, attrs.identity)
        message = _Message(
            event, "signal", attrs.signal_name, sender, decode(attrs.input), from_workflow=bool(from_workflow)
        )
        self.messages.append(message)
        if attrs.signal_name in self.signal_senders and not isinstance(message.payload, Undecodable):
            self.signal_senders[attrs.signal_name].append(message)

    def _signal(self, name: str) -> tuple[str, Any]:
        """(sender, payload) of the next signal of this name still waiting for its record ('' when none)."""
        queue = self.signal_senders.get(name)
        if not queue:
            return "", None
        message = queue.popleft()
        message.paired = True
        return message.sender, message.payload

    def _update(self, update_id: str) -> tuple[str, Any]:
        message = self.update_senders.get(update_id)
        if message is None:
            return "", None
        message.paired = True
        return message.sender, message.payload

    def _unpaired(self) -> None:
        """Every message a client sent that no record names (reconcile_now, plan, a name the workflow does not
        have, an undecodable payload, a decision the run never judged) is an entry of its own, with its sender.
        Ferry's workflows signal each other (pin outcomes, alert notifications); those stay out."""
        for m in self.messages:
            if m.paired or m.from_workflow:
                continue
            name = m.name[:MAX_SHOWN]
            self.add(
                m.event,
                f"{m.kind} {name}"[:40],
                self._subject(),
                claimed(m.payload),
                f"{m.kind} {name!r}{_undecodable(m.payload)}, no record of it in this run; sent by "
                f"{client_words(m.sender)}",
            )

    def _started(self, event: HistoryEvent) -> None:
        started = self.started
        if self.workflow_type == PROMOTION_WORKFLOW:
            self.add(
                event,
                "promotion requested",
                f"{started.get('environment')} {started.get('version')}",
                started.get("requested_by", ""),
                started.get("reason", ""),
            )
        elif self.workflow_type == ROLLBACK_WORKFLOW:
            self.add(
                event,
                "rollback requested",
                str(started.get("environment")),
                started.get("requested_by", ""),
                f"to {started.get('to_version') or 'last known-good'}: {started.get('reason', '')}",
            )

    def _completed(self, event: HistoryEvent, result: dict[str, Any]) -> None:
        started = self.started
        if self.workflow_type == RELEASE_WORKFLOW:
            again = " (already released, identical content)" if result.get("already_released") else ""
            self.add(
                event,
                "release published",
                f"{result.get('repository')}:{result.get('version')}",
                result.get("publisher", started.get("publisher", "")),
                f"revision {started.get('revision') or '-'} digest {result.get('digest')}{again}",
            )
        elif self.workflow_type == PROMOTION_WORKFLOW:
            self.add(
                event,
                f"promotion {result.get('outcome')}",
                f"{result.get('environment')} {result.get('version')}",
                ", ".join(result.get("approved_by") or []),
                f"{result.get('digest')}: {result.get('reason')}",
            )
        elif self.workflow_type == ROLLBACK_WORKFLOW:
            self.add(
                event,
                f"rollback {result.get('outcome')}",
                str(result.get("environment")),
                started.get("requested_by", ""),
                f"{result.get('from_version')} -> {result.get('to_version')} {result.get('digest')}: "
                f"{result.get('reason')}",
            )

    def _decision(self, event: HistoryEvent, decision: dict[str, Any]) -> None:
        verdict = (
            f"accepted{' (' + decision['reason'] + ')' if decision.get('reason') else ''}"
            if decision.get("accepted")
            else f"REFUSED: {decision.get('reason')}"
        )
        if decision.get("update_id"):
            sender, payload = self._update(str(decision["update_id"]))
        elif decision.get("via") == "signal":
            sender, payload = self._signal(str(decision.get("action")))
        else:
            sender, payload = "", None
        if decision.get("verified") and self.signed is not None:
            self.signed.append(
                SignedRecord(
                    workflow_id=self.workflow_id,
                    run_id=self.run_id,
                    started=self.started,
                    record=decision,
                    payload=payload,
                    at=event_stamp(event),
                )
            )
        proof = f"verified {decision.get('fingerprint')}" if decision.get("verified") else "claimed"
        self.add(
            event,
            f"{decision.get('action')} ({decision.get('via')})",
            f"{self.started.get('environment')} {self.started.get('version')}",
            f"{decision.get('by')} ({proof})",
            f"{verdict}; comment: {decision.get('comment') or '-'}; sent by {client_words(sender)}",
        )

    def _environment_event(self, event: HistoryEvent, env_event: dict[str, Any]) -> None:
        details = str(env_event.get("message", ""))
        kind = EventType(str(env_event.get("type", "")))
        if kind == EventType.DRIFT_CORRECTED:
            details += ": " + "; ".join(f"{o} {', '.join(f)}" for o, f in as_dict(env_event.get("objects")).items())
        signal = _SIGNAL_OF.get(kind)
        if env_event.get("update_id"):
            details += f"; sent by {client_words(self._update(str(env_event['update_id']))[0])}"
        elif kind == EventType.SUSPENDED and env_event.get("by") == CANCEL_REQUEST:
            details += f"; sent by {client_words(self._cancel_sender())}"
        elif signal:
            details += f"; sent by {client_words(self._signal(signal)[0])}"
        self.add(event, kind.words, self._environment(), env_event.get("by", ""), details)

    def _cancel_sender(self) -> str:
        """The sender of a suspend recorded as by 'cancel request'. In a history from before reserved names
        were relabelled a suspend signal could claim it; such a signal, first in line, is the one recorded."""
        queue = self.signal_senders[Signal.SUSPEND]
        if queue and claimed(queue[0].payload) == CANCEL_REQUEST:
            return f"{self._signal(Signal.SUSPEND)[0]} (a suspend signal claiming {CANCEL_REQUEST!r})"
        return self.cancel_senders.popleft() if self.cancel_senders else ""


@dataclass
class _Message:
    """One signal or accepted Update as history recorded it: the sender is Temporal's, never the payload's."""

    event: HistoryEvent
    kind: str  # signal | update
    name: str
    sender: str
    payload: Any
    from_workflow: bool = False
    paired: bool = False


_SIGNALLED = (Signal.APPROVE, Signal.REJECT, Signal.PIN, Signal.SUSPEND, Signal.RESUME)
_SIGNAL_OF = {
    EventType.PINNED: Signal.PIN,
    EventType.PIN_REFUSED: Signal.PIN,
    EventType.SUSPENDED: Signal.SUSPEND,
    EventType.RESUMED: Signal.RESUME,
}


def _undecodable(payload: Any) -> str:
    return f" {payload}" if isinstance(payload, Undecodable) else ""


def event_sender(event: HistoryEvent, identity: str) -> str:
    """The client identity the sender gave, and the principal the server authenticated, when it stamps one."""
    principal = event.principal
    return f"{identity} (principal {principal.type}:{principal.name})" if principal.name else identity


def client_words(identity: str) -> str:
    """The Temporal client identity in words; the Web UI and bare API calls send none."""
    if identity.startswith("workflow "):
        return identity
    return f"client {identity[:MAX_SHOWN]}" if identity else "unknown client (Temporal UI or API)"
